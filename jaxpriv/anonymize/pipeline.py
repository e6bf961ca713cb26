"""Anonymization runs: samples → regions → method → drop-in copy and TFDS dataset.

A run over ``samples`` writes into ``out_dir``:

* ``images/<key>``: the drop-in copy — the same relative paths and file names as the input,
  with anonymized pixels, so any detector trains on it unchanged;
* ``.shards/shard-NNNNN.npz``: per-shard records (pixels resized to ``size×size``, label, the
  ``sensitive`` mask and the anonymized-region mask), each written to a temporary name and
  renamed when complete. A rerun skips finished shards (resume after an interrupt) and refuses
  an ``out_dir`` started with other options;
* ``tfds/``: the TFDS dataset (ArrayRecord) built from the shards once all are done. TFDS writes
  into an ``incomplete.*`` folder and renames it, so an unfinished dataset is never listed;
* ``summary.json``: counts, and the files skipped with ``on_error="skip"`` and why.

Sensitivity policy (per pixel of each record): ``real`` — every pixel still derived from the
real image is sensitive; only pixels whose content depends on no real pixel (``maskout``,
without histogram matching) are public — blurred, pixelated and inpainted pixels (inpainting
reads the real surroundings) stay sensitive; ``none`` — nothing is sensitive (the
anonymized data is treated as public); ``all`` — everything is sensitive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import tqdm

from jaxpriv.anonymize import detect, histogram, readers, regions, traditional
from jaxpriv.anonymize.tfds_writer import write_tfds

SENSITIVITY_POLICIES = ("real", "none", "all")
HISTOGRAM_MODES = ("none", "equalize", "match")


@dataclasses.dataclass(frozen=True)
class Options:
    """What a run does; saved with the shards so that a resume cannot mix settings."""

    region: str = "face"  # "face" | "body"
    method: str = "blur"  # a name in traditional.METHODS
    detector: str = detect.DEFAULT_DETECTOR  # faces of samples without keypoints
    dilate: int = 0  # body: grow person masks by this many px
    expand_box: float = 0.0  # body: also cover the box enlarged by this fraction
    histogram: str = "none"  # "none" | "equalize" | "match" (fit new content to its surroundings)
    sensitivity: str = "real"  # see the module docstring
    size: int = 64  # TFDS records are resized (shorter side) and centre-cropped to size×size
    test_fraction: float = 0.1  # share of keys (by hash) in the test split
    seed: int = 0

    def check(self) -> None:
        for name, value, choices in [
            ("region", self.region, regions.REGIONS),
            ("method", self.method, tuple(traditional.METHODS)),
            ("histogram", self.histogram, HISTOGRAM_MODES),
            ("sensitivity", self.sensitivity, SENSITIVITY_POLICIES),
        ]:
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")


def key_seed(seed: int, key: str) -> int:
    """A per-sample seed: the same key gets the same randomness in every run and worker."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def label_of(key: str) -> str:
    """The class of a sample: its first folder (ImageFolder / UCF-101 layout), else "none"."""
    parts = Path(key.split("#")[0]).parts
    return parts[0] if len(parts) > 1 else "none"


def split_of(key: str, test_fraction: float) -> str:
    return "test" if key_seed(0, key) / 2**32 < test_fraction else "train"


def find_region(
    sample: readers.Sample, image: np.ndarray, options: Options, detector
) -> np.ndarray:
    """Bool HxW mask of what to anonymize: annotations, or the face detector for faces."""
    annotated = [p for p in sample.persons if p.keypoints is not None or options.region == "body"]
    if options.region == "face" and not annotated:
        return detect.detections_to_mask(detector(image), image.shape[:2])
    extra = {"dilate": options.dilate, "expand_box": options.expand_box}
    return regions.region_mask(
        annotated, image.shape, options.region, **(extra if options.region == "body" else {})
    )


def is_public_content(options: Options) -> bool:
    """Whether the anonymized region depends on no real pixel (then it is public under MaskDP).

    Histogram matching copies the statistics of the real surroundings into the region, so it
    makes any method's region data-dependent; equalization only uses the region itself.
    """
    return traditional.METHODS[options.method].data_independent and options.histogram != "match"


