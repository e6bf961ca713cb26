"""One anonymization run split over many tasks: which shards a task owns, and finishing once.

Each of ``count`` tasks (processes on one machine, SLURM array tasks, Kubernetes indexed-job
pods) runs the same command on the same output folder and processes the shards ``i`` with
``i % count == index``; shards are written atomically, so a task resumes on its own. The task
that finds every shard written finishes the run (`runner`): it takes an exclusive lock on
``.shards/finish.lock`` (``flock``: released by the kernel if the process dies; the output
folder must be on a file system whose locks work across machines, as NFSv4 and Lustre mounted
with ``flock`` are) and writes the dataset unless another task already has.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Task:
    """Task ``index`` of ``count``: it owns the shards ``i`` with ``i % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"the number of tasks must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"task index {self.index} is not in 0..{self.count - 1}")

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    def owner(self, shard: int) -> int:
        """The index of the task that owns ``shard``."""
        return shard % self.count


def from_environment(
    index: int | None = None, count: int | None = None, environ: Mapping[str, str] = os.environ
) -> Task:
    """The task given (``--task-index``, ``--num-tasks``), else the one the scheduler names:
    a SLURM array task (``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` of
    ``SLURM_ARRAY_TASK_COUNT``) or a Kubernetes indexed job's pod (``JOB_COMPLETION_INDEX``;
    the count must then be given), else the only task."""
    if index is None and "SLURM_ARRAY_TASK_ID" in environ:
        index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
        count = count or int(environ["SLURM_ARRAY_TASK_COUNT"])
    elif index is None and "JOB_COMPLETION_INDEX" in environ:
        if count is None:
            raise ValueError(
                "JOB_COMPLETION_INDEX is set (a Kubernetes indexed job) but not the number of "
                "tasks: give --num-tasks (the job's completions)"
            )
        index = int(environ["JOB_COMPLETION_INDEX"])
    elif index is None and count not in (None, 1):
        raise ValueError(
            f"--num-tasks {count} without --task-index (nor SLURM_ARRAY_TASK_ID or "
            "JOB_COMPLETION_INDEX): which part is this task's?"
        )
    return Task(index or 0, count or 1)


@contextlib.contextmanager
def finishing(shards_dir: Path) -> Iterator[None]:
    """Holds the run's finish lock: one task at a time, released when the block ends or the
    process dies."""
    with open(shards_dir / "finish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
