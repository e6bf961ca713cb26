"""Batch sampling with fixed shapes: Poisson sampling and shuffled batches.

Every batch is a pair `(indices int64[capacity], weights float32[capacity])`.
Real examples come first with weight 1; padding slots hold index 0 with weight
0 so that every step has the same shape (jit compiles once) and padding
contributes exactly nothing. Each step's batch is drawn from a generator
seeded with `(seed, step)` (or `(seed, epoch)`), so any step can be recomputed
by random access, e.g. when a run resumes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _check_rate(dataset_size: int, sampling_rate: float) -> None:
    if dataset_size < 1:
        raise ValueError(f"dataset_size must be positive, got {dataset_size}")
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")


def capacity_overflow_probability(dataset_size: int, sampling_rate: float, capacity: int) -> float:
    """P[Binomial(dataset_size, sampling_rate) > capacity]."""
    return float(stats.binom.sf(capacity, dataset_size, sampling_rate))


def physical_batch_size(
    dataset_size: int,
    sampling_rate: float,
    *,
    overflow_probability: float = 1e-9,
    multiple_of: int = 1,
) -> int:
    """Smallest capacity b with P[Binomial(N, q) > b] <= overflow_probability.

    Args:
      dataset_size: N, the number of examples.
      sampling_rate: q, the probability that a step includes an example.
      overflow_probability: the tolerated probability that one step's Poisson
        sample does not fit (`poisson_batch_indices` then raises).
      multiple_of: round the capacity up to a multiple of this (e.g. the
        number of devices times the micro-batch size).

    Returns:
      The capacity, at least 1 and at most N rounded up to `multiple_of`.
    """
    _check_rate(dataset_size, sampling_rate)
    if not 0 < overflow_probability < 1:
        raise ValueError(f"overflow_probability must be in (0, 1), got {overflow_probability}")
    # For discrete distributions isf(p) is the smallest b with sf(b) <= p.
    capacity = max(1, int(stats.binom.isf(overflow_probability, dataset_size, sampling_rate)))
    return math.ceil(capacity / multiple_of) * multiple_of


def _pad(indices: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads real indices to `capacity` with (index 0, weight 0) slots."""
    padded = np.zeros(capacity, np.int64)
    padded[: len(indices)] = indices
    weights = (np.arange(capacity) < len(indices)).astype(np.float32)
    return padded, weights


def poisson_batch_indices(
    seed: int, step: int, dataset_size: int, sampling_rate: float, capacity: int
) -> tuple[np.ndarray, np.ndarray]:
    """The Poisson-sampled batch of one step, padded to `capacity`.

    Each example is included independently with probability `sampling_rate`,
    using a generator seeded with `(seed, step)`. The included examples come
    first, in random order, then padding (index 0, weight 0).

    Raises:
      RuntimeError: if more than `capacity` examples were sampled. Dropping
        the excess would change the sampling distribution and void the
        privacy analysis, so the batch is never truncated.
    """
    _check_rate(dataset_size, sampling_rate)
    rng = np.random.default_rng([seed, step])
    included = rng.permutation(np.flatnonzero(rng.random(dataset_size) < sampling_rate))
    if len(included) > capacity:
        raise RuntimeError(
            f"Poisson sampling drew {len(included)} examples at step {step} but the physical "
            f"batch holds only {capacity} (this happens with probability "
            f"{capacity_overflow_probability(dataset_size, sampling_rate, capacity):.3g} per step). "
            "Truncating the batch would break the privacy guarantee: use a larger capacity, "
            "e.g. physical_batch_size(..., overflow_probability=<smaller>)."
        )
    return _pad(included, capacity)


def shuffled_batch_indices(
    seed: int, step: int, dataset_size: int, batch_size: int, capacity: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-size batch from a per-epoch permutation (remainder dropped), padded to `capacity`
    (default `batch_size`).

    Epoch `e = step // (dataset_size // batch_size)` uses the permutation drawn
    with seed `(seed, e)`; the `batch_size` real examples have weight 1.
    """
    if not 1 <= batch_size <= dataset_size:
        raise ValueError(f"batch_size must be in [1, {dataset_size}], got {batch_size}")
    capacity = batch_size if capacity is None else capacity
    if capacity < batch_size:
        raise ValueError(f"capacity {capacity} is smaller than batch_size {batch_size}")
    epoch, position = divmod(step, dataset_size // batch_size)
    permutation = np.random.default_rng([seed, epoch]).permutation(dataset_size)
    indices = permutation[position * batch_size : (position + 1) * batch_size]
    return _pad(indices, capacity)
