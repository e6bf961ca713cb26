"""The DP-SGD and MaskDP gradient: per-example gradients, clipping, micro-batched sums.

Notation as in DESIGN.md: ``g_i`` is example i's gradient on its full view,
``p_i`` on its public view (sensitive pixels removed), ``r_i = g_i − p_i``.

* DP-SGD contributes ``clip(g_i, C)`` per example.
* MaskDP contributes ``clip(p_i, C_pub) + clip(r_i, C)``: only the residual,
  the part that depends on sensitive pixels, needs the noise that
  ``jaxpriv.dp.noise`` adds. Removing one example's sensitive content makes its
  residual exactly zero, so the sum moves by at most C.
* Non-private training sums plain (batched) gradients.

The sum over a batch runs ``vmap`` over micro-batches inside ``lax.scan``, so
memory is set by the micro-batch, not by the logical batch; micro-batches made
only of padding (weight 0) are skipped. ``weight`` is 1 for real examples and 0
for padding, which contributes exactly nothing.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
Batch = dict[str, jnp.ndarray]
# (params, batch, public) -> per-example losses [B] on the full view, or on the public view
# (sensitive pixels removed) when public is True.
LossFn = Callable[[PyTree, Batch, bool], jnp.ndarray]


def clip_by_global_norm(tree: PyTree, max_norm: float) -> tuple[PyTree, jnp.ndarray]:
    """``tree · min(1, C / ‖tree‖)`` with ‖·‖ the L2 norm over all leaves; returns (clipped, norm)."""
    norm = optax.tree.norm(tree)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
    return jax.tree.map(lambda x: x * scale.astype(x.dtype), tree), norm


def example_grad(loss_fn: LossFn, params: PyTree, example: Batch, public: bool):
    """(loss, gradient) of one example (arrays without batch axis) on its full or public view."""
    batched = jax.tree.map(lambda x: x[None], example)
    return jax.value_and_grad(lambda p: loss_fn(p, batched, public)[0])(params)


def example_contribution(
    loss_fn: LossFn,
    params: PyTree,
    example: Batch,
    *,
    clip_norm: float,
    public_clip_norm: float | None,
    maskdp: bool,
):
    """One example's clipped contribution to the DP sum, with its loss and clipping statistics.

    ``public_clip_norm=None`` means C_pub = ∞ (public gradients unclipped); no privacy rests on it.
    """
    loss, full = example_grad(loss_fn, params, example, public=False)
    if not maskdp:
        clipped, norm = clip_by_global_norm(full, clip_norm)
        return clipped, _stats(loss, norm, clip_norm)
    _, public = example_grad(loss_fn, params, example, public=True)
    residual, norm = clip_by_global_norm(jax.tree.map(jnp.subtract, full, public), clip_norm)
    if public_clip_norm is not None:
        public, _ = clip_by_global_norm(public, public_clip_norm)
    return jax.tree.map(jnp.add, public, residual), _stats(loss, norm, clip_norm)


def _stats(loss, norm, clip_norm):
    return {"loss": loss, "grad_norm": norm, "clipped": (norm > clip_norm).astype(jnp.float32)}


def dp_microbatch_sum(loss_fn: LossFn, params: PyTree, batch: Batch, **clip_kwargs):
    """Σ_i weight_i · contribution_i and summed statistics for one micro-batch (vmap over examples)."""
    contributions, stats = jax.vmap(
        lambda ex: example_contribution(loss_fn, params, ex, **clip_kwargs)
    )(batch)
    real = batch["weight"] > 0

    def masked_sum(x):
        return jnp.sum(jnp.where(real.reshape(-1, *[1] * (x.ndim - 1)), x, 0), axis=0)

    return jax.tree.map(masked_sum, contributions), jax.tree.map(masked_sum, stats)


def nonprivate_microbatch_sum(loss_fn: LossFn, params: PyTree, batch: Batch):
    """Gradient of Σ_i weight_i · loss_i for one micro-batch, computed batched (no per-example work)."""

    def weighted_loss(p):
        losses = loss_fn(p, batch, False)
        return jnp.sum(jnp.where(batch["weight"] > 0, losses, 0)), losses

    (_, losses), grads = jax.value_and_grad(weighted_loss, has_aux=True)(params)
    loss = jnp.sum(jnp.where(batch["weight"] > 0, losses, 0))
    return grads, {"loss": loss}


def accumulate(
    microbatch_sum: Callable,
    params: PyTree,
    batch: Batch,
    microbatch_size: int,
    unroll: bool = False,
):
    """Adds ``microbatch_sum(params, mb)`` over consecutive micro-batches of ``batch``.

    The batch's leading size must be a multiple of ``microbatch_size``. By default a
    ``lax.scan`` runs the micro-batches (compiled once, whatever their number) and skips those
    whose weights are all zero (padding) at run time. ``unroll=True`` writes one copy of the
    micro-batch computation per micro-batch instead, with no loop and no skipping: XLA's CPU
    backend runs convolutions inside loop or conditional bodies about ten times slower than at
    the top level (jax-ml/jax#12868), which unrolling avoids for convolutional models.
    """
    size = batch["weight"].shape[0]
    if size % microbatch_size:
        raise ValueError(
            f"physical batch {size} is not a multiple of micro-batch {microbatch_size}"
        )
    micro = jax.tree.map(
        lambda x: x.reshape(size // microbatch_size, microbatch_size, *x.shape[1:]), batch
    )
    if unroll:
        parts = [
            microbatch_sum(params, jax.tree.map(lambda x, i=i: x[i], micro))
            for i in range(size // microbatch_size)
        ]
        return jax.tree.map(lambda *xs: functools.reduce(jnp.add, xs), *parts)
    zeros = jax.tree.map(
        jnp.zeros_like, jax.eval_shape(microbatch_sum, params, jax.tree.map(lambda x: x[0], micro))
    )

    def body(total, mb):
        part = jax.lax.cond(
            jnp.any(mb["weight"] > 0), lambda: microbatch_sum(params, mb), lambda: zeros
        )
        return jax.tree.map(jnp.add, total, part), None

    total, _ = jax.lax.scan(body, zeros, micro)
    return total
