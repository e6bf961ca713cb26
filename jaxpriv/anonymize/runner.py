"""Anonymization runs over a dataset: shards, worker processes, resume, the summary.

A run over images (`readers.Sample`) or videos (`readers.Video`) writes into ``out_dir``:

* ``images/<key>``: the drop-in copy (`pipeline.process_sample`, `pipeline.process_video`);
* ``.shards/shard-NNNNN.npz``: per-shard records and per-input reports, written to a temporary
  name and renamed when complete. A rerun skips finished shards (resume after an interrupt) and
  refuses an ``out_dir`` started with other options or inputs, saying what differs. A run may
  be split over tasks (`tasks`), each writing its own shards; the last to finish goes on:
* ``tfds/``: the TFDS dataset (ArrayRecord) built from the shards once all are done. TFDS writes
  into an ``incomplete.*`` folder and renames it, so an unfinished dataset is never listed;
* ``inputs.jsonl``: one line per input — ``key``, ``status`` (``anonymized``, ``kept``: the
  detector found no one and ``if_none="keep"`` wrote it unchanged, or ``skipped``), the
  ``source`` of its regions (``annotations`` or ``detector``), ``regions`` found (persons
  annotated, faces detected, or face tracks of a video), the detector's ``confidence`` (its
  scores; a video's lowest and highest), the quarter ``turns`` at which faces were found, a
  video's ``frames``, ``frames_with_regions`` and the ``tracks`` of its first clip (per frame,
  ``[id, x0, y0, x1, y1]``), and for skipped inputs the ``error``;
* ``preview.png`` (with ``preview`` > 0, once the dataset is complete): a figure of up to
  ``preview`` inputs — where nothing was found, skipped, then a seeded sample of the anonymized
  ones — each as its original, its drop-in copy and its record with the masks tinted
  (`jaxpriv.anonymize.preview`);
* ``summary.json`` (written last, once, under the run's finish lock): record counts, the
  ``skipped`` inputs with their reasons, the inputs where ``nothing_found``, the
  ``ignored_files`` of the input folder (not images or videos), the absolute ``input_root``
  (None without one), the ``preview`` figure's path (None without one), and the options.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import tqdm

from jaxpriv import files
from jaxpriv.anonymize import detect, pipeline, preview, readers, tasks
from jaxpriv.anonymize.settings import ON_ERROR, Options
from jaxpriv.anonymize.tfds_writer import write_tfds
from jaxpriv.data import schema

Unit = readers.Sample | readers.Video  # what a shard holds: images, or whole videos
RECORD_ERRORS = (ValueError, OSError)  # corrupt images, bad annotations, unreadable files
_WORKER: dict = {}


def _init_worker(options: Options, out_dir: Path, threads: int, slots=None) -> None:
    """Sets up a worker process; ``slots``: a shared counter that numbers the pool's workers
    (this process is worker 0), whose number picks its GPU."""
    torch.set_num_threads(threads)
    slot = 0
    if slots is not None:
        with slots.get_lock():
            slots.value += 1
            slot = slots.value
    models = pipeline.Models(options, slot)
    _WORKER.update(options=options, out_dir=out_dir, detector=None, people=None, models=models)


def _detect_faces(image: np.ndarray) -> list[detect.Detection]:
    """The worker's face detector, built on first use (most annotated runs never need it)."""
    if _WORKER["detector"] is None:
        _WORKER["detector"] = detect.make_detector(_WORKER["options"].detector)
    return _WORKER["detector"](image)


def _find_people(image: np.ndarray) -> list:
    """The worker's person model, built on first use (annotated runs never need it)."""
    if _WORKER["people"] is None:
        from jaxpriv.anonymize.person_model import PersonModel

        _WORKER["people"] = PersonModel()
    return _WORKER["people"](image)


def shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / ".shards" / f"shard-{index:05d}.npz"


