"""Training parity: one DP-SGD config trained by jaxpriv and by Opacus, seed by seed.

Both start from the same weights (the Flax initialisation of ``config.seed``,
converted), see the same TFDS records, and use the same σ, C, sampling rate q,
number of steps, optimizer and learning-rate schedule (the optax schedule itself
drives PyTorch's learning rate). What differs is only the randomness of the
Poisson sampling and of the noise, so the accuracies must agree within seed noise.
"""

import os
import statistics
import time

import jax
import ml_collections
import numpy as np
import tqdm

from jaxpriv.data import pipeline, schema
from jaxpriv.models import build_model
from jaxpriv.train import loop


def read_split(source) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 [N, ...], labels int64 [N]) of a whole data source."""
    everything = pipeline.read_batch(source, np.arange(len(source)), np.ones(len(source)))
    pixels = schema.pixel_feature(everything)
    return everything[pixels], everything[schema.LABEL].astype(np.int64)


def torch_optimizer(parameters, train: ml_collections.ConfigDict):
    import torch

    if train.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=train.learning_rate)
    if train.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=train.learning_rate, momentum=train.momentum)
    raise ValueError(
        f"training parity supports train.optimizer adam or sgd, not {train.optimizer!r}"
    )


def opacus_train(config: ml_collections.ConfigDict, *, progress: bool = True) -> dict:
    """Trains ``config`` (DP-SGD) in PyTorch with Opacus; returns test accuracy, ε, time."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from jaxpriv.compare.torch_models import from_flax

    start = time.time()
    train_source, test_source, num_classes = loop.load_data(config.data)
    x_train, y_train = read_split(train_source)
    x_test, y_test = read_split(test_source)
    plan = loop.plan_run(config, len(x_train))
    model = build_model(config.model.name, num_classes, **config.model.kwargs)
    module = from_flax(model, model.init(jax.random.key(config.seed), x_train[:1]))
    optimizer = torch_optimizer(module.parameters(), config.train)
    torch.manual_seed(config.dp.secret_seed)  # Opacus samples and draws noise from it
    engine = PrivacyEngine(accountant="prv")
    module, optimizer, loader = engine.make_private(
        module=module,
        optimizer=optimizer,
        data_loader=DataLoader(
            TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
            batch_size=plan.batch_size,
        ),
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=config.dp.clip_norm,
        poisson_sampling=True,
    )
    schedule = loop.learning_rate_schedule(config.train, plan.steps)
    batches = _forever(loader)
    for step in tqdm.trange(plan.steps, desc=f"{config.name} (Opacus)", disable=not progress):
        x, y = next(batches)
        for group in optimizer.param_groups:
            group["lr"] = float(schedule(step))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
    return {
        "framework": "opacus",
        "seed": config.seed,
        "steps": plan.steps,
        "noise_multiplier": plan.noise_multiplier,
        "test_accuracy": _accuracy(module, x_test, y_test),
        "epsilon": engine.get_epsilon(config.dp.delta),
        "wall_time": time.time() - start,
    }


def _forever(loader):
    while True:
        yield from loader


def _accuracy(module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    import torch

    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = module(torch.from_numpy(x[i : i + batch_size]))
            correct += int((logits.argmax(-1).numpy() == y[i : i + batch_size]).sum())
    return correct / len(x)


def jaxpriv_train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True):
    """Trains ``config`` with ``jaxpriv train``; the same fields as ``opacus_train``."""
    start = time.time()
    record = loop.train(config, workdir, progress=progress)
    return {
        "framework": "jaxpriv",
        "seed": config.seed,
        "steps": record["step"],
        "noise_multiplier": record["noise_multiplier"],
        "test_accuracy": record["test_accuracy"],
        "epsilon": record["epsilon"],
        "wall_time": time.time() - start,
    }


def training_parity(
    run: ml_collections.ConfigDict, seeds, workdir: str, *, progress: bool = True
) -> list[dict]:
    """``run`` trained by jaxpriv and by Opacus for each seed (initialisation and DP randomness)."""
    rows = []
    for seed in seeds:
        config = run.copy_and_resolve_references()
        config.seed = seed
        config.dp.secret_seed = run.dp.secret_seed + seed
        rows.append(jaxpriv_train(config, os.path.join(workdir, f"seed{seed}"), progress=progress))
        rows.append(opacus_train(config, progress=progress))
    return rows


def summarize(rows: list[dict]) -> dict:
    """Mean and standard deviation of the test accuracy per framework, and their difference
    against the seed noise (the standard error of the difference of the two means)."""
    by_framework = {}
    for row in rows:
        by_framework.setdefault(row["framework"], []).append(row["test_accuracy"])
    summary = {
        name: {"mean": statistics.fmean(a), "std": statistics.stdev(a) if len(a) > 1 else 0.0}
        for name, a in by_framework.items()
    }
    n = {name: len(a) for name, a in by_framework.items()}
    jax_side, torch_side = summary["jaxpriv"], summary["opacus"]
    summary["difference"] = jax_side["mean"] - torch_side["mean"]
    summary["standard_error"] = (
        jax_side["std"] ** 2 / n["jaxpriv"] + torch_side["std"] ** 2 / n["opacus"]
    ) ** 0.5
    return summary


def format_training_table(rows: list[dict]) -> str:
    """Markdown table: one row per run, then the means and the difference."""
    lines = [
        "| framework | seed | steps | σ | ε | test accuracy | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['framework']} | {r['seed']} | {r['steps']} | {r['noise_multiplier']:.4f} "
            f"| {r['epsilon']:.3f} | {r['test_accuracy']:.3f} | {r['wall_time']:.0f} |"
        )
    s = summarize(rows)
    lines.append("")
    lines.append(
        f"jaxpriv {s['jaxpriv']['mean']:.3f} ± {s['jaxpriv']['std']:.3f}, "
        f"Opacus {s['opacus']['mean']:.3f} ± {s['opacus']['std']:.3f} (mean ± std over seeds); "
        f"difference {s['difference']:+.3f}, standard error {s['standard_error']:.3f}"
    )
    return "\n".join(lines)
