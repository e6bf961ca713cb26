"""Tiny models and batches shared by the DP tests; compiled sums are cached across tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.models import ResNet, ViT
from jaxpriv.train.step import make_loss_fn

SIZE = 8
C = 0.1  # small enough that the tiny models' gradients get clipped


@functools.cache
def setup(name):
    """(loss_fn, params) of a tiny ViT ("vit", "vit_split") or ResNet on 8×8 images, 3 classes."""
    if name.startswith("vit"):
        model = ViT(
            num_classes=3,
            patch=(4, 4),
            width=8,
            depth=1,
            heads=2,
            mlp_dim=8,
            split_streams=name == "vit_split",
        )
    else:
        model = ResNet(num_classes=3, stage_features=(4, 8), groups=2)
    params = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3), jnp.uint8))
    return make_loss_fn(model, "image"), params


def make_batch(n=4, seed=0):
    """Random images whose left half has about half its pixels sensitive; the right half is public."""
    rng = np.random.default_rng(seed)
    sensitive = rng.random((n, SIZE, SIZE)) < 0.5
    sensitive[:, :, SIZE // 2 :] = False
    return {
        "image": jnp.asarray(rng.integers(0, 256, (n, SIZE, SIZE, 3)), jnp.uint8),
        "label": jnp.asarray(rng.integers(0, 3, n), jnp.int32),
        "sensitive": jnp.asarray(sensitive),
        "weight": jnp.ones(n, jnp.float32),
    }


def mechanism(mode, public_clip_norm=C, capacity=4, clipping="vmap"):
    """A ``DpMechanism`` of ``mode`` with clip norm C (σ = 1; the sums below are pre-noise)."""
    return DpMechanism(
        mode=mode,
        clip_norm=C,
        noise_multiplier=0.0 if mode == "none" else 1.0,
        dataset_size=64,
        batch_size=capacity,
        capacity=capacity,
        public_capacity=capacity,
        public_clip_norm=public_clip_norm,
        clipping_method=clipping,
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 4, 5))
def _sums(name, mech, params, batches, microbatch_size, unroll):
    loss_fn, _ = setup(name)
    return mech.gradient_sums(
        loss_fn, params, batches, microbatch_size=microbatch_size, unroll=unroll
    )


def dp_sums(
    name,
    batch,
    mode,
    microbatch_size=2,
    public_clip_norm=C,
    unroll=False,
    public=None,
    clipping="vmap",
):
    """The flattened pre-noise sums {"private", "public" (MaskDP)} and their statistics, with
    ``batch`` as the private batch and ``public`` (default: ``batch``) as MaskDP's public one,
    computed by the ``clipping`` method."""
    mech = mechanism(mode, public_clip_norm, len(batch["weight"]), clipping)
    batches = {"private": batch, "public": batch if public is None else public}
    batches = {k: batches[k] for k in mech.batch_names()}
    sums, stats = _sums(name, mech, setup(name)[1], batches, microbatch_size, unroll)
    return {k: flat(v) for k, v in sums.items()}, stats


def dp_sum(name, batch, mode, **kwargs):
    """The flattened private sum (what the noise is added to) and its statistics."""
    sums, stats = dp_sums(name, batch, mode, **kwargs)
    return sums["private"], stats["private"]


def take(batch, i):
    return jax.tree.map(lambda x: x[i], batch)


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