def _process(unit: Unit, on_error: str) -> tuple[list[dict], dict]:
    """(records, report) of one input; errors become a ``skipped`` report unless they must
    stop the run (``on_error="fail"``, or no one found with ``if_none="fail"``)."""
    options = _WORKER["options"]
    process = pipeline.process_video if isinstance(unit, readers.Video) else pipeline.process_sample
    try:
        records, found = process(
            unit, options, _detect_faces, _WORKER["out_dir"], _WORKER["models"], _find_people
        )
    except pipeline.NothingFoundError as error:
        if options.if_none == "fail":
            raise
        return [], {
            "key": unit.key,
            "status": "skipped",
            "nothing_found": True,
            "error": str(error),
        }
    except RECORD_ERRORS as error:
        if on_error == "fail":
            raise type(error)(f"{unit.key}: {error}") from error
        return [], {
            "key": unit.key,
            "status": "skipped",
            "error": f"{type(error).__name__}: {error}",
        }
    nothing = pipeline.nothing_found(found)
    status = "kept" if nothing else "anonymized"
    return records, {"key": unit.key, "status": status, "nothing_found": nothing, **found}


def _run_shard(job: tuple[int, list[Unit], str]) -> int:
    """Processes one shard and writes it atomically; returns its index."""
    index, units, on_error = job
    records, reports = [], []
    for unit in units:
        unit_records, report = _process(unit, on_error)
        records += unit_records
        reports.append(report)
    stacked = {name: np.stack([r[name] for r in records]) for name in records[0]} if records else {}
    with files.atomic_path(shard_path(_WORKER["out_dir"], index)) as temporary:
        np.savez(temporary, inputs=json.dumps(reports), **stacked)
    return index


def _describe_difference(earlier: dict, run: dict, finished: bool) -> str:
    """What differs between an earlier run's claim and this one's, in words."""
    changes = [
        f"{name}: {earlier['options'].get(name)!r} then, {value!r} now"
        for name, value in run["options"].items()
        if earlier["options"].get(name) != value
    ]
    if earlier.get("shard_size") != run["shard_size"]:
        changes.append(f"shard size: {earlier.get('shard_size')} then, {run['shard_size']} now")
    old, new = set(earlier["inputs"]), set(run["inputs"])
    for word, keys in (("added", sorted(new - old)), ("removed", sorted(old - new))):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            changes.append(f"inputs {word}: {shown}")
    state = "finished" if finished else "unfinished"
    return f"it holds a {state} run with other settings ({'; '.join(changes)})"


def _claim(out_dir: Path, run: dict, *, write: bool = True) -> None:
    """Records the run (options, inputs, sharding) in ``out_dir``, or checks that the one there
    is this one; refuses a different earlier run. Tasks of one partitioned run all claim it:
    the same content, written atomically. ``write=False``: the run must be there already."""
    path = out_dir / ".shards" / "run.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier != run:
            finished = (out_dir / "summary.json").exists()
            raise ValueError(
                f"{out_dir}: {_describe_difference(earlier, run, finished)}; use another output "
                "folder or delete it"
            )
        return
    if not write:
        raise ValueError(f"{out_dir}: no run to finish there (no .shards/run.json)")
    with files.atomic_path(path) as temporary:
        temporary.write_text(json.dumps(run, indent=1))


def check_region_source(units: Sequence[Unit], options: Options) -> None:
    """Refuses body anonymization from annotations (``people="annotations"``) of inputs that
    have none (nothing would be hidden)."""
    unannotated = [u.key for u in units if isinstance(u, readers.Video) and u.persons is None]
    unannotated += [u.key for u in units if isinstance(u, readers.Sample) and not u.annotated]
    if options.region == "body" and options.people == "annotations" and unannotated:
        shown = ", ".join(unannotated[:5])
        raise ValueError(
            f"--people annotations: {len(unannotated)} of the {len(units)} inputs have no "
            f"person annotations ({shown}); --people auto finds their people with the person "
            "model"
        )


def check_out_dir(out_dir: Path, input_root: str | os.PathLike | None) -> None:
    """Refuses an output folder inside the input folder (later runs would read it as input)."""
    if input_root is not None and out_dir.resolve().is_relative_to(Path(input_root).resolve()):
        raise ValueError(
            f"--out {out_dir} lies inside --input {input_root}: a later run would read the "
            "anonymized copy as input; choose an output folder outside it"
        )


def count_test_split(keys: Sequence[str], test_fraction: float) -> int:
    """How many of ``keys`` fall in the test split (by hash, see `pipeline.split_of`)."""
    return sum(pipeline.split_of(key, test_fraction) == "test" for key in keys)


