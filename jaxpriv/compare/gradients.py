"""Gradient parity of jaxpriv's DP-SGD with Opacus, on the PyTorch twins of the Flax models.

Both sides start from the same random Flax initialisation (copied into the twin by
``torch_models.from_flax``) and see the same random uint8 batch and labels:

* jaxpriv: ``clipping.private_contribution`` vmapped over the batch (DP-SGD) gives the clipped
  per-example gradients; the micro-batched private sum that ``DpMechanism.gradient_sums`` runs
  (``clipping.accumulate`` of ``private_microbatch_sum``), divided by B, the update;
* Opacus: ``GradSampleModule`` (hooks mode) gives the per-example gradients of the
  cross-entropy, clipped here as ``DPOptimizer`` clips them; the update is the ``.grad`` that
  ``DPOptimizer.pre_step()`` leaves with ``noise_multiplier=0`` and ``expected_batch_size=B``.

The clip factors differ in one detail: jaxpriv uses ``min(1, C/‖g‖)``, Opacus
``min(1, C/(‖g‖ + 1e-6))``. A clipped example (‖g‖ > C) therefore differs by the relative
amount ``1e-6/(‖g‖ + 1e-6) < 1e-6/C`` (≤ 1e-6 for C ≥ 1, up to 1e-5 at C = 0.1); an unclipped
one only if ``C − 1e-6 < ‖g‖ ≤ C``. Errors are relative to jaxpriv's values, with ‖·‖ the
global L2 norm over all parameters, compared leaf by leaf in the Flax layout.
"""

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np
import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer

from jaxpriv.compare.torch_models import from_flax, grads_to_flax
from jaxpriv.data import schema
from jaxpriv.dp import clipping
from jaxpriv.models import ResNet, VideoViT, ViT
from jaxpriv.train.step import make_loss_fn

PyTree = Any
# name -> (tiny Flax model, shape of one example's pixels)
MODELS = {
    "vit": (ViT(num_classes=4, patch=(4, 4), width=16, depth=1, heads=2, mlp_dim=24), (16, 16, 3)),
    "video_vit": (
        VideoViT(num_classes=4, patch=(2, 4, 4), width=16, depth=1, heads=2, mlp_dim=24),
        (2, 16, 16, 3),
    ),
    "resnet": (ResNet(num_classes=4, stage_features=(4, 8), groups=2), (16, 16, 3)),
}
OPACUS_CLIP_EPS = 1e-6  # DPOptimizer.clip_and_accumulate: C / (norm + 1e-6)


class Gradients(NamedTuple):
    """One framework's DP-SGD gradients of a batch, in the Flax parameter layout."""

    clipped: PyTree  # clipped per-example gradients, leaves [B, *leaf shape]
    norms: np.ndarray  # [B] per-example gradient norms before clipping
    clipped_fraction: float
    update: PyTree  # noise-free update: Σ_i clipped_i / B


def make_case(model_name: str, batch_size: int = 8, seed: int = 0):
    """(Flax model, params, batch): a random init and random uint8 pixels with labels.

    ``batch`` holds numpy arrays in jaxpriv's layout: ``"image" [B, H, W, 3]`` or
    ``"video" [B, T, H, W, 3]``, ``"label" [B]``, an all-public ``"sensitive"`` mask, ``"weight"``.
    """
    model, shape = MODELS[model_name]
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    batch = {
        schema.VIDEO if len(shape) == 4 else schema.IMAGE: pixels,
        "label": rng.integers(0, model.num_classes, batch_size).astype(np.int32),
        "sensitive": np.zeros(pixels.shape[:-1], bool),
        "weight": np.ones(batch_size, np.float32),
    }
    # The "rbg" key: XLA on CPU compiles the init's per-leaf threefry draws for seconds.
    return model, _init(model, jax.random.key(seed, impl="rbg"), pixels[:1]), batch


# Jitted with the (hashable) Flax model static and the clip norm traced: repeated comparisons of a
# model, at any clip norm, compile once. The models are tiny, so compilation dominates: without
# XLA's optimisations it is 2-3× faster, which changes rounding, not the functions compared.
_jit = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@partial(_jit, static_argnums=0)
def _init(model, key, pixels):
    return model.init(key, pixels)


