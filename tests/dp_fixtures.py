"""Tiny models and batches shared by the DP tests; compiled sums are cached across tests."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxpriv.models import ResNet, ViT
from jaxpriv.train.step import gradient_sum, make_loss_fn

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


_jitted_sum = jax.jit(
    gradient_sum,
    static_argnames=(
        "loss_fn",
        "mode",
        "clip_norm",
        "public_clip_norm",
        "microbatch_size",
        "unroll_microbatches",
    ),
)


def dp_sum(name, batch, mode, microbatch_size=2, public_clip_norm=C, unroll=False):
    """The flattened pre-noise gradient sum of ``batch`` and its statistics."""
    loss_fn, params = setup(name)
    grads, stats = _jitted_sum(
        loss_fn,
        params,
        batch,
        mode=mode,
        clip_norm=C,
        public_clip_norm=public_clip_norm,
        microbatch_size=microbatch_size,
        unroll_microbatches=unroll,
    )
    return flat(grads), stats


def take(batch, i):
    return jax.tree.map(lambda x: x[i], batch)


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
