"""Gaussian noise for the private sum, drawn from a secret key passed to jitted code as data."""

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
KEY_IMPL = "rbg"  # 128-bit keys: the whole secret reaches the noise


def noise_key_data(secret: int) -> np.ndarray:
    """The uint32[4] data of the noise key derived from the ``secret`` (≥ 128 bits).

    Kept as an array (state of the train step), never a compile-time constant, so the secret
    never reaches a compiled program or the persistent compilation cache.
    """
    return np.random.SeedSequence([secret, 0]).generate_state(4, np.uint32)


def step_key(key_data: jax.Array, step: jax.Array) -> jax.Array:
    """The key of ``step``'s noise: the same for every device, a fresh one for every step."""
    return jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=KEY_IMPL), step)


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