@partial(_jit, static_argnums=0)
def _logits(model, params, pixels):
    return model.apply(params, pixels)


@partial(_jit, static_argnums=(0, 1))
def _contributions(model, pixels: str, params, batch, clip_norm):
    """``clipping.private_contribution`` (DP-SGD) vmapped over ``batch``: (clipped, stats)."""
    contribution = partial(
        clipping.private_contribution,
        make_loss_fn(model, pixels),
        clip_norm=clip_norm,
        maskdp=False,
    )
    return jax.vmap(contribution, in_axes=(None, 0))(params, batch)


@partial(_jit, static_argnums=(0, 1, 2))
def _update(model, pixels: str, microbatch_size: int, params, batch, clip_norm):
    """The micro-batched private sum of DP-SGD / B: the noise-free DP-SGD update."""
    microbatch_sum = partial(
        clipping.private_microbatch_sum,
        make_loss_fn(model, pixels),
        clip_norm=clip_norm,
        maskdp=False,
    )
    total, _ = clipping.accumulate(microbatch_sum, params, batch, microbatch_size)
    return jax.tree.map(lambda x: x / len(batch["label"]), total)


def median_norm(model, params, batch: dict) -> float:
    """The median of jaxpriv's per-example gradient norms: about half the batch is clipped."""
    _, stats = _contributions(model, schema.pixel_feature(batch), params, batch, np.float32(np.inf))
    return float(np.median(stats["grad_norm"]))


def jaxpriv_gradients(
    model, params, batch: dict, clip_norm: float, microbatch_size: int
) -> Gradients:
    """jaxpriv: ``private_contribution`` per example, the private sum / B."""
    pixels, clip_norm = schema.pixel_feature(batch), np.float32(clip_norm)
    clipped, stats = _contributions(model, pixels, params, batch, clip_norm)
    update = _update(model, pixels, microbatch_size, params, batch, clip_norm)
    return Gradients(
        clipped, np.asarray(stats["grad_norm"]), float(np.mean(stats["clipped"])), update
    )


def opacus_clip(grad_samples: dict, clip_norm: float):
    """Per-sample grads ``{name: [B, ...]}`` scaled by DPOptimizer's ``min(1, C/(‖g‖ + 1e-6))``;
    returns (clipped grads, unclipped norms ``[B]``)."""
    norms = torch.stack([g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples.values()], 1)
    norms = norms.norm(2, dim=1)
    factor = (clip_norm / (norms + OPACUS_CLIP_EPS)).clamp(max=1.0)
    return {n: torch.einsum("i,i...->i...", factor, g) for n, g in grad_samples.items()}, norms


def opacus_gradients(
    module: torch.nn.Module, params: PyTree, batch: dict, clip_norm: float
) -> Gradients:
    """Opacus on ``module``, the twin of the Flax model with ``params``; results in the Flax layout.

    Per-sample gradients from ``GradSampleModule`` (hooks mode) of the mean cross-entropy, clipped
    as ``DPOptimizer`` clips them (``opacus_clip``); the update is the ``.grad`` DPOptimizer
    leaves after ``pre_step()`` with ``noise_multiplier=0`` and ``expected_batch_size=B``
    (``loss_reduction="mean"``, Opacus' default, on both). The hooks are removed before returning.
    """
    pixels = torch.from_numpy(batch[schema.pixel_feature(batch)])
    labels = torch.from_numpy(batch["label"].astype(np.int64))
    sampled = GradSampleModule(module)
    try:
        optimizer = DPOptimizer(
            torch.optim.SGD(sampled.parameters(), lr=0.0),
            noise_multiplier=0.0,
            max_grad_norm=clip_norm,
            expected_batch_size=len(labels),
        )
        with warnings.catch_warnings():  # the first layer's input (pixels) needs no gradient
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            F.cross_entropy(sampled(pixels), labels).backward()
        grad_samples = {n: p.grad_sample.clone() for n, p in module.named_parameters()}
        optimizer.pre_step()
        update = {n: p.grad.clone() for n, p in module.named_parameters()}
    finally:
        sampled.cleanup()
    clipped, norms = opacus_clip(grad_samples, clip_norm)
    return Gradients(
        grads_to_flax(module, clipped, params),
        norms.numpy(),
        float(np.mean(norms.numpy() > clip_norm)),
        grads_to_flax(module, update, params),
    )