def anonymize_image(image: np.ndarray, region: np.ndarray, options: Options, seed: int):
    """(anonymized uint8 HxWx3, public bool HxW): the method, then the histogram fit."""
    torch.manual_seed(seed)
    images, masks = torch.from_numpy(image)[None], torch.from_numpy(region)[None]
    out = traditional.anonymize(images, masks, options.method)
    if options.histogram == "equalize":
        out = histogram.equalize(out, masks)
    elif options.histogram == "match":
        out = histogram.match_histograms(out, masks)
    public = region if is_public_content(options) else np.zeros_like(region)
    return out[0].numpy(), public


def sensitivity_mask(public: np.ndarray, policy: str) -> np.ndarray:
    if policy == "real":
        return ~public
    return np.full(public.shape, policy == "all")


def resize_square(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Resizes the shorter side to ``size`` and centre-crops to ``size×size``."""
    height, width = array.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(
        array,
        (max(size, round(width * scale)), max(size, round(height * scale))),
        interpolation=interpolation,
    )
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top : top + size, left : left + size]


def resize_public(public: np.ndarray, size: int) -> np.ndarray:
    """The public mask at record size: a resized pixel is public only if every source pixel that
    it mixes (area averaging or interpolation, as for the image) is public."""
    mixed = resize_square(public.astype(np.float32), size, cv2.INTER_AREA)
    return mixed > 1.0 - 1e-4


def write_image_atomically(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial{path.suffix}")
    if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    os.replace(temporary, path)


def drop_in_path(out_dir: Path, sample: readers.Sample) -> Path:
    """Images keep their relative path; video frames wait in ``.frames/`` to be re-encoded."""
    if sample.frame_index is None:
        return out_dir / "images" / sample.key
    video, frame = sample.key.split("#")
    return out_dir / ".frames" / video / f"{frame}.png"


def encode_videos(out_dir: Path, sources: dict[str, str]) -> None:
    """Re-encodes the anonymized frames of each video into ``images/<relpath>`` (MPEG-4 Part 2,
    the source's frame rate), written under a temporary name and renamed when complete."""
    for relpath, source in sorted(sources.items()):
        target = out_dir / "images" / relpath
        if target.exists():
            continue
        frames = sorted((out_dir / ".frames" / relpath).glob("*.png"))
        with av.open(source) as container:
            rate = container.streams.video[0].average_rate or 25
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.partial{target.suffix}")
        with av.open(str(temporary), "w") as output:
            first = readers.load_image(frames[0])
            stream = output.add_stream("mpeg4", rate=rate)
            stream.height, stream.width = first.shape[:2]
            stream.pix_fmt, stream.options = "yuv420p", {"qscale": "2"}
            for path in frames:
                frame = av.VideoFrame.from_ndarray(readers.load_image(path), format="rgb24")
                output.mux(stream.encode(frame))
            output.mux(stream.encode())
        os.replace(temporary, target)


def process_sample(sample: readers.Sample, options: Options, detector, out_dir: Path) -> dict:
    """Anonymizes one sample, writes its drop-in file, returns its TFDS record."""
    image = sample.image
    region = find_region(sample, image, options, detector)
    anonymized, public = anonymize_image(image, region, options, key_seed(options.seed, sample.key))
    write_image_atomically(drop_in_path(out_dir, sample), anonymized)
    return {
        "key": sample.key,
        "image": resize_square(anonymized, options.size, cv2.INTER_AREA),
        "sensitive": sensitivity_mask(
            resize_public(public, options.size), options.sensitivity
        ).astype(np.uint8),
        "region": resize_square(region.astype(np.uint8), options.size, cv2.INTER_NEAREST),
        "label": label_of(sample.key),
        "path": str(sample.path),
        "split": split_of(sample.key, options.test_fraction),
    }


# --- Shards: the unit of parallel work, resume and atomic writes -------------------------------

_WORKER: dict = {}
RECORD_ERRORS = (ValueError, OSError)  # corrupt images, bad annotations, unreadable files


def _init_worker(options: Options, out_dir: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(options=options, out_dir=out_dir, detector=None)


def _detect_faces(image: np.ndarray) -> list[detect.Detection]:
    """The worker's face detector, built on first use (most annotated runs never need it)."""
    if _WORKER["detector"] is None:
        _WORKER["detector"] = detect.make_detector(_WORKER["options"].detector)
    return _WORKER["detector"](image)


def shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / ".shards" / f"shard-{index:05d}.npz"


def _run_shard(job: tuple[int, list[readers.Sample], str]) -> tuple[int, int, list[dict]]:
    """Processes one shard and writes it atomically; returns (index, records, skipped)."""
    index, samples, on_error = job
    options, out_dir = _WORKER["options"], _WORKER["out_dir"]
    records, skipped = [], []
    for sample in samples:
        try:
            records.append(process_sample(sample, options, _detect_faces, out_dir))
        except RECORD_ERRORS as error:
            if on_error == "fail":
                raise type(error)(f"{sample.key}: {error}") from error
            skipped.append({"key": sample.key, "error": f"{type(error).__name__}: {error}"})
    path = shard_path(out_dir, index)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as f:
        np.savez(f, skipped=json.dumps(skipped), **_stack(records, options.size))
    os.replace(temporary, path)
    return index, len(records), skipped


def _stack(records: list[dict], size: int) -> dict[str, np.ndarray]:
    if not records:
        return {
            "key": np.zeros(0, str),
            "label": np.zeros(0, str),
            "path": np.zeros(0, str),
            "split": np.zeros(0, str),
            "image": np.zeros((0, size, size, 3), np.uint8),
            "sensitive": np.zeros((0, size, size), np.uint8),
            "region": np.zeros((0, size, size), np.uint8),
        }
    return {name: np.stack([r[name] for r in records]) for name in records[0]}


def _claim(out_dir: Path, options: Options, keys: Sequence[str]) -> None:
    """Records the run's options and inputs in ``out_dir``; refuses a different earlier run."""
    run = {
        "options": dataclasses.asdict(options),
        "inputs": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }
    path = out_dir / ".shards" / "run.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier != run:
            raise ValueError(
                f"{out_dir} holds an unfinished run with other options or inputs "
                f"({earlier['options']}); use another output folder or delete it"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1))


def run(
    samples: Sequence[readers.Sample],
    out_dir: str | os.PathLike,
    options: Options = Options(),
    *,
    workers: int = 2,
    shard_size: int = 64,
    on_error: str = "skip",
    progress: bool = True,
) -> dict:
    """Anonymizes ``samples`` into ``out_dir`` (see the module docstring); returns the summary."""
    options.check()
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    out_dir = Path(out_dir)
    samples = sorted(samples, key=lambda s: s.key)
    _claim(out_dir, options, [s.key for s in samples])
    shards = [samples[i : i + shard_size] for i in range(0, len(samples), shard_size)]
    todo = [i for i in range(len(shards)) if not shard_path(out_dir, i).exists()]
    jobs = [(i, shards[i], on_error) for i in todo]
    done = len(samples) - sum(len(shards[i]) for i in todo)
    with tqdm.tqdm(
        total=len(samples), initial=done, unit="img", desc="anonymize", disable=not progress
    ) as bar:
        if workers > 1 and len(jobs) > 1:
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, _init_worker, (options, out_dir, 1)) as pool:
                for index, _, _ in pool.imap_unordered(_run_shard, jobs):
                    bar.update(len(shards[index]))
        else:
            _init_worker(options, out_dir, torch.get_num_threads())
            for job in jobs:
                bar.update(len(shards[_run_shard(job)[0]]))
    return _finish(out_dir, options, len(shards))


def _finish(out_dir: Path, options: Options, num_shards: int) -> dict:
    skipped, counts = [], {"train": 0, "test": 0}
    labels, videos = set(), {}
    for index in range(num_shards):
        with np.load(shard_path(out_dir, index)) as shard:
            skipped += json.loads(str(shard["skipped"]))
            labels.update(shard["label"].tolist())
            for key, path in zip(shard["key"].tolist(), shard["path"].tolist()):
                if "#" in key:
                    videos[key.split("#")[0]] = path
            for split in counts:
                counts[split] += int(np.sum(shard["split"] == split))
    if not counts["train"]:
        raise ValueError(
            f"no image could be anonymized into a train split ({len(skipped)} "
            f"skipped, see {out_dir / '.shards'}); check the input and --on-error"
        )
    splits = tuple(split for split, count in counts.items() if count)
    encode_videos(out_dir, videos)
    dataset_dir = write_tfds(out_dir, options.size, sorted(labels), num_shards, splits)
    summary = {
        "records": counts,
        "skipped": skipped,
        "dataset": str(dataset_dir),
        "images": str(out_dir / "images"),
        "options": dataclasses.asdict(options),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
