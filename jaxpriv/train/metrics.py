"""A run's metrics: JSON lines (``metrics.jsonl``), TensorBoard event files and, on request,
Weights & Biases — the same values in all three.

`MetricsLog` writes one record per evaluation to all of them, and the released training losses
of the steps in between to TensorBoard and W&B only. The event files lie next to
``metrics.jsonl`` (``tensorboard --logdir runs`` finds every run) and are written with
``tensorboardX``'s event writer, without TensorFlow, synchronously (`EventFile`).
"""

import hashlib
import json
import os
import time

import ml_collections

from jaxpriv import files

# metrics.jsonl key → TensorBoard tag (and W&B key); records hold seconds, tags say so.
TAGS = {
    "test_accuracy": "test/accuracy",
    "epsilon": "privacy/epsilon",
    "noise_multiplier": "privacy/noise_multiplier",
    "train_loss": "train/loss",
    "public_loss": "train/public_view_loss",
    "private_loss": "train/private_loss_not_covered_by_dp",
    "step_time": "train/step_time_s",
    "epoch": "train/epoch",
}


class JsonlWriter:
    """Appends dicts to ``path`` as JSON lines (the file survives interrupts line by line)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path

    def drop_after(self, step: int) -> None:
        """Removes the records of steps after ``step`` (a resumed run writes them again)."""
        if os.path.exists(self.path):
            kept = [r for r in read_jsonl(self.path) if r["step"] <= step]
            with files.atomic_path(self.path) as temporary:
                temporary.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def public_config(config: ml_collections.ConfigDict) -> dict:
    """The config as a dict with ``dp.secret_seed`` hidden (anyone who knows a set seed can
    replay the noise): what may leave the workdir, e.g. to W&B or a report."""
    values = json.loads(config.to_json_best_effort())
    if values.get("dp", {}).get("secret_seed", -1) >= 0:
        values["dp"]["secret_seed"] = "set (hidden)"
    return values


def _wandb_run(config: ml_collections.ConfigDict, workdir: str):
    """A W&B run for ``workdir`` (the same W&B run when a run resumes)."""
    try:
        import wandb
    except ImportError as error:
        raise ValueError(
            "log.wandb=True needs Weights & Biases: pip install wandb (or set log.wandb=False)"
        ) from error
    run_id = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:16]
    extra = {}
    if config.dp.secret_seed >= 0:  # the command line, in W&B's metadata, may hold it
        extra["settings"] = wandb.Settings(x_disable_meta=True, save_code=False)
    return wandb.init(
        project=config.log.wandb_project,
        name=config.name,
        id=run_id,
        dir=workdir,
        config=public_config(config),
        resume="allow",
        **extra,
    )


class EventFile:
    """A TensorBoard event file written synchronously, event by event (tensorboardX's
    ``SummaryWriter`` queues events to a thread that flushes every two minutes: a killed run
    would lose them, while its metrics.jsonl keeps every line)."""

    def __init__(self, folder: str, purge_step: int | None = None):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self.writer = EventsWriter(os.path.join(folder, "events"))
        if purge_step is not None:  # TensorBoard hides the earlier files' steps ≥ purge_step
            self.writer.write_event(Event(step=purge_step, file_version="brain.Event:2"))
            start = SessionLog(status=SessionLog.START)
            self.writer.write_event(Event(step=purge_step, session_log=start))
        self.writer.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Writes ``{tag: value}`` at ``step`` and flushes them to the file."""
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        for tag, value in values.items():
            self.writer.write_event(
                Event(wall_time=time.time(), step=step, summary=scalar(tag, value))
            )
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MetricsLog:
    """The metrics of one run, from step ``first`` on (a resumed run drops what it redoes)."""

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, first: int = 0):
        self.jsonl = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
        self.jsonl.drop_after(first)
        self.tensorboard = self.wandb = None
        if config.log.wandb:
            self.wandb = _wandb_run(config, workdir)
        if config.log.tensorboard:
            self.tensorboard = EventFile(workdir, purge_step=first + 1 if first else None)

    def scalars(self, step: int, values: dict) -> None:
        """Writes the numbers among ``values`` (metrics.jsonl keys) to TensorBoard and W&B."""
        numbers = {
            TAGS[key]: value
            for key, value in values.items()
            if key in TAGS and isinstance(value, (int, float))
        }
        if self.tensorboard:
            self.tensorboard.scalars(step, numbers)
        if self.wandb:
            self.wandb.log(numbers, step=step)

    def record(self, record: dict) -> None:
        """Appends an evaluation record to metrics.jsonl and writes its numbers."""
        self.jsonl.write(record)
        self.scalars(record["step"], record)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
