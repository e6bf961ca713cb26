"""The anonymization stage of a sweep: cells that train on anonymized copies of one dataset.

With ``anonymize.layout`` set (an input format of ``layouts.FORMATS``, the same as ``jaxpriv
anonymize --format``: ``"synthetic"``, the embedded clips, or a dataset layout or a folder
under ``anonymize.root``), every distinct anonymization that the grid asks
for (``anonymize.method``, ``anonymize.region``, … are grid keys like the train-config keys) is
made once by the anonymization pipeline, in ``WORKDIR/data/<its grid values>``, and the cells
using it train on it. The reference copy, ``WORKDIR/data/original``, runs the same pipeline with
``method="none"`` (same records, splits and labels; pixels untouched), and every cell is tested
on its test split (``anonymize.test_on="original"``, the study's protocol) or on the test split
of its own anonymized copy (``"anonymized"``). Only process 0 should run a staged sweep.
"""

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import ml_collections

from jaxpriv.anonymize import detect, layouts, pipeline, readers, runner, settings

ORIGINAL = "original"
TEST_SPLITS = ("original", "anonymized")
# The pipeline's options that change nothing when nothing is anonymized (method "none").
REGION_SETTINGS = ("region", "dilate", "expand_box", "histogram")
KEEP_ONLY = ("anonymize.method", "none", tuple(f"anonymize.{key}" for key in REGION_SETTINGS))
AVATAR_BODIES = ("anonymize.method", "avatar", {"anonymize.region": "body"})  # whole persons


def stage_config() -> ml_collections.ConfigDict:
    """The ``anonymize`` section of an experiment: input, then the pipeline's options."""
    c = ml_collections.ConfigDict()
    c.layout = ""  # "": no stage (cells train on base.data); an input format (layouts.FORMATS)
    c.root = ""  # the dataset's root folder (real-data layouts)
    c.num_clips = 512  # synthetic: clips to generate
    c.frames = 4  # synthetic: frames per clip
    c.test_on = "original"  # test split of: "original" (method none) or "anonymized" (own copy)
    c.workers = 2  # anonymization processes
    for field in dataclasses.fields(settings.Options):  # region, method, size, …
        c[field.name] = field.default
    return c


def enabled(stage: ml_collections.ConfigDict) -> bool:
    return bool(stage.layout)


def options(stage: ml_collections.ConfigDict) -> settings.Options:
    """The pipeline options of ``stage``; the region settings are the defaults for "none"."""
    fields = dataclasses.fields(settings.Options)
    ignored = REGION_SETTINGS if stage.method == "none" else ()
    return settings.Options(
        **{field.name: stage[field.name] for field in fields if field.name not in ignored}
    )


def original(stage: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The stage of the reference copy: the same pipeline, nothing anonymized."""
    stage = ml_collections.ConfigDict(stage.to_dict())
    stage.method = "none"
    return stage


@functools.lru_cache(maxsize=4)
def _units(layout: str, root: str, num_clips: int, frames: int, seed: int) -> tuple:
    root = os.path.expanduser(root) if root else None
    return tuple(layouts.read_input(layout, root, num_clips=num_clips, frames=frames, seed=seed))


def units(stage: ml_collections.ConfigDict) -> tuple:
    """The inputs of ``stage``'s layout (read once per process; nothing decoded)."""
    return _units(*_input_key(stage))


def train_units(stage: ml_collections.ConfigDict) -> tuple:
    """The inputs that go to the train split (each key hashed once per process)."""
    return _train_units(*_input_key(stage), stage.test_fraction)


def _input_key(stage: ml_collections.ConfigDict) -> tuple:
    if stage.test_on not in TEST_SPLITS:
        raise ValueError(f"anonymize.test_on must be one of {TEST_SPLITS}, got {stage.test_on!r}")
    return stage.layout, stage.root, stage.num_clips, stage.frames, stage.seed


@functools.lru_cache(maxsize=4)
def _train_units(layout, root, num_clips, frames, seed, test_fraction: float) -> tuple:
    inputs = _units(layout, root, num_clips, frames, seed)
    return tuple(u for u in inputs if pipeline.split_of(u.key, test_fraction) == "train")


def planned_train_size(stage: ml_collections.ConfigDict) -> tuple[int, bool]:
    """(training records, whether exact) that the stage will write, from its inputs' names.

    A video gives ``max_clips`` clips (or, synthetic, frames // clip_frames); a real video without
    ``max_clips`` at least one, so the count is then a lower bound.
    """
    train = train_units(stage)
    if not train or not isinstance(train[0], readers.Video):
        return len(train), True
    if stage.layout == "synthetic":
        clips = math.ceil(stage.frames / stage.frame_stride) // stage.clip_frames
        return len(train) * (min(clips, stage.max_clips) if stage.max_clips else clips), True
    return len(train) * max(stage.max_clips, 1), stage.max_clips > 0


def prepare(stage: ml_collections.ConfigDict, folder: str, *, progress: bool = True) -> str:
    """Runs (or resumes) the pipeline into ``folder`` unless done; returns the TFDS dataset."""
    settings = options(stage)
    if settings.detector == "auto":  # as runner.run records it
        settings = dataclasses.replace(settings, detector=detect.auto_backend())
    summary_path = Path(folder) / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary["options"] == dataclasses.asdict(settings):
            return summary["dataset"]
    summary = runner.run(
        list(units(stage)),
        folder,
        settings,
        workers=stage.workers,
        shard_size=64 if stage.layout == "synthetic" else None,  # short clips: 64 per shard
        progress=progress,
        input_root=None if stage.layout == "synthetic" else os.path.expanduser(stage.root),
    )
    return summary["dataset"]


def check_test_split(stage: ml_collections.ConfigDict) -> None:
    """Raises ValueError when none of the stage's inputs would go to the test split."""
    inputs, train = units(stage), train_units(stage)
    if len(train) == len(inputs):
        raise ValueError(
            f"anonymization stage: none of the {len(inputs)} inputs falls in the test split "
            f"(anonymize.test_fraction={stage.test_fraction}, by hash of the name): the cells "
            "would have nothing to test on; add inputs or raise anonymize.test_fraction"
        )


def describe_input(stage: ml_collections.ConfigDict) -> str:
    """One line on the stage's input: layout, task, inputs per split (checks the layout)."""
    inputs, train = units(stage), train_units(stage)
    if stage.layout == "synthetic":
        source = f"the embedded synthetic clips ({stage.num_clips} of {stage.frames} frames)"
    elif stage.layout in layouts.LAYOUTS:
        task = layouts.LAYOUTS[stage.layout].task
        source = f"{stage.layout} at {stage.root} ({task})"
    else:
        source = f"{stage.layout} at {stage.root}"
    return (
        f"anonymization stage: {source}: {len(train)} train and {len(inputs) - len(train)} "
        f"test inputs; tested on the {stage.test_on} test split"
    )
