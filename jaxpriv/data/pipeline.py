"""Grain input pipelines with fixed batch shapes.

A batch is a dict of numpy arrays with a leading axis of fixed size:
`video` uint8 [B,T,H,W,3] or `image` uint8 [B,H,W,3], `label` int32 [B],
`sensitive` bool [B,...] (pixel shape without channels) and `weight` float32
[B]: 1 for real examples, 0 for padding (padding repeats record 0 and must
contribute nothing). Pixels stay uint8; the model normalises them.

Element `i` of the underlying `grain.MapDataset` holds the batches of step `i`:
their indices come from the `DpMechanism`'s samplers (pure functions of a seed
and the step), their records are read from the random-access source. Batches
are therefore deterministic and a resumed run continues exactly from
`start_step`.
`to_iter_dataset` assembles the next batches in background threads while the
current one trains.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from jaxpriv.data import schema
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.train.parallel import spread

WEIGHT = "weight"
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)

Batch = dict[str, np.ndarray]
IndexFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def load_source(
    dataset: tfds.core.DatasetBuilder | str | os.PathLike, split: str, cache_mb: float = 0.0
) -> Sequence[dict]:
    """The random-access source of a prepared TFDS split.

    Args:
      dataset: a builder (e.g. from `tfds_builder.prepare_synthetic`) or the
        folder of a prepared dataset version (`<data_dir>/<name>/<config>/<version>`).
      split: e.g. "train" or "test".
      cache_mb: a split of at most this many MiB is decoded once and held in memory
        (`InMemorySource`); a larger one is read record by record.
    """
    builder = with_split(dataset, split)
    source = builder.as_data_source(split)
    if builder.info.splits[split].num_bytes <= cache_mb * 2**20:
        return InMemorySource(source)
    return source


def with_split(
    dataset: tfds.core.DatasetBuilder | str | os.PathLike, split: str
) -> tfds.core.DatasetBuilder:
    """The builder of ``dataset`` (a builder or a prepared folder), which must have ``split``.

    Raises ValueError naming the dataset's splits when it has no ``split`` (a dataset written
    by ``jaxpriv anonymize`` from too few inputs has no test split).
    """
    if not isinstance(dataset, tfds.core.DatasetBuilder):
        dataset = tfds.builder_from_directory(os.fspath(dataset))
    splits = sorted(dataset.info.splits)
    if split not in splits:
        raise ValueError(
            f"dataset {dataset.data_dir} has no {split!r} split (it has {', '.join(splits)}); "
            "for a test split, anonymize more inputs or a larger --test-fraction, or set "
            "data.test_name to a dataset with one"
        )
    return dataset


class InMemorySource(Sequence):
    """A split's model features decoded once into stacked arrays: a batch is then one
    fancy-indexing per feature instead of a read and a decode per record (~0.15 ms each, on the
    cores the step runs on: a fifth of a MaskDP epoch of the default config on 2 cores).
    ``dataset_info`` is the source's."""

    def __init__(self, source: Sequence[dict]):
        self.dataset_info = source.dataset_info
        first = source[0]
        self.arrays = {
            name: np.empty((len(source), *np.shape(first[name])), np.asarray(first[name]).dtype)
            for name in _model_features(first)
        }
        for i in range(len(source)):
            record = source[i]
            for name, array in self.arrays.items():
                array[i] = record[name]

    def __len__(self) -> int:
        return len(self.arrays[schema.LABEL])

    def __getitem__(self, index: int) -> dict:
        return {name: array[index] for name, array in self.arrays.items()}


def _model_features(record: dict) -> tuple[str, str, str]:
    """The features of ``record`` that a batch holds: pixels, label, sensitivity mask."""
    return schema.pixel_feature(record), schema.LABEL, schema.SENSITIVE


