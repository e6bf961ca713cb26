"""Book-keeping ("ghost") clipping: Σ_i clip(g_i, C) without a backward pass per example.

One batched forward and backward pass of Σ_i ℓ_i records, for every layer that holds
parameters, its input ``x_i`` and the loss gradient ``δ_i`` at its output (examples do not
interact, so the gradient of the sum at example i's output is example i's own). From them:

* Dense layers (``nn.Dense``, ``nn.DenseGeneral``), tokens flattened to ``x_i [T, d_in]``,
  ``δ_i [T, d_out]``: the kernel gradient is ``x_iᵀ δ_i``, the bias gradient ``Σ_t δ_it``. Its
  squared norm comes from ``x_iᵀ δ_i`` itself or, when ``T·(d_in + d_out) < d_in·d_out`` makes it
  cheaper, from ``⟨x_i x_iᵀ, δ_i δ_iᵀ⟩`` without forming it (the ghost norm, Li et al. 2022).
* Every other layer (LayerNorm, Conv, GroupNorm, position embedding, ...) falls back to its
  exact per-example gradients: the VJP of that layer alone, vmapped over the examples.

‖g_i‖² is the sum over layers; the clipped sum Σ_i c_i g_i with ``c_i = min(1, C/‖g_i‖)`` is
then assembled layer by layer from the same records (book-keeping, Bu et al. 2023), with no
second backward pass. A layer called several times (MaskDP's two views) sums its calls.

Requirements, checked: every parameter lives in a module without submodules whose ``__call__``
takes one array with the batch axis first; the loss is a sum of per-example terms (no batch
statistics: GroupNorm and LayerNorm, not BatchNorm).
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
# params -> (per-example losses to differentiate [B], per-example losses to report [B])
Objective = Callable[[PyTree], tuple[jnp.ndarray, jnp.ndarray]]


@dataclasses.dataclass(frozen=True)
class _Call:
    """One call of a parameter-holding layer: an unbound copy of it and where its params are."""

    module: nn.Module
    path: tuple[str, ...]


def _own_params(module: nn.Module) -> dict | None:
    """The parameter arrays ``module`` holds itself, or None when it holds none."""
    params = module.variables.get("params", {})
    arrays = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    if not arrays:
        return None
    if len(arrays) != len(params):
        raise ValueError(
            f"ghost clipping needs every parameter in a module without submodules, but "
            f"{'/'.join(module.path) or 'the root module'} holds {sorted(arrays)} beside "
            "submodules: move them into a module of their own, or use dp.clipping='vmap'"
        )
    return arrays


def _recorded(objective: Objective, params: PyTree, perturbations=None):
    """Runs ``objective(params)`` recording every parameter-holding layer call: returns
    (objective's outputs, [_Call], [input], [output]). With ``perturbations`` the k-th call's
    output gets ``perturbations[k]`` added (zeros: only their gradient is wanted)."""
    calls, inputs, outputs = [], [], []

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or _own_params(module) is None:
            return next_fun(*args, **kwargs)
        if len(args) != 1 or kwargs:
            raise ValueError(
                f"ghost clipping needs layers called on one array; {'/'.join(module.path)} "
                "was called otherwise: use dp.clipping='vmap'"
            )
        out = next_fun(*args)
        if perturbations is not None:
            out = out + perturbations[len(outputs)]
        calls.append(_Call(module.clone(parent=None), tuple(module.path)))
        inputs.append(args[0])
        outputs.append(out)
        return out

    with nn.intercept_methods(interceptor):
        result = objective(params)
    return result, calls, inputs, outputs


def _subtree(params: PyTree, path: tuple[str, ...]) -> dict:
    for name in ("params", *path):
        params = params[name]
    return params


def _dense_layer(module, layer_params, xs, deltas):
    """(‖per-example gradient‖² [B], scales [B] → Σ_i scale_i g_i) of a dense layer."""
    kernel = layer_params["kernel"]
    axis = getattr(module, "axis", -1)  # nn.Dense contracts the last axis
    axis = (axis,) if isinstance(axis, int) else tuple(axis)
    n_in = len(axis)
    if getattr(module, "batch_dims", ()):
        raise ValueError("ghost clipping does not support DenseGeneral with batch_dims")
    for x in xs:
        if sorted(a % x.ndim for a in axis) != list(range(x.ndim - n_in, x.ndim)):
            raise ValueError("ghost clipping needs a dense layer's contracted axes last")
    d_in, d_out = math.prod(kernel.shape[:n_in]), math.prod(kernel.shape[n_in:])
    batch = xs[0].shape[0]
    x = jnp.concatenate([x.reshape(batch, -1, d_in) for x in xs], axis=1)
    delta = jnp.concatenate([d.reshape(batch, -1, d_out) for d in deltas], axis=1)
    tokens = x.shape[1]
    if tokens * (d_in + d_out) < d_in * d_out:  # ghost norm
        gram = jnp.einsum("bsi,bti->bst", x, x) * jnp.einsum("bso,bto->bst", delta, delta)
        norm2 = jnp.sum(gram, axis=(1, 2))

        def kernel_sum(scale):
            return jnp.einsum("bti,bto->io", x * scale[:, None, None], delta)
    else:  # instantiated per-example kernel gradients
        grads = jnp.einsum("bti,bto->bio", x, delta)
        norm2 = jnp.sum(jnp.square(grads), axis=(1, 2))

        def kernel_sum(scale):
            return jnp.einsum("b,bio->io", scale, grads)

    bias = jnp.sum(delta, axis=1) if "bias" in layer_params else None
    if bias is not None:
        norm2 = norm2 + jnp.sum(jnp.square(bias), axis=1)

    def clipped_sum(scale):
        total = {"kernel": kernel_sum(scale).reshape(kernel.shape)}
        if bias is not None:
            total["bias"] = (scale @ bias).reshape(layer_params["bias"].shape)
        return total

    return norm2, clipped_sum


def _generic_layer(module, layer_params, xs, deltas):
    """(‖per-example gradient‖² [B], scales [B] → Σ_i scale_i g_i) of any layer, from its exact
    per-example gradients (the VJP of the layer alone, per example)."""

    def example_grad(x, delta):
        _, vjp = jax.vjp(lambda p: module.apply({"params": p}, x[None]), layer_params)
        return vjp(delta[None])[0]

    per_call = [jax.vmap(example_grad)(x, d) for x, d in zip(xs, deltas)]
    grads = jax.tree.map(lambda *g: sum(g), *per_call)
    norm2 = sum(
        jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) for g in jax.tree.leaves(grads)
    )
    return norm2, lambda scale: jax.tree.map(lambda g: jnp.tensordot(scale, g, 1), grads)


def _is_dense(module: nn.Module) -> bool:
    return isinstance(module, nn.Dense | nn.DenseGeneral)


def clipped_sum(
    objective: Objective, params: PyTree, *, clip_norm: float, keep: jnp.ndarray
) -> tuple[PyTree, jnp.ndarray, jnp.ndarray]:
    """(Σ_i keep_i · clip(g_i, C), per-example norms ‖g_i‖ [B], reported losses [B]).

    ``g_i`` is the gradient of ``objective(params)[0][i]``; ``keep`` (bool [B]) is False for the
    examples that must contribute exactly nothing (padding; MaskDP's examples without sensitive
    pixels): their output gradients are zeroed before any per-example term is formed.
    """
    shapes = jax.eval_shape(lambda p: _recorded(objective, p)[3], params)
    zeros = [jnp.zeros(s.shape, s.dtype) for s in shapes]
    calls: list[_Call] = []

    def total_loss(perturbations):
        (losses, reported), recorded, inputs, _ = _recorded(objective, params, perturbations)
        calls[:] = recorded
        return jnp.sum(jnp.where(keep, losses, 0)), (reported, inputs)

    (_, (reported, inputs)), deltas = jax.value_and_grad(total_loss, has_aux=True)(zeros)
    by_layer: dict[tuple[str, ...], list[int]] = {}
    for k, call in enumerate(calls):
        by_layer.setdefault(call.path, []).append(k)
    layers = {}
    for path, ks in by_layer.items():
        module = calls[ks[0]].module
        layer = _dense_layer if _is_dense(module) else _generic_layer
        layers[path] = layer(
            module,
            _subtree(params, path),
            [inputs[k] for k in ks],
            [jnp.where(_column(keep, deltas[k].ndim), deltas[k], 0) for k in ks],
        )
    # A ghost norm is a difference of rounded products: clamp it at 0 before the root.
    norms = jnp.sqrt(jnp.maximum(sum(norm2 for norm2, _ in layers.values()), 0.0))
    scale = jnp.where(
        keep, jnp.minimum(1.0, clip_norm / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny)), 0
    )
    total = {"params": jax.tree.map(jnp.zeros_like, params["params"])}  # unused layers: 0
    for path, (_, layer_sum) in layers.items():
        node, key = total, "params"
        for name in path:
            node, key = node[key], name
        node[key] = layer_sum(scale)
    return total, norms, reported


def _column(mask: jnp.ndarray, ndim: int) -> jnp.ndarray:
    return mask.reshape(-1, *[1] * (ndim - 1))
