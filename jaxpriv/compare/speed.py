"""Speed side by side: median train-step time of jaxpriv and of PyTorch / Opacus.

One process, one model (the PyTorch twin starts from the same weights), one fixed
batch, the same optimizer. Every step is a full update: jaxpriv's jitted step
(non-private, DP-SGD, MaskDP), PyTorch's forward/backward/step, and Opacus'
``make_private`` in its per-sample-gradient ``hooks`` mode and in its ``ghost``
clipping mode (per-example norms without per-example gradients, two backward
passes). The DP steps all add noise with σ = 1. The runners take turns, so drift
in the machine's speed affects them alike.
"""

import copy
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from jaxpriv.compare.training import torch_optimizer
from jaxpriv.data import synthetic
from jaxpriv.models import build_model
from jaxpriv.train import benchmark

JAX_RUNNERS = {"none": "jaxpriv non-private", "dpsgd": "jaxpriv DP-SGD", "maskdp": "jaxpriv MaskDP"}
TORCH_RUNNERS = ("PyTorch non-private", "Opacus DP-SGD (hooks)", "Opacus DP-SGD (ghost clipping)")


def torch_runners(module, batch: dict, pixels: str, run: ml_collections.ConfigDict) -> dict:
    """No-argument callables, one train step each, for PyTorch and for Opacus' two modes."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.from_numpy(batch[pixels])
    y = torch.from_numpy(batch["label"].astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def runner(model, optimizer, criterion) -> Callable[[], None]:
        def run_step():
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()

        run_step()  # warm-up, like the jitted steps' compilation
        return run_step

    def private(grad_sample_mode: str):
        model = copy.deepcopy(module)
        made = PrivacyEngine().make_private(
            module=model,
            optimizer=torch_optimizer(model.parameters(), run.train),
            criterion=loss_fn,
            data_loader=DataLoader(TensorDataset(x, y), batch_size=len(y)),
            noise_multiplier=1.0,
            max_grad_norm=run.dp.clip_norm,
            poisson_sampling=False,
            grad_sample_mode=grad_sample_mode,
        )
        model, optimizer = made[:2]
        criterion = made[2] if grad_sample_mode == "ghost" else loss_fn
        return runner(model, optimizer, criterion)

    plain = copy.deepcopy(module)
    return {
        TORCH_RUNNERS[0]: runner(plain, torch_optimizer(plain.parameters(), run.train), loss_fn),
        TORCH_RUNNERS[1]: private("hooks"),
        TORCH_RUNNERS[2]: private("ghost"),
    }


def speed_comparison(run: ml_collections.ConfigDict, repeats: int) -> dict:
    """Median step times (ms) of every runner on one batch of ``run.train.batch_size``."""
    import torch

    from jaxpriv.compare.torch_models import from_flax

    batch, pixels = benchmark.synthetic_batch(run, run.train.batch_size)
    mesh = benchmark.widest_mesh(run.train.batch_size)  # every core, as PyTorch's threads
    runners = {
        name: benchmark.jax_runner(run, mode, batch, pixels, mesh)
        for mode, name in JAX_RUNNERS.items()
    }
    model = build_model(run.model.name, synthetic.NUM_CLASSES, **run.model.kwargs)
    params = model.init(jax.random.key(run.seed), batch[pixels][:1])
    runners.update(torch_runners(from_flax(model, params), batch, pixels, run))
    times = benchmark.median_times(runners, repeats)
    return {
        "model": run.model.name,
        "model_kwargs": dict(run.model.kwargs),
        "batch_size": run.train.batch_size,
        "microbatch_size": run.train.microbatch_size,
        "optimizer": run.train.optimizer,
        "repeats": repeats,
        "device": jax.devices()[0].device_kind,
        "jax_devices": mesh.size,
        "torch_threads": torch.get_num_threads(),
        "median_ms": {name: 1000 * t for name, t in times.items()},
        "jaxpriv_dpsgd_over_opacus_hooks": times[JAX_RUNNERS["dpsgd"]] / times[TORCH_RUNNERS[1]],
    }


def format_speed_table(result: dict) -> str:
    """Markdown table: median step time and its ratio to each framework's non-private step."""
    times = result["median_ms"]
    jax_base, torch_base = times[JAX_RUNNERS["none"]], times[TORCH_RUNNERS[0]]
    lines = [
        f"{result['model']} {result['model_kwargs']}, batch {result['batch_size']}, "
        f"{result['device']}, jaxpriv on {result['jax_devices']} device(s), "
        f"{result['torch_threads']} PyTorch threads, "
        f"median of {result['repeats']} steps",
        "",
        "| step | median (ms) | / jaxpriv non-private | / PyTorch non-private |",
        "|---|---|---|---|",
    ]
    for name, ms in times.items():
        lines.append(f"| {name} | {ms:.1f} | {ms / jax_base:.2f} | {ms / torch_base:.2f} |")
    lines.append("")
    lines.append(
        "jaxpriv DP-SGD step / Opacus hooks DP-SGD step: "
        f"{result['jaxpriv_dpsgd_over_opacus_hooks']:.2f}"
    )
    return "\n".join(lines)
