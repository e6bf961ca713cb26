"""Grain input pipelines with fixed batch shapes.

A batch is a dict of numpy arrays with a leading axis of fixed size:
`video` uint8 [B,T,H,W,3] or `image` uint8 [B,H,W,3], `label` int32 [B],
`sensitive` bool [B,...] (pixel shape without channels) and `weight` float32
[B]: 1 for real examples, 0 for padding (padding repeats record 0 and must
contribute nothing). Pixels stay uint8; the model normalises them.

Element `i` of the underlying `grain.MapDataset` is the whole batch of step
`i`: its indices come from `jaxpriv.dp.sampling` (a pure function of the seed
and the step), its records are read from the random-access source. Batches are
therefore deterministic and a resumed run continues exactly from `start_step`.
`to_iter_dataset` assembles the next batches in background threads while the
current one trains.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from jaxpriv.data import schema
from jaxpriv.dp import sampling
from jaxpriv.train.parallel import spread

WEIGHT = "weight"
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)

Batch = dict[str, np.ndarray]
IndexFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def load_source(
    dataset: tfds.core.DatasetBuilder | str | os.PathLike, split: str
) -> Sequence[dict]:
    """The random-access source of a prepared TFDS split.

    Args:
      dataset: a builder (e.g. from `tfds_builder.prepare_synthetic`) or the
        folder of a prepared dataset version (`<data_dir>/<name>/<config>/<version>`).
      split: e.g. "train" or "test".
    """
    if not isinstance(dataset, tfds.core.DatasetBuilder):
        dataset = tfds.builder_from_directory(os.fspath(dataset))
    return dataset.as_data_source(split)


def read_batch(source: Sequence[dict], indices: np.ndarray, weights: np.ndarray) -> Batch:
    """Reads and stacks the records at `indices` into one batch (model features only)."""
    records = [source[int(i)] for i in indices]
    names = (schema.pixel_feature(records[0]), schema.LABEL, schema.SENSITIVE)
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


def _train_index_fn(
    dataset_size: int,
    sampler: str,
    seed: int,
    sampling_rate: float | None,
    capacity: int | None,
    batch_size: int | None,
) -> IndexFn:
    """Step -> (indices, weights) for the chosen sampler."""
    if sampler == "poisson":
        if sampling_rate is None or batch_size is not None:
            raise ValueError(
                "the poisson sampler takes sampling_rate (and capacity), not batch_size"
            )
        if capacity is None:
            capacity = sampling.physical_batch_size(dataset_size, sampling_rate)
        return functools.partial(
            sampling.poisson_batch_indices,
            seed,
            dataset_size=dataset_size,
            sampling_rate=sampling_rate,
            capacity=capacity,
        )
    if sampler == "shuffle":
        if batch_size is None or sampling_rate is not None or capacity is not None:
            raise ValueError("the shuffle sampler takes batch_size, not sampling_rate or capacity")
        return functools.partial(
            sampling.shuffled_batch_indices, seed, dataset_size=dataset_size, batch_size=batch_size
        )
    raise ValueError(f"sampler must be 'poisson' or 'shuffle', got {sampler!r}")


def train_batches(
    source: Sequence[dict],
    *,
    seed: int,
    num_steps: int,
    start_step: int = 0,
    sampler: str = "poisson",
    sampling_rate: float | None = None,
    capacity: int | None = None,
    batch_size: int | None = None,
    num_shards: int = 1,
    rows: slice = slice(None),
    read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
) -> Iterator[Batch]:
    """Training batches of steps `start_step, ..., start_step + num_steps - 1`.

    Args:
      source: random-access records (see `load_source`).
      seed: sampling seed; step `s` always gets the same batch.
      num_steps: number of batches to yield.
      start_step: first step, e.g. the step a resumed run continues from.
      sampler: "poisson" (each example independently with probability
        `sampling_rate`, padded to `capacity`, which defaults to
        `sampling.physical_batch_size`) or "shuffle" (fixed `batch_size` from a
        per-epoch permutation; non-private training only: disjoint per-epoch
        batches are not the schedule any DP accountant here covers).
      num_shards: the batch is laid out round-robin over this many equal shards (devices;
        see `jaxpriv.train.parallel.spread`) so that each gets its share of real examples.
      rows: the rows of that layout to load (this process's devices); default all.
      read_options: Grain threads and prefetch depth, counted in batches.

    Raises:
      RuntimeError (while iterating): a Poisson sample exceeded `capacity`.
    """
    global_index_fn = _train_index_fn(
        len(source), sampler, seed, sampling_rate, capacity, batch_size
    )

    def index_fn(step: int) -> tuple[np.ndarray, np.ndarray]:
        return tuple(spread(a, num_shards)[rows] for a in global_index_fn(step))

    return _batches(source, index_fn, range(start_step, start_step + num_steps), read_options)


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
