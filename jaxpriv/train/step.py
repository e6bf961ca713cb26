"""The jitted train step: clipped gradient sums → ``DpMechanism.privatize`` → optax update."""

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxpriv.dp import clipping
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.train.parallel import DATA_AXIS, batch_sharding, replicated

PyTree = Any


class TrainState(NamedTuple):
    step: jnp.ndarray
    params: PyTree
    opt_state: PyTree
    noise_key: jnp.ndarray  # uint32 key data of the DP noise (secret; see jaxpriv.dp.noise)


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


def make_train_step(
    mechanism: DpMechanism,
    loss_fn: clipping.LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    microbatch_size: int,
    unroll_microbatches: bool = False,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns ``step(state, batches) -> (state, metrics)``, jitted with the state donated.

    ``batches`` holds the batches ``mechanism.batch_names()`` names. Data-parallel over
    ``mesh`` (axis ``"data"``, one device or many, one host or many): each device sums the
    clipped gradients of its shard of each batch, ``psum`` adds the device sums, then
    ``mechanism.privatize`` adds the noise once, from the key in the state, and divides by B;
    ``optimizer`` turns that gradient into the update. The state is replicated; the batches
    are sharded along their leading axis. ``unroll_microbatches``: see
    ``jaxpriv.dp.clipping.accumulate``.

    Metrics: ``params_finite``; ``loss`` (non-private training) or ``public_loss`` (MaskDP's
    public batch); and ``private_loss``, ``private_grad_norm``, ``private_clipped`` (means over
    the private batch of a DP mode), which are outside the guarantee: log them only on request.
    """

    def device_sums(params, batches):
        sums = mechanism.gradient_sums(
            loss_fn, params, batches, microbatch_size=microbatch_size, unroll=unroll_microbatches
        )
        counts = {name: jnp.sum(batch["weight"] > 0) for name, batch in batches.items()}
        return jax.lax.psum((sums, counts), DATA_AXIS)

    global_sums = jax.shard_map(
        device_sums, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(), check_vma=False
    )

    def step(state: TrainState, batches: dict):
        (sums, stats), counts = global_sums(state.params, batches)
        grads = mechanism.privatize(sums, state.noise_key, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]).all()
        prefix = {"private": "private_" if mechanism.private else "", "public": "public_"}
        metrics = {"params_finite": finite} | {
            prefix[name] + key: total / jnp.maximum(counts[name], 1)
            for name, batch_stats in stats.items()
            for key, total in batch_stats.items()
        }
        return TrainState(state.step + 1, params, opt_state, state.noise_key), metrics

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
