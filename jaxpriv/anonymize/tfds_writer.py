"""The anonymized dataset as TFDS (ArrayRecord), built from finished shards; no TensorFlow.

Records: ``image`` uint8 ``size×size×3`` or ``video`` uint8 ``T×size×size×3``, ``label``
(ClassLabel, from the input's folders), ``sensitive`` uint8 (1 = real pixel protected by DP),
``region`` uint8 (1 = an anonymized person), both of the pixel shape without channels, and
``key`` (the input file; ``<video>#<clip>`` for clips). Read it with ``jaxpriv train
--config.data.name=<dataset folder>`` or ``tfds.builder_from_directory``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxpriv.data import schema
from jaxpriv.data.tfds_builder import DeterministicRecords, example_features, prepare

SPLITS = ("train", "test")
MASKS = (schema.SENSITIVE, "region")


@dataclasses.dataclass(eq=False)
class AnonymizedConfig(tfds.core.BuilderConfig):
    pixels: str = schema.IMAGE  # "image" or "video"
    shape: tuple[int, ...] = ()  # of one record's pixels, channels last
    labels: tuple[str, ...] = ()
    shards: str = ""  # folder of the finished shards
    num_shards: int = 0
    splits: tuple[str, ...] = SPLITS  # the non-empty ones (TFDS refuses empty splits)


class Anonymized(DeterministicRecords, tfds.core.GeneratorBasedBuilder):
    """Images or video clips with people anonymized by jaxpriv, and per-pixel sensitivity masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        features = example_features(config.pixels, config.shape, config.labels, MASKS)
        features["key"] = tfds.features.Tensor(shape=(), dtype=np.object_)
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {split: self._generate_examples(split) for split in self.builder_config.splits}

    def _generate_examples(self, split: str):
        config = self.builder_config
        fields = (config.pixels, *MASKS)
        for index in range(config.num_shards):
            with np.load(Path(config.shards) / f"shard-{index:05d}.npz") as shard:
                if "key" not in shard.files:  # every input of the shard was skipped
                    continue
                arrays = {name: shard[name] for name in (*fields, "key", "label", "split")}
            for i in np.flatnonzero(arrays["split"] == split):
                key = str(arrays["key"][i])
                record = {name: arrays[name][i] for name in fields}
                yield key, {**record, schema.LABEL: str(arrays["label"][i]), "key": key.encode()}


def write_tfds(
    out_dir: Path,
    pixels: str,
    shape: tuple[int, ...],
    labels: list[str],
    num_shards: int,
    splits: tuple[str, ...],
) -> Path:
    """Builds ``out_dir/tfds`` from ``out_dir/.shards`` (no-op when complete); returns its folder."""
    config = AnonymizedConfig(
        name=pixels,
        pixels=pixels,
        shape=tuple(shape),
        labels=tuple(labels),
        shards=str(out_dir / ".shards"),
        num_shards=num_shards,
        splits=splits,
    )
    builder = prepare(Anonymized, out_dir / "tfds", config)
    return Path(builder.data_path)
