"""The jitted train step: (clipped) gradient sum → privatize → optax update."""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxpriv.dp import clipping
from jaxpriv.train.parallel import DATA_AXIS, batch_sharding, replicated

PyTree = Any
MODES = ("none", "dpsgd", "maskdp")


class TrainState(NamedTuple):
    step: jnp.ndarray
    params: PyTree
    opt_state: PyTree


def make_loss_fn(model: nn.Module, pixels: str) -> clipping.LossFn:
    """Per-example cross-entropy on the full view, or on the public view (sensitive pixels dropped).

    The (public) sensitivity mask goes to the model in both views: mask-aware
    models keep their public stream independent of sensitive content. An optional
    ``absent`` pixel mask in the batch marks content that is not there at all (it
    builds the neighbouring dataset whose sensitive content is removed); it is
    dropped from both views.
    """

    def loss_fn(params, batch, public):
        mask, pixel_shape = batch["sensitive"].shape[1:], batch[pixels].shape[1:]
        if mask != pixel_shape[:-1]:
            raise ValueError(
                f"sensitive mask has shape {mask} but {pixels} is {pixel_shape}: "
                f"expected {pixel_shape[:-1]}"
            )
        drop = batch.get("absent")
        sensitive = batch["sensitive"].astype(bool)
        if public:
            drop = sensitive if drop is None else drop | sensitive
        logits = model.apply(params, batch[pixels], drop, sensitive)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])

    return loss_fn


def gradient_sum(
    loss_fn: clipping.LossFn,
    params: PyTree,
    batch: dict,
    *,
    mode: str,
    clip_norm: float,
    public_clip_norm: float | None,
    microbatch_size: int,
    unroll_microbatches: bool = False,
):
    """Σ over real examples of their (clipped) gradients, and summed statistics.

    ``unroll_microbatches``: see ``jaxpriv.dp.clipping.accumulate``.
    """
    if mode == "none":
        microbatch_sum = partial(clipping.nonprivate_microbatch_sum, loss_fn)
    elif mode in ("dpsgd", "maskdp"):
        microbatch_sum = partial(
            clipping.dp_microbatch_sum,
            loss_fn,
            clip_norm=clip_norm,
            public_clip_norm=public_clip_norm,
            maskdp=mode == "maskdp",
        )
    else:
        raise ValueError(f"unknown dp mode {mode!r}; choose one of {MODES}")
    return clipping.accumulate(
        microbatch_sum, params, batch, microbatch_size, unroll=unroll_microbatches
    )


def make_train_step(
    loss_fn: clipping.LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    **sum_kwargs,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns ``step(state, batch) -> (state, metrics)``, jitted with the state donated.

    Data-parallel over ``mesh`` (axis ``"data"``, one device or many, one host or many): each
    device sums the (clipped) gradients of its shard of the batch, ``psum`` adds the device sums,
    and ``optimizer`` runs once on the global sum. ``optimizer`` must start with
    ``jaxpriv.dp.noise.privatize_sum``, so the noise is drawn once, from one key, for the whole
    batch — never per device — and the sum is divided by the expected batch size. The state
    is replicated; the batch is sharded along its leading axis.
    """

    def device_sum(params, batch):
        return jax.lax.psum(gradient_sum(loss_fn, params, batch, **sum_kwargs), DATA_AXIS)

    global_sum = jax.shard_map(
        device_sum, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(), check_vma=False
    )

    def step(state: TrainState, batch: dict):
        grads, stats = global_sum(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = jnp.sum(batch["weight"] > 0)
        metrics = {k: v / jnp.maximum(count, 1) for k, v in stats.items()}
        metrics["batch_size"] = count
        return TrainState(state.step + 1, params, opt_state), metrics

    return jax.jit(
        step,
        donate_argnums=0,
        in_shardings=(replicated(mesh), batch_sharding(mesh)),
        out_shardings=replicated(mesh),
    )


def make_eval_step(model: nn.Module, pixels: str):
    """Returns jitted ``eval_step(params, batch) -> (number correct, number of real examples)``."""

    @jax.jit
    def eval_step(params, batch):
        logits = model.apply(params, batch[pixels], None, batch["sensitive"].astype(bool))
        real = batch["weight"] > 0
        correct = jnp.sum((jnp.argmax(logits, -1) == batch["label"]) & real)
        return correct, jnp.sum(real)

    return eval_step
