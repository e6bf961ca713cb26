"""An anonymization run split over tasks: the same bytes as one process, resumable, finished once.

Tasks are separate processes running the CLI, as SLURM array tasks would; a driver patches the
runner inside one of them to die by SIGKILL in the middle of writing a shard, or to linger in
its finishing step while another task tries to finish too.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxpriv.anonymize import readers, runner, tasks
from jaxpriv.anonymize.settings import Options

CLIPS = 12
COMMAND = ["anonymize", "--format", "synthetic", "--num-clips", str(CLIPS), "--frames", "4"]
COMMAND += ["--method", "pixelate", "--workers", "1", "--no-progress"]
# Runs the CLI with argv from sys.argv; KILL_AT: SIGKILL this process while it renames that
# shard into place (its temporary file written); LINGER: sleep in the finishing step.
DRIVER = """
import os, signal, sys, time
from jaxpriv import cli
from jaxpriv.anonymize import runner
kill_at, linger = os.environ.get("KILL_AT"), float(os.environ.get("LINGER", 0))
replace, finish = os.replace, runner._finish
def dying_replace(source, target):
    if kill_at and str(target).endswith(f"shard-{int(kill_at):05d}.npz"):
        os.kill(os.getpid(), signal.SIGKILL)
    replace(source, target)
def lingering_finish(*args):
    print("FINISHING", flush=True)
    time.sleep(linger)
    return finish(*args)
os.replace = dying_replace
runner._finish = lingering_finish
cli.main(sys.argv[1:])
"""


def task(out: Path, *arguments: str, **environ: str) -> subprocess.Popen:
    command = [sys.executable, "-c", DRIVER, *COMMAND, "--out", str(out), *arguments]
    env = {**os.environ, **environ}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    return output


def same_tree(one: Path, other: Path) -> None:
    """Every file of the two runs byte-identical, but the summary's own paths and the lock."""
    names = {p.relative_to(one) for p in one.rglob("*") if p.is_file()}
    others = {p.relative_to(other) for p in other.rglob("*") if p.is_file()}
    lock = Path(".shards/finish.lock")
    assert names - {lock} == others - {lock}
    for name in names - {lock, Path("summary.json")}:
        assert filecmp.cmp(one / name, other / name, shallow=False), name
    summaries = [json.loads((root / "summary.json").read_text()) for root in (one, other)]
    for summary, root in zip(summaries, (one, other)):
        assert summary.pop("dataset").startswith(str(root)) and summary.pop("images") == str(
            root / "images"
        )
        assert summary.pop("preview") == str(root / "preview.png")
    assert summaries[0] == summaries[1]


def test_three_tasks_one_killed_and_rerun_write_what_one_process_writes(tmp_path):
    single = tmp_path / "single"
    finished(task(single))
    split = tmp_path / "split"
    three = ["--num-tasks", "3", "--task-index"]
    killed = task(split, *three, "1", KILL_AT="4")  # task 1 owns shards 1, 4, 7, 10
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    assert (split / ".shards" / "shard-00001.npz").exists()
    assert not (split / ".shards" / "shard-00004.npz").exists()
    assert list((split / ".shards").glob(".shard-00004.npz.*.partial.npz"))  # left mid-write
    for index in ("0", "2"):
        assert "its shards are written" in finished(task(split, *three, index))
    assert not (split / "summary.json").exists() and not (split / "tfds").exists()
    rerun = finished(task(split, *three, "1"))  # resumes, and being last, finishes the run
    assert f"anonymized {CLIPS} of {CLIPS} inputs" in rerun
    for partial in (split / ".shards").glob(".*.partial.npz"):
        partial.unlink()  # the killed task's half-written shard, never read
    same_tree(single, split)


