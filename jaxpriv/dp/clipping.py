"""Per-example gradients, clipping and micro-batched sums: the pre-noise parts of a DP step.

Notation (see ``jaxpriv.dp.mechanism``): ``g_i`` is example i's gradient on its full view,
``p_i`` on its public view (sensitive pixels removed), ``r_i = g_i − p_i``.

* ``private_microbatch_sum``: Σ_i clip(g_i, C) (DP-SGD) or Σ_i clip(r_i, C) (MaskDP) over the
  private batch — the only sums that touch private content, each term of norm ≤ C.
* ``public_microbatch_sum``: Σ_j clip(p_j, C_pub) over MaskDP's public batch; with C_pub = ∞ one
  batched gradient of the public-view loss, no per-example work.
* ``nonprivate_microbatch_sum``: the plain batched gradient (non-private training).

Per-example clipping runs one of two ways (``method``), with the same result up to float
rounding: ``"vmap"`` forms each example's whole gradient with ``jax.vmap``; ``"ghost"``
(``jaxpriv.dp.ghost``) runs one batched backward pass and forms per-example gradients only
where that is cheapest, layer by layer.

``accumulate`` adds a micro-batch sum over a batch: memory is set by the micro-batch, not by the
logical batch. ``weight`` is 1 for real examples and 0 for padding, which contributes exactly
nothing.
"""

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxpriv.dp import ghost

PyTree = Any
Batch = dict[str, jnp.ndarray]
# (params, batch, public) -> per-example losses [B] on the full view, or on the public view
# (sensitive pixels removed) when public is True.
LossFn = Callable[[PyTree, Batch, bool], jnp.ndarray]
METHODS = ("vmap", "ghost")


def clip_by_global_norm(tree: PyTree, max_norm: float) -> tuple[PyTree, jnp.ndarray]:
    """``tree · min(1, C / ‖tree‖)`` with ‖·‖ the L2 norm over all leaves; returns (clipped, norm)."""
    norm = optax.tree.norm(tree)
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
    return jax.tree.map(lambda x: x * scale.astype(x.dtype), tree), norm


def example_grad(loss_fn: LossFn, params: PyTree, example: Batch, public: bool):
    """(loss, gradient) of one example (arrays without batch axis) on its full or public view."""
    batched = jax.tree.map(lambda x: x[None], example)
    return jax.value_and_grad(lambda p: loss_fn(p, batched, public)[0])(params)


def private_objective(loss_fn: LossFn, batch: Batch, maskdp: bool):
    """params -> (the per-example losses whose gradients are clipped [B], the full-view losses
    [B]): ℓ_full for DP-SGD; ℓ_full − ℓ_public for MaskDP, whose gradient is the residual
    r_i = g_i − p_i in one backward pass through both views."""

    def objective(p):
        full = loss_fn(p, batch, False)
        return (full - loss_fn(p, batch, True) if maskdp else full), full

    return objective


def private_contribution(
    loss_fn: LossFn, params: PyTree, example: Batch, *, clip_norm: float, maskdp: bool
):
    """One example's term of the private sum and its statistics: clip(g_i, C) for DP-SGD,
    clip(g_i − p_i, C) for MaskDP — exactly zero for an example without sensitive pixels (its
    two views are the same input; rounding in differently compiled paths must not leak)."""
    objective = private_objective(loss_fn, jax.tree.map(lambda x: x[None], example), maskdp)

    def example_objective(p):
        clipped_loss, full = objective(p)
        return clipped_loss[0], full[0]

    (_, loss), grad = jax.value_and_grad(example_objective, has_aux=True)(params)
    if maskdp:
        has_sensitive = jnp.any(example["sensitive"])
        grad = jax.tree.map(lambda g: jnp.where(has_sensitive, g, 0), grad)
    clipped, norm = clip_by_global_norm(grad, clip_norm)
    return clipped, {
        "loss": loss,
        "grad_norm": norm,
        "clipped": (norm > clip_norm).astype(jnp.float32),
    }


def public_contribution(loss_fn: LossFn, params: PyTree, example: Batch, *, clip_norm: float):
    """clip(p_j, C_pub) of one example of the public batch, and its public-view loss."""
    loss, grad = example_grad(loss_fn, params, example, public=True)
    return clip_by_global_norm(grad, clip_norm)[0], {"loss": loss}


def _weighted_sum(per_example: Callable, batch: Batch):
    """Σ_i weight_i · per_example(example_i) over a micro-batch (vmap), statistics summed alike."""
    contributions, stats = jax.vmap(per_example)(batch)
    real = batch["weight"] > 0
    return _summed(real, contributions), _summed(real, stats)


def _summed(real: jnp.ndarray, tree: PyTree) -> PyTree:
    """Σ over the leading axis of each leaf of ``tree``, over the rows where ``real`` is True."""
    return jax.tree.map(
        lambda x: jnp.sum(jnp.where(real.reshape(-1, *[1] * (x.ndim - 1)), x, 0), axis=0), tree
    )


def private_microbatch_sum(
    loss_fn: LossFn,
    params: PyTree,
    batch: Batch,
    *,
    clip_norm: float,
    maskdp: bool,
    method: str = "vmap",
):
    """Σ_i weight_i · ``private_contribution`` over one micro-batch, with summed statistics."""
    if method == "ghost":
        real = batch["weight"] > 0
        keep = real & _has_sensitive(batch) if maskdp else real
        objective = private_objective(loss_fn, batch, maskdp)
        total, norms, losses = ghost.clipped_sum(objective, params, clip_norm=clip_norm, keep=keep)
        return total, _summed(
            real, {"loss": losses, "grad_norm": norms, "clipped": (norms > clip_norm) * 1.0}
        )
    return _weighted_sum(
        functools.partial(
            private_contribution, loss_fn, params, clip_norm=clip_norm, maskdp=maskdp
        ),
        batch,
    )


def _has_sensitive(batch: Batch) -> jnp.ndarray:
    """[B] bool: whether each example has a sensitive pixel."""
    sensitive = batch["sensitive"]
    return jnp.any(sensitive.reshape(sensitive.shape[0], -1), axis=1)


def nonprivate_microbatch_sum(
    loss_fn: LossFn, params: PyTree, batch: Batch, *, public: bool = False
):
    """Gradient of Σ_i weight_i · loss_i for one micro-batch on the full (or public) view,
    computed batched (no per-example work), and the summed loss."""

    def weighted_loss(p):
        losses = jnp.where(batch["weight"] > 0, loss_fn(p, batch, public), 0)
        return jnp.sum(losses)

    loss, grads = jax.value_and_grad(weighted_loss)(params)
    return grads, {"loss": loss}


def public_microbatch_sum(
    loss_fn: LossFn,
    params: PyTree,
    batch: Batch,
    *,
    clip_norm: float | None,
    method: str = "vmap",
):
    """Σ_j weight_j · clip(p_j, C_pub) over one micro-batch of the public batch, and the summed
    public-view loss; ``clip_norm=None`` (C_pub = ∞) is one batched gradient."""
    if clip_norm is None:
        return nonprivate_microbatch_sum(loss_fn, params, batch, public=True)
    if method == "ghost":
        real = batch["weight"] > 0

        def objective(p):
            public = loss_fn(p, batch, True)
            return public, public

        total, _, losses = ghost.clipped_sum(objective, params, clip_norm=clip_norm, keep=real)
        return total, _summed(real, {"loss": losses})
    return _weighted_sum(
        functools.partial(public_contribution, loss_fn, params, clip_norm=clip_norm), batch
    )


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