def run(
    units: Sequence[Unit],
    out_dir: str | os.PathLike,
    options: Options | None = None,
    *,
    workers: int = 2,
    shard_size: int | None = None,
    on_error: str = "skip",
    progress: bool = True,
    input_root: str | os.PathLike | None = None,
    ignored: Sequence[str] = (),
    task: tasks.Task | None = None,
    finish_only: bool = False,
    preview: int = 16,
) -> dict | None:
    """Anonymizes images or videos into ``out_dir`` (see the module docstring); returns the
    summary, or None while shards of other tasks are missing. ``shard_size``: inputs per shard
    (default 64 images or 1 video). ``input_root``: the input folder, which must not contain
    ``out_dir``; ``ignored``: its files that were not read (listed in the summary).
    ``options``: default `Options()`. ``task``: this process's part of a run split over
    several tasks (`tasks`); the one that finds every shard written finishes the run.
    ``finish_only``: process nothing, finish a run whose shards are all written (else a
    ValueError names the missing ones, and nothing is written). ``preview``: inputs shown in
    ``preview.png`` (0: no preview); not an option of the run, so it may differ on a resume."""
    options = options or Options()
    options.check()
    if options.detector == "auto":  # record the backend, so a resume cannot switch it
        options = dataclasses.replace(options, detector=detect.auto_backend())
    if options.device == "auto":  # the same: fp16 on GPU and fp32 on CPU differ
        options = dataclasses.replace(
            options, device="cuda" if torch.cuda.is_available() else "cpu"
        )
    if options.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to this process")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if preview < 0:
        raise ValueError(f"preview must not be negative, got {preview}")
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if not units:
        raise ValueError("nothing to anonymize: no input images or videos")
    out_dir = Path(out_dir)
    check_out_dir(out_dir, input_root)
    check_region_source(units, options)
    units = sorted(units, key=lambda unit: unit.key)
    keys = [unit.key for unit in units]
    if options.test_fraction > 0 and not count_test_split(keys, options.test_fraction):
        tqdm.tqdm.write(
            f"warning: none of the {len(keys)} inputs falls in the test split (test_fraction "
            f"{options.test_fraction}, by key hash): the dataset will have a train split only"
        )
    if shard_size is None:
        shard_size = 1 if isinstance(units[0], readers.Video) else 64
    run = {"options": dataclasses.asdict(options), "inputs": keys, "shard_size": shard_size}
    _claim(out_dir, run, write=not finish_only)
    shards = [units[i : i + shard_size] for i in range(0, len(units), shard_size)]
    task = task or tasks.Task()
    if not finish_only:
        _run_task(shards, task, out_dir, options, workers, on_error, progress)
    missing = [i for i in range(len(shards)) if not shard_path(out_dir, i).exists()]
    if missing and finish_only:
        raise ValueError(_missing_shards(out_dir, missing, shards, task))
    if missing:
        return None
    with tasks.finishing(out_dir / ".shards"):
        if (out_dir / "summary.json").exists():  # another task finished the run
            tqdm.tqdm.write(f"{out_dir}: the run was finished already; nothing written")
            return json.loads((out_dir / "summary.json").read_text())
        return _finish(out_dir, options, shards, list(ignored), input_root, preview)


def _run_task(
    shards: list[list[Unit]],
    task: tasks.Task,
    out_dir: Path,
    options: Options,
    workers: int,
    on_error: str,
    progress: bool,
) -> None:
    """Processes the shards of ``task`` not written yet."""
    mine = [i for i in range(len(shards)) if task.owns(i)]
    todo = [i for i in mine if not shard_path(out_dir, i).exists()]
    jobs = [(i, shards[i], on_error) for i in todo]
    total = sum(len(shards[i]) for i in mine)
    done = total - sum(len(shards[i]) for i in todo)
    unit_name = "video" if isinstance(shards[0][0], readers.Video) else "img"
    description = "anonymize" if task.count == 1 else f"task {task.index}/{task.count}"
    with tqdm.tqdm(
        total=total, initial=done, unit=unit_name, desc=description, disable=not progress
    ) as bar:
        for index in _run_shards(jobs, workers, options, out_dir):
            bar.update(len(shards[index]))


