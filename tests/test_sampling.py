"""Tests of Poisson and shuffled batch sampling."""

import numpy as np
import pytest
from scipy import stats

from jaxpriv.dp import sampling


@pytest.mark.parametrize("n, q", [(1, 0.5), (100, 0.01), (60_000, 256 / 60_000), (500, 1.0)])
@pytest.mark.parametrize("p", [1e-12, 1e-9, 1e-3])
def test_physical_batch_size_is_the_smallest_safe_capacity(n, q, p):
    b = sampling.physical_batch_size(n, q, overflow_probability=p)
    assert b >= 1
    assert stats.binom.sf(b, n, q) <= p
    assert b == 1 or stats.binom.sf(b - 1, n, q) > p
    assert sampling.capacity_overflow_probability(n, q, b) == pytest.approx(stats.binom.sf(b, n, q))


def test_physical_batch_size_examples():
    # Expected batch 256 of 60000: mean + about 6 standard deviations.
    assert sampling.physical_batch_size(60_000, 256 / 60_000) == 357
    assert sampling.physical_batch_size(60_000, 256 / 60_000, multiple_of=64) == 384
    assert sampling.physical_batch_size(1000, 1e-9) == 1  # at least 1
    assert sampling.physical_batch_size(500, 1.0) == 500


@pytest.mark.parametrize("q, p", [(0.0, 1e-9), (1.5, 1e-9), (0.1, 0.0), (0.1, 1.0)])
def test_physical_batch_size_rejects_bad_arguments(q, p):
    with pytest.raises(ValueError, match="must be in"):
        sampling.physical_batch_size(100, q, overflow_probability=p)


def test_poisson_inclusion_rate_matches_q():
    n, q, steps, capacity = 50, 0.2, 4000, 50
    counts = np.zeros(n)
    sizes = []
    for step in range(steps):
        indices, weights = sampling.poisson_batch_indices(7, step, n, q, capacity)
        real = indices[weights > 0]
        np.add.at(counts, real, 1)
        sizes.append(len(real))
    # Each example's count is Binomial(steps, q): mean 800, std about 25.
    std = np.sqrt(steps * q * (1 - q))
    assert np.abs(counts - steps * q).max() < 5 * std
    assert np.mean(sizes) == pytest.approx(n * q, abs=0.1)
    assert np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.1)


def test_poisson_batch_layout():
    indices, weights = sampling.poisson_batch_indices(0, 3, 1000, 0.05, 100)
    assert indices.dtype == np.int64 and weights.dtype == np.float32
    assert indices.shape == weights.shape == (100,)
    k = int(weights.sum())
    assert 20 < k < 80
    np.testing.assert_array_equal(weights, np.r_[np.ones(k), np.zeros(100 - k)])  # real first
    np.testing.assert_array_equal(indices[k:], 0)  # padding: index 0, weight 0
    assert len(np.unique(indices[:k])) == k  # without repetition
    assert not (np.diff(indices[:k]) > 0).all()  # in random order, not sorted


def test_poisson_batches_are_reproducible_by_random_access():
    first = sampling.poisson_batch_indices(11, 5, 1000, 0.1, 200)
    again = sampling.poisson_batch_indices(11, 5, 1000, 0.1, 200)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    other_step = sampling.poisson_batch_indices(11, 6, 1000, 0.1, 200)
    other_seed = sampling.poisson_batch_indices(12, 5, 1000, 0.1, 200)
    assert not np.array_equal(first[0], other_step[0])
    assert not np.array_equal(first[0], other_seed[0])


def test_poisson_overflow_raises_instead_of_truncating():
    expected = r"drew \d+ examples at step 2 but the physical batch holds only 10"
    with pytest.raises(RuntimeError, match=expected) as error:
        sampling.poisson_batch_indices(0, 2, 1000, 0.5, 10)
    assert "privacy guarantee" in str(error.value)
    assert "overflow_probability" in str(error.value)


def test_shuffled_batches_cover_each_example_once_per_epoch():
    n, batch_size = 10, 3  # 3 batches per epoch, one example left out
    batches = [sampling.shuffled_batch_indices(4, step, n, batch_size) for step in range(6)]
    for indices, weights in batches:
        assert indices.shape == (3,) and indices.dtype == np.int64
        np.testing.assert_array_equal(weights, np.ones(3, np.float32))
    epochs = [np.concatenate([i for i, _ in batches[e * 3 : (e + 1) * 3]]) for e in range(2)]
    for epoch in epochs:
        assert len(np.unique(epoch)) == 9
    assert not np.array_equal(epochs[0], epochs[1])
    full = np.concatenate([sampling.shuffled_batch_indices(4, s, 12, 4)[0] for s in range(3)])
    np.testing.assert_array_equal(np.sort(full), np.arange(12))
    np.testing.assert_array_equal(
        sampling.shuffled_batch_indices(4, 4, n, batch_size)[0], batches[4][0]
    )


def test_shuffled_batch_size_must_fit():
    with pytest.raises(ValueError, match="batch_size"):
        sampling.shuffled_batch_indices(0, 0, 5, 6)
