"""Gaussian noise: standard deviation σC/B after normalisation, reproducible keys, added once."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpriv.dp import noise
from jaxpriv.dp.mechanism import DpMechanism

SIGMA, C, B = 1.3, 0.7, 50


def zeros():
    return {"w": jnp.zeros((300, 300)), "b": jnp.zeros(1000)}


def mechanism(mode="dpsgd", sigma=SIGMA):
    return DpMechanism(mode, C, sigma, dataset_size=1000, batch_size=B, capacity=64, secret=3)


def privatize(mech, private, public=None, step=0):
    sums = {"private": private} | ({} if public is None else {"public": public})
    return mech.privatize(sums, jnp.asarray(mech.noise_key_data()), jnp.int32(step))


def test_noise_has_standard_deviation_sigma_C_over_B():
    values = np.concatenate([np.ravel(x) for x in jax.tree.leaves(privatize(mechanism(), zeros()))])
    expected = SIGMA * C / B
    # 91,000 samples: the sample std is within 1% of the truth with overwhelming probability.
    assert abs(values.std() / expected - 1) < 0.01
    assert abs(values.mean()) < 4 * expected / np.sqrt(values.size)


def test_noise_is_added_to_the_private_sum_then_all_divided_by_the_expected_batch_size():
    mech = dataclasses.replace(mechanism(), mode="maskdp", public_capacity=B)
    private = jax.tree.map(lambda x: x + 2.0, zeros())
    public = jax.tree.map(lambda x: x + 5.0, zeros())
    noisy = privatize(mech, private, public)
    noise_only = privatize(mech, zeros())
    for n, z in zip(jax.tree.leaves(noisy), jax.tree.leaves(noise_only)):
        np.testing.assert_allclose(n - z, 7.0 / B, rtol=1e-4)


def test_same_step_same_noise_next_step_fresh_noise():
    mech = mechanism()
    first, again = privatize(mech, zeros(), step=0), privatize(mech, zeros(), step=0)
    second = privatize(mech, zeros(), step=1)
    for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(first["w"], second["w"])
    # Leaves get independent noise, not copies of one draw.
    assert abs(np.corrcoef(np.ravel(first["w"])[:1000], first["b"])[0, 1]) < 0.15


def test_the_whole_128_bit_secret_reaches_the_noise_key():
    """Secrets that differ only above bit 64 give different keys and different noise."""
    low = 12345
    high = low + (1 << 100)
    assert not np.array_equal(noise.noise_key_data(low), noise.noise_key_data(high))
    a = privatize(dataclasses.replace(mechanism(), secret=low), zeros())
    b = privatize(dataclasses.replace(mechanism(), secret=high), zeros())
    assert not np.allclose(a["b"], b["b"])


def test_non_private_training_only_normalises():
    grads = {"w": jnp.arange(4.0)}
    out = privatize(mechanism("none", sigma=0.0), grads)
    np.testing.assert_array_equal(out["w"], jnp.arange(4.0) / B)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(noise_multiplier=-1.0), "noise_multiplier must be finite and ≥ 0"),
        (dict(mode="none"), "adds no noise: σ must be 0"),
        (dict(mode="sgd"), "unknown dp mode 'sgd'"),
        (dict(clip_norm=0.0), "clip_norm must be > 0"),
        (dict(sampling="shuffle"), "accounted for Poisson sampling only"),
        (dict(mode="maskdp"), "public batch of 50 needs public_capacity ≥ it"),
        (dict(batch_size=2000), "batch_size ≤ dataset_size"),
    ],
)
def test_invalid_mechanisms_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(mechanism(), **changes)