def _missing_shards(out_dir: Path, missing: list[int], shards: list, task: tasks.Task) -> str:
    """Why a run cannot be finished yet, naming the shards not written and their first inputs."""
    shown = ", ".join(f"{i} ({shards[i][0].key}…)" for i in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    owners = ""
    if task.count > 1:
        owners = (
            f" (of tasks {', '.join(str(t) for t in sorted({task.owner(i) for i in missing}))})"
        )
    return (
        f"cannot finish {out_dir}: {len(missing)} of {len(shards)} shards are not written: "
        f"{shown}{more}{owners}; run those tasks (a rerun resumes) and finish again"
    )


def _run_shards(jobs: list, workers: int, options: Options, out_dir: Path) -> Iterator[int]:
    """Runs the jobs on ``workers`` processes, this one included, yielding finished shards.

    This process works too (it has its imports already, while spawned workers need seconds to
    import torch) and keeps each of the ``workers - 1`` others fed with up to two jobs.
    """
    threads = torch.get_num_threads()
    _init_worker(options, out_dir, 1 if workers > 1 else threads)
    _WORKER["models"].prepare()
    pending = collections.deque(jobs)
    try:
        if workers == 1 or len(jobs) == 1:
            while pending:
                yield _run_shard(pending.popleft())
            return
        context = multiprocessing.get_context("spawn")
        slots = context.Value("i", 0)
        with context.Pool(workers - 1, _init_worker, (options, out_dir, 1, slots)) as pool:
            running: collections.deque = collections.deque()
            while pending or running:
                while pending and len(running) < 2 * (workers - 1):
                    running.append(pool.apply_async(_run_shard, (pending.popleft(),)))
                if pending:
                    yield _run_shard(pending.popleft())
                else:
                    running[0].wait()
                while running and running[0].ready():
                    yield running.popleft().get()  # re-raises a worker's error
    finally:
        torch.set_num_threads(threads)
        if _WORKER["people"] is not None:  # this process's; spawned workers exit without it
            _WORKER["people"].close()
            _WORKER["people"] = None


def _finish(
    out_dir: Path,
    options: Options,
    shards: list[list[Unit]],
    ignored: list,
    input_root: str | os.PathLike | None,
    preview_count: int,
) -> dict:
    """Writes the dataset, inputs.jsonl, the preview and the summary of a run whose shards
    are all written; returns the summary."""
    reports, counts, labels, pixels, shape = [], {"train": 0, "test": 0}, set(), None, None
    for index in range(len(shards)):
        with np.load(shard_path(out_dir, index)) as shard:
            reports += json.loads(str(shard["inputs"]))
            if "key" not in shard.files:  # every input of the shard was skipped
                continue
            pixels = schema.VIDEO if schema.VIDEO in shard.files else schema.IMAGE
            shape = shard[pixels].shape[1:]
            labels.update(shard["label"].tolist())
            for split in counts:
                counts[split] += int(np.sum(shard["split"] == split))
    skipped = [{"key": r["key"], "error": r["error"]} for r in reports if r["status"] == "skipped"]
    if not counts["train"]:
        raise ValueError(
            f"nothing could be anonymized into a train split ({len(skipped)} inputs "
            f"skipped, see {out_dir / '.shards'}); check the input and --on-error"
        )
    splits = tuple(split for split, count in counts.items() if count)
    dataset_dir = write_tfds(out_dir, pixels, shape, sorted(labels), len(shards), splits)
    with files.atomic_path(out_dir / "inputs.jsonl") as temporary:
        temporary.write_text("".join(json.dumps(report) + "\n" for report in reports))
    statuses = collections.Counter(r["status"] for r in reports)
    sources = {
        unit.key: preview.Source(unit, shard_path(out_dir, index))
        for index, units in enumerate(shards)
        for unit in units
    }
    try:
        preview_path = preview.write_preview(
            out_dir / "preview.png", reports, sources, out_dir, options, preview_count
        )
    except Exception as error:  # noqa: BLE001 - a figure must not undo a finished dataset
        tqdm.tqdm.write(f"warning: no preview.png ({type(error).__name__}: {error})")
        (out_dir / "preview.png").unlink(missing_ok=True)  # an earlier run's would mislead
        preview_path = None
    summary = {
        "records": counts,
        "inputs": {status: statuses[status] for status in ("anonymized", "kept", "skipped")},
        "skipped": skipped,
        "nothing_found": [r["key"] for r in reports if r.get("nothing_found")],
        "ignored_files": ignored,
        "dataset": str(dataset_dir),
        "images": str(out_dir / "images"),
        "input_root": str(Path(input_root).resolve()) if input_root is not None else None,
        "preview": str(preview_path) if preview_path is not None else None,
        "options": dataclasses.asdict(options),
    }
    with files.atomic_path(out_dir / "summary.json") as temporary:
        temporary.write_text(json.dumps(summary, indent=1))
    return summary