def test_two_tasks_finishing_together_write_the_dataset_once(tmp_path):
    out = tmp_path / "out"
    two = ["--num-tasks", "2", "--task-index"]
    finished(task(out, *two, "0", LINGER="0"))
    # Task 1 finishes the run slowly; a --finalize arrives meanwhile and waits for its lock.
    last = task(out, *two, "1", LINGER="3")
    assert last.stdout.readline().strip() == "FINISHING"
    extra = task(out, "--finalize", LINGER="0")
    outputs = finished(last), finished(extra)
    assert "FINISHING" not in outputs[1] and "the run was finished already" in outputs[1]
    assert f"anonymized {CLIPS} of {CLIPS} inputs" in outputs[0]
    assert (out / "summary.json").exists()


def test_finishing_with_shards_missing_names_them_and_writes_nothing(tmp_path):
    units = readers.read_synthetic(6, seed=0, frames=4, size=32)
    options = Options(method="pixelate", size=32, clip_frames=4, frame_stride=1)
    run = dict(workers=1, shard_size=1, progress=False)
    out = tmp_path / "out"
    assert runner.run(units, out, options, task=tasks.Task(0, 2), **run) is None
    with pytest.raises(ValueError) as error:
        runner.run(units, out, options, task=tasks.Task(0, 2), finish_only=True, **run)
    message = str(error.value)
    assert "3 of 6 shards are not written: 1 (" in message and "(of tasks 1)" in message
    for path in ("summary.json", "inputs.jsonl", "tfds"):
        assert not (out / path).exists()
    with pytest.raises(ValueError, match="no run to finish there"):
        runner.run(units, tmp_path / "empty", options, finish_only=True, **run)
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize(
    "given, environ, expected",
    [
        ((None, None), {}, tasks.Task(0, 1)),
        ((2, 4), {}, tasks.Task(2, 4)),
        ((None, None), {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5",
                        "SLURM_ARRAY_TASK_COUNT": "4"}, tasks.Task(2, 4)),
        ((None, 8), {"JOB_COMPLETION_INDEX": "3"}, tasks.Task(3, 8)),
        ((1, 2), {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "9"}, tasks.Task(1, 2)),
    ],
)  # fmt: skip
def test_the_task_comes_from_the_command_line_or_the_scheduler(given, environ, expected):
    assert tasks.from_environment(*given, environ=environ) == expected


def test_tasks_own_every_shard_once_and_bad_tasks_are_refused():
    owners = [[t for t in range(3) if tasks.Task(t, 3).owns(shard)] for shard in range(10)]
    assert owners == [[shard % 3] for shard in range(10)]
    with pytest.raises(ValueError, match="task index 3 is not in 0..2"):
        tasks.Task(3, 3)
    with pytest.raises(ValueError, match="at least 1"):
        tasks.Task(0, 0)
    with pytest.raises(ValueError, match="give --num-tasks"):
        tasks.from_environment(environ={"JOB_COMPLETION_INDEX": "1"})
    with pytest.raises(ValueError, match="without --task-index"):
        tasks.from_environment(None, 4, environ={})


def test_workers_take_the_visible_gpus_in_turn_and_the_device_is_recorded(tmp_path, monkeypatch):
    from jaxpriv.anonymize import pipeline

    monkeypatch.setattr(pipeline.torch.cuda, "device_count", lambda: 4)
    cuda = Options(device="cuda")
    assert [pipeline.Models(cuda, slot).device for slot in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"
    ]  # fmt: skip
    assert pipeline.Models(Options(device="cpu"), 3).device == "cpu"
    units = readers.read_synthetic(2, seed=0, frames=4, size=32)
    options = Options(method="pixelate", size=32, clip_frames=4, frame_stride=1)
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: no CUDA device is visible"):
        runner.run(units, tmp_path / "gpu", dataclasses.replace(options, device="cuda"))
    runner.run(units, tmp_path / "out", options, workers=1, progress=False)
    claimed = json.loads((tmp_path / "out" / ".shards" / "run.json").read_text())
    assert claimed["options"]["device"] == "cpu"  # "auto", resolved once for every task
