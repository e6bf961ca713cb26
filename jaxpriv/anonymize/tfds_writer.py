"""The anonymized dataset as TFDS (ArrayRecord), built from finished shards; no TensorFlow.

Records: ``image`` uint8 ``size×size×3``, ``label`` (ClassLabel, from the input's folders),
``sensitive`` uint8 ``size×size`` (1 = real pixel protected by DP), ``region`` uint8 (1 = an
anonymized person) and ``key`` (the input file). Read it with ``jaxpriv train
--config.data.name=<dataset folder>`` or ``tfds.builder_from_directory``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from jaxpriv.data import schema

SPLITS = ("train", "test")


@dataclasses.dataclass(eq=False)
class AnonymizedImagesConfig(tfds.core.BuilderConfig):
    size: int = 64
    labels: tuple[str, ...] = ()
    shards: str = ""  # folder of the finished shards
    num_shards: int = 0
    splits: tuple[str, ...] = SPLITS  # the non-empty ones (TFDS refuses empty splits)


class AnonymizedImages(tfds.core.GeneratorBasedBuilder):
    """Images with people anonymized by jaxpriv, and their per-pixel sensitivity masks."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.size
        mask = tfds.features.Tensor(shape=(size, size), dtype=np.uint8, encoding="bytes")
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    schema.IMAGE: tfds.features.Tensor(
                        shape=(size, size, 3), dtype=np.uint8, encoding="bytes"
                    ),
                    schema.LABEL: tfds.features.ClassLabel(names=list(self.builder_config.labels)),
                    schema.SENSITIVE: mask,
                    "region": mask,
                    "key": tfds.features.Tensor(shape=(), dtype=np.object_),
                }
            ),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        return {split: self._generate_examples(split) for split in self.builder_config.splits}

    def _generate_examples(self, split: str):
        config = self.builder_config
        for index in range(config.num_shards):
            with np.load(Path(config.shards) / f"shard-{index:05d}.npz") as shard:
                for i in np.flatnonzero(shard["split"] == split):
                    key = str(shard["key"][i])
                    yield (
                        key,
                        {
                            schema.IMAGE: shard["image"][i],
                            schema.LABEL: str(shard["label"][i]),
                            schema.SENSITIVE: shard["sensitive"][i],
                            "region": shard["region"][i],
                            "key": key.encode(),
                        },
                    )


def write_tfds(
    out_dir: Path, size: int, labels: list[str], num_shards: int, splits: tuple[str, ...]
) -> Path:
    """Builds ``out_dir/tfds`` from ``out_dir/.shards`` (no-op when complete); returns its folder."""
    config = AnonymizedImagesConfig(
        name="anonymized",
        size=size,
        labels=tuple(labels),
        shards=str(out_dir / ".shards"),
        num_shards=num_shards,
        splits=splits,
    )
    builder = AnonymizedImages(data_dir=str(out_dir / "tfds"), config=config)
    tfds.disable_progress_bar()
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )
    return Path(builder.data_path)
