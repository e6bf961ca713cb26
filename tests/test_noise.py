"""Gaussian noise: standard deviation σC/B after normalisation, reproducible keys, added once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpriv.dp.noise import gaussian_noise, privatize_sum

SIGMA, C, B = 1.3, 0.7, 50.0


def zeros():
    return {"w": jnp.zeros((300, 300)), "b": jnp.zeros(1000)}


def test_noise_has_standard_deviation_sigma_C_over_B():
    transform = privatize_sum(clip_norm=C, noise_multiplier=SIGMA, expected_batch_size=B, seed=3)
    updates, _ = transform.update(zeros(), transform.init(zeros()))
    values = np.concatenate([np.ravel(x) for x in jax.tree.leaves(updates)])
    expected = SIGMA * C / B
    # 91,000 samples: the sample std is within 1% of the truth with overwhelming probability.
    assert abs(values.std() / expected - 1) < 0.01
    assert abs(values.mean()) < 4 * expected / np.sqrt(values.size)


def test_noise_is_added_to_the_sum_then_divided_by_the_expected_batch_size():
    transform = privatize_sum(clip_norm=C, noise_multiplier=SIGMA, expected_batch_size=B, seed=3)
    state = transform.init(zeros())
    grads = jax.tree.map(lambda x: x + 2.0, zeros())
    noisy, _ = transform.update(grads, state)
    noise_only, _ = transform.update(zeros(), state)
    for n, z in zip(jax.tree.leaves(noisy), jax.tree.leaves(noise_only)):
        np.testing.assert_allclose(n - z, 2.0 / B, rtol=1e-4)


def test_same_key_same_noise_next_step_fresh_noise():
    a = gaussian_noise(jax.random.key(7), zeros(), 1.0)
    b = gaussian_noise(jax.random.key(7), zeros(), 1.0)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    transform = privatize_sum(clip_norm=C, noise_multiplier=SIGMA, expected_batch_size=B, seed=3)
    state = transform.init(zeros())
    first, state = transform.update(zeros(), state)
    second, state = transform.update(zeros(), state)
    assert int(state.count) == 2
    assert not np.allclose(first["w"], second["w"])
    # Leaves get independent noise, not copies of one draw.
    assert abs(np.corrcoef(np.ravel(first["w"])[:1000], first["b"])[0, 1]) < 0.15


def test_zero_noise_multiplier_only_normalises():
    transform = privatize_sum(clip_norm=C, noise_multiplier=0.0, expected_batch_size=B)
    grads = {"w": jnp.arange(4.0)}
    out, _ = transform.update(grads, transform.init(grads))
    np.testing.assert_array_equal(out["w"], jnp.arange(4.0) / B)


def test_invalid_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="noise_multiplier ≥ 0"):
        privatize_sum(clip_norm=1.0, noise_multiplier=-1.0, expected_batch_size=B)
