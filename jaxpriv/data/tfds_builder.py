"""The synthetic dataset as a TFDS dataset in ArrayRecord files (no TensorFlow).

Layout: `<data_dir>/synthetic_actions/<config name>/<version>/`. The config
name spells out every generation parameter (kind, split sizes, seed,
sensitivity policy), so different parameters never reuse an old dataset. TFDS
writes into an `incomplete.*` folder next to it and renames that folder only
once every split and `dataset_info.json` are written, so an existing version
folder is always complete; a crashed run leaves at most an `incomplete.*`
folder, which is ignored and the dataset is generated again.

Pixels and masks are stored as `tfds.features.Tensor(encoding="bytes")`: raw
bytes decoded with numpy (`tfds.features.Image` needs TensorFlow, and the
default encoding widens every uint8 to an int64 and writes ~15x slower).
Records keep the generation order (`disable_shuffling`), so record `i` of a
split is example `i` of `generate_split(config, split)`, and are serialized with
their feature map sorted (`DeterministicRecords`): the same examples give the same
bytes in every process (protobuf orders a map by a per-process hash otherwise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import writer
from tensorflow_datasets.proto import tf_example_pb2

from jaxpriv.data import schema, synthetic

SPLITS = ("train", "test")


@dataclasses.dataclass(eq=False)
class SyntheticActionsConfig(tfds.core.BuilderConfig):
    """Generation parameters. The name is derived from them; leave it empty."""

    name: str = ""
    kind: str = "video"
    frames: int = synthetic.DEFAULT_FRAMES
    num_train: int = 4096
    num_test: int = 1024
    seed: int = 0
    sensitivity: str = "real"

    def __post_init__(self):
        synthetic.check_options(kind=self.kind, sensitivity=self.sensitivity)
        if min(self.num_train, self.num_test) < 1:
            raise ValueError(f"split sizes must be positive, got {self.num_train}, {self.num_test}")
        self.name = (
            f"{self.kind}{self.frames if self.kind == 'video' else ''}_train{self.num_train}_test{self.num_test}"
            f"_seed{self.seed}_{self.sensitivity}"
        )
        self.description = (
            f"{self.num_train} train / {self.num_test} test {self.kind}s generated with "
            f"seed {self.seed}, sensitive pixels: {self.sensitivity}."
        )


def generate_split(config: SyntheticActionsConfig, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split; the builder writes exactly these records."""
    num_examples = {"train": config.num_train, "test": config.num_test}[split]
    return synthetic.generate(
        num_examples,
        seed=[config.seed, SPLITS.index(split)],
        kind=config.kind,
        frames=config.frames,
        sensitivity=config.sensitivity,
    )


def example_features(
    pixels: str, shape: tuple[int, ...], class_names, masks=(schema.SENSITIVE,)
) -> dict:
    """TFDS features of a record: ``pixels`` (``image`` or ``video``) uint8 of ``shape`` (with the
    channel axis), a ClassLabel and one uint8 mask per name in ``masks`` (``shape`` without it)."""

    def tensor(tensor_shape):
        return tfds.features.Tensor(shape=tensor_shape, dtype=np.uint8, encoding="bytes")

    return {
        pixels: tensor(shape),
        schema.LABEL: tfds.features.ClassLabel(names=list(class_names)),
        **{name: tensor(shape[:-1]) for name in masks},
    }


def _features(kind: str, frames: int) -> tfds.features.FeaturesDict:
    size = synthetic.DEFAULT_SIZE
    shape = (size, size, 3) if kind == "image" else (frames, size, size, 3)
    return tfds.features.FeaturesDict(
        example_features(synthetic.KINDS[kind], shape, synthetic.CLASS_NAMES)
    )


class _SortedExampleWriter(writer.ExampleWriter):
    """Writes each serialized ``tf.train.Example`` again with its feature map in key order."""

    def write(self, path, examples):
        return super().write(path, ((key, _sorted(record)) for key, record in examples))


def _sorted(record: bytes) -> bytes:
    return tf_example_pb2.Example.FromString(record).SerializeToString(deterministic=True)


class DeterministicRecords:
    """A mixin for ``tfds.core.GeneratorBasedBuilder`` (first among the bases): records
    byte-identical from one process to the next, through TFDS' ``_example_writer`` hook."""

    def _example_writer(self) -> writer.ExampleWriter:
        return _SortedExampleWriter(file_format=self.info.file_format)


class SyntheticActions(DeterministicRecords, tfds.core.GeneratorBasedBuilder):
    """Synthetic avatars performing one of 4 actions in one of 2 contexts."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "Checked pattern on the figure."}
    BUILDER_CONFIGS = [
        SyntheticActionsConfig(kind="video"),
        SyntheticActionsConfig(kind="image"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=_features(self.builder_config.kind, self.builder_config.frames),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        arrays = generate_split(self.builder_config, split)
        for i in range(len(arrays[schema.LABEL])):
            example = {name: values[i] for name, values in arrays.items()}
            schema.validate_example(example)
            yield i, example


def prepare_synthetic(
    data_dir: str | os.PathLike,
    *,
    kind: str = "video",
    frames: int = synthetic.DEFAULT_FRAMES,
    num_train: int = 4096,
    num_test: int = 1024,
    seed: int = 0,
    sensitivity: str = "real",
) -> SyntheticActions:
    """Writes the synthetic dataset under `data_dir` unless already complete.

    Returns the builder; read it with `builder.as_data_source(split)` or
    `jaxpriv.data.pipeline.load_source(builder, split)`.
    """
    config = SyntheticActionsConfig(
        kind=kind,
        frames=frames,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        sensitivity=sensitivity,
    )
    # TFDS refuses a new config object named like a registered one.
    config = SyntheticActions.get_builder_config(config.name) or config
    return prepare(SyntheticActions, data_dir, config)


def prepare(builder_class, data_dir, config: tfds.core.BuilderConfig) -> tfds.core.DatasetBuilder:
    """Builds the dataset of ``builder_class`` with ``config`` in ``data_dir`` as ArrayRecord
    files (a no-op when it is complete), without TFDS' notes on custom configs and downloads
    (nothing is downloaded)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # TFDS warns that a non-registered config is "custom"
    try:
        builder = builder_class(data_dir=os.fspath(data_dir), config=config)
        tfds.disable_progress_bar()
        with contextlib.redirect_stdout(io.StringIO()):  # "Downloading and preparing..."
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
    finally:
        absl_logger.setLevel(level)
    return builder