def read_batch(source: Sequence[dict], indices: np.ndarray, weights: np.ndarray) -> Batch:
    """Reads and stacks the records at `indices` into one batch (model features only)."""
    if isinstance(source, InMemorySource):
        batch = {name: array[indices] for name, array in source.arrays.items()}
    else:
        records = [source[int(i)] for i in indices]
        names = _model_features(records[0])
        batch = {name: np.stack([record[name] for record in records]) for name in names}
    batch[schema.LABEL] = batch[schema.LABEL].astype(np.int32)
    batch[schema.SENSITIVE] = batch[schema.SENSITIVE].astype(bool)
    batch[WEIGHT] = weights
    return batch


def _batches(
    source: Sequence[dict], index_fn: IndexFn, steps: range, read_options: grain.ReadOptions
) -> Iterator[Batch]:
    """Iterates over `read_batch(source, *index_fn(step))` for the steps."""
    dataset = grain.MapDataset.range(steps.start, steps.stop).map(
        lambda step: read_batch(source, *index_fn(step))
    )
    return iter(dataset.to_iter_dataset(read_options))


def public_view(batch: Batch) -> Batch:
    """``batch`` with every sensitive pixel replaced by the public fill: what MaskDP's public
    batch may see (the models drop those pixels too; this keeps them out of the step)."""
    pixels = schema.pixel_feature(batch)
    fill = np.uint8(schema.PUBLIC_FILL)
    return {**batch, pixels: np.where(batch[schema.SENSITIVE][..., None], fill, batch[pixels])}


def train_batches(
    source: Sequence[dict],
    mechanism: DpMechanism,
    *,
    num_steps: int,
    start_step: int = 0,
    num_shards: int = 1,
    rows: Callable[[int], slice] = lambda size: slice(None),
    read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> Iterator[dict[str, Batch]]:
    """The batches of steps `start_step, ..., start_step + num_steps - 1`, as dicts keyed like
    `mechanism.batch_names()`: "private" (the batch S its private sampler draws) and, for
    MaskDP, "public" (its independent public batch S', as `public_view`s).

    Args:
      source: random-access records (see `load_source`).
      mechanism: gives the samplers (`private_indices`, `public_indices`) and the batch shapes.
      num_steps: number of steps to yield.
      start_step: first step, e.g. the step a resumed run continues from.
      num_shards: each batch is laid out round-robin over this many equal shards (devices;
        see `jaxpriv.train.parallel.spread`) so that each gets its share of real examples.
      rows: batch size -> the rows of that layout to load (this process's devices, e.g.
        `functools.partial(jaxpriv.train.parallel.local_rows, mesh)`); default all.
      read_options: Grain threads and prefetch depth, counted in steps.

    Raises:
      RuntimeError (while iterating): a Poisson sample exceeded the capacity.
    """
    samplers = {"private": mechanism.private_indices, "public": mechanism.public_indices}
    views = {"private": lambda batch: batch, "public": public_view}

    def read_step(step: int) -> dict[str, Batch]:
        batches = {}
        for name in mechanism.batch_names():
            indices, weights = samplers[name](step)
            indices, weights = (spread(a, num_shards)[rows(len(a))] for a in (indices, weights))
            batches[name] = views[name](read_batch(source, indices, weights))
        return batches

    dataset = grain.MapDataset.range(start_step, start_step + num_steps).map(read_step)
    return iter(dataset.to_iter_dataset(read_options))


def _eval_indices(dataset_size: int, batch_size: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the `step`-th consecutive batch; past the end: index 0, weight 0."""
    indices = np.arange(step * batch_size, (step + 1) * batch_size)
    real = indices < dataset_size
    return np.where(real, indices, 0), real.astype(np.float32)


def eval_batches(
    source: Sequence[dict],
    batch_size: int,
    *,
    rows: slice = slice(None),
    read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> Iterator[Batch]:
    """The whole source in order, in batches of `batch_size` (last one padded); of each batch
    only `rows` (this process's share; default all)."""
    dataset_size = len(source)

    def index_fn(step: int) -> tuple[np.ndarray, np.ndarray]:
        return tuple(a[rows] for a in _eval_indices(dataset_size, batch_size, step))

    return _batches(source, index_fn, range(math.ceil(dataset_size / batch_size)), read_options)