def global_norms(tree) -> np.ndarray:
    """L2 norms ``[B]`` over all leaves of a pytree whose leaves are ``[B, ...]`` (in float64)."""
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
    return np.sqrt(sum(np.sum(x.reshape(len(x), -1) ** 2, axis=1) for x in leaves))


def relative_errors(actual, expected) -> np.ndarray:
    """``‖actual_i − expected_i‖ / ‖expected_i‖`` ``[B]`` for pytrees of ``[B, ...]`` leaves."""
    diff = jax.tree.map(lambda a, e: np.asarray(a, np.float64) - np.asarray(e), actual, expected)
    return global_norms(diff) / global_norms(expected)


def relative_error(actual, expected) -> float:
    """``‖actual − expected‖ / ‖expected‖`` over all leaves of two pytrees."""

    def batch_of_one(tree):
        return jax.tree.map(lambda x: np.asarray(x)[None], tree)

    return float(relative_errors(batch_of_one(actual), batch_of_one(expected))[0])


def gradient_parity(
    model_name: str,
    *,
    batch_size: int = 8,
    clip_norm: float | None = None,
    seed: int = 0,
    microbatch_size: int = 4,
    module: torch.nn.Module | None = None,
) -> dict:
    """Compares jaxpriv's DP-SGD gradients of ``MODELS[model_name]`` with Opacus' on its twin.

    ``clip_norm=None``: the median of jaxpriv's per-example gradient norms, so that about half
    the examples are clipped. ``module``: the PyTorch model to compare, by default the twin of
    the Flax initialisation (``from_flax``); pass a faulty twin to see the check fail.

    Returns the largest relative errors over the batch of the logits (``logits_rel_error``),
    of the clipped per-example gradients (``example_rel_error``) and of their norms before
    clipping (``norm_rel_error``), the relative error of the update (``update_rel_error``),
    the per-example norms ``[B]`` before and after clipping on both sides (``jaxpriv_norms``,
    ``opacus_norms``, ``jaxpriv_clipped_norms``, ``opacus_clipped_norms``), the clipped
    fraction on both sides and the settings.
    """
    model, params, batch = make_case(model_name, batch_size, seed)
    if clip_norm is None:
        clip_norm = median_norm(model, params, batch)
    if module is None:
        module = from_flax(model, params)
    pixels = batch[schema.pixel_feature(batch)]
    with torch.no_grad():
        torch_logits = module(torch.from_numpy(pixels)).numpy()
    ours = jaxpriv_gradients(model, params, batch, clip_norm, microbatch_size)
    theirs = opacus_gradients(module, params, batch, clip_norm)
    return {
        "model": model_name,
        "batch_size": batch_size,
        "clip_norm": clip_norm,
        "logits_rel_error": float(
            np.max(relative_errors(torch_logits, _logits(model, params, pixels)))
        ),
        "example_rel_error": float(np.max(relative_errors(theirs.clipped, ours.clipped))),
        "norm_rel_error": float(np.max(np.abs(theirs.norms - ours.norms) / ours.norms)),
        "update_rel_error": relative_error(theirs.update, ours.update),
        "jaxpriv_norms": ours.norms,
        "opacus_norms": theirs.norms,
        "jaxpriv_clipped_norms": global_norms(ours.clipped),
        "opacus_clipped_norms": global_norms(theirs.clipped),
        "jaxpriv_clipped_fraction": ours.clipped_fraction,
        "opacus_clipped_fraction": theirs.clipped_fraction,
    }


def parity_table(results: Sequence[dict]) -> str:
    """A Markdown table of ``gradient_parity`` results, one row per model."""
    lines = [
        "| model | B | C | clipped | ‖g_i‖ | logits | per-example grads | update |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        norms = r["jaxpriv_norms"]
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['clip_norm']:.3g} "
            f"| {r['jaxpriv_clipped_fraction']:.2f} | {norms.min():.3g}–{norms.max():.3g} "
            f"| {r['logits_rel_error']:.1e} | {r['example_rel_error']:.1e} "
            f"| {r['update_rel_error']:.1e} |"
        )
    return "\n".join(lines)
