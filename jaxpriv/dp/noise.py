"""Gaussian noise on the clipped sum, as an optax ``GradientTransformation``."""

import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def gaussian_noise(key: jax.Array, like: PyTree, stddev: float | jnp.ndarray) -> PyTree:
    """Independent N(0, stddev²) noise shaped like ``like``; the same key gives the same noise.

    One draw of all the values, cut into the leaves: one random-number kernel instead of one
    per leaf (XLA compiles a per-leaf draw of a ViT's parameters for seconds on CPU).
    """
    leaves, treedef = jax.tree.flatten(like)
    sizes = [x.size for x in leaves]
    flat = stddev * jax.random.normal(key, (sum(sizes),), jnp.float32)
    parts = jnp.split(flat, list(itertools.accumulate(sizes))[:-1])
    return treedef.unflatten(
        [part.reshape(x.shape).astype(x.dtype) for part, x in zip(parts, leaves)]
    )


class PrivatizeState(NamedTuple):
    key: jax.Array  # base key; step t uses fold_in(key, count)
    count: jnp.ndarray


def privatize_sum(
    *, clip_norm: float, noise_multiplier: float, expected_batch_size: float, seed: int = 0
) -> optax.GradientTransformation:
    """Turns a sum of clipped gradients into the DP mean ``(Σ + N(0, σ²C²)) / B``.

    ``B`` is the expected batch size qN (a public constant, unlike the sampled
    size). Noise for update t comes from ``fold_in(key(seed), t)``: drawn once for
    the global batch and reproducible on resume. ``noise_multiplier=0`` just
    normalises (non-private training).
    """
    if clip_norm <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
        raise ValueError(
            "need clip_norm > 0, noise_multiplier ≥ 0 and expected_batch_size > 0, got "
            f"{clip_norm}, {noise_multiplier}, {expected_batch_size}"
        )
    stddev = noise_multiplier * clip_norm

    def init(params):
        del params
        return PrivatizeState(jax.random.key_data(jax.random.key(seed)), jnp.zeros([], jnp.int32))

    def update(updates, state, params=None):
        del params
        if noise_multiplier > 0:
            key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.count)
            updates = jax.tree.map(jnp.add, updates, gaussian_noise(key, updates, stddev))
        updates = jax.tree.map(lambda g: g / expected_batch_size, updates)
        return updates, PrivatizeState(state.key, state.count + 1)

    return optax.GradientTransformation(init, update)
