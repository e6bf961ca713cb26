"""`jaxpriv compare`: runs the parity and speed comparisons and writes their tables.

Each part writes ``WORKDIR/<part>.json`` (the raw numbers) and all of them together
``WORKDIR/compare.md`` (the tables printed on the terminal).
"""

import json
import os
import warnings

import ml_collections

from jaxpriv.config import default_config as default_train_config

# Opacus' advice for production runs, and PyTorch's note that the inputs (pixels) need no
# gradient: true and expected here, so they are not repeated on every step.
QUIET = ("Secure RNG turned off", "Full backward hook is firing", "Optimal order is the")


def default_config() -> ml_collections.ConfigDict:
    """The comparison's settings; ``run`` is an ordinary ``jaxpriv train`` config.

    The speed table times ``run``'s model on one batch of ``run.train.batch_size``; the
    training table trains ``run`` with jaxpriv and with Opacus from the same initial weights,
    once per seed. The PyTorch twin has no MaskDP public view, so ``run`` uses the class-token
    head (``split_streams=False``).
    """
    run = default_train_config()
    run.name = "compare"
    run.data.frames = 2
    run.data.num_train = 2048
    run.data.num_test = 512
    run.model.kwargs = ml_collections.ConfigDict(
        {"width": 32, "depth": 2, "heads": 4, "mlp_dim": 64, "split_streams": False}
    )
    run.train.batch_size = 64
    run.train.microbatch_size = 64
    run.train.epochs = 8.0
    run.train.eval_batch_size = 512
    run.checkpoint.every_steps = 1000
    run.dp.mode = "dpsgd"
    run.dp.epsilon = 8.0
    run.dp.secret_seed = 0  # fixed, so that the comparison is reproducible; never in real runs

    config = ml_collections.ConfigDict()
    config.run = run
    config.seeds = (0, 1, 2)  # training parity: one jaxpriv and one Opacus run per seed
    config.repeats = 20  # speed: timed steps per step kind (the median is reported)
    config.gradient_models = ("vit", "video_vit", "resnet")  # gradient parity
    return config


def _gradients(config, workdir, progress):
    from jaxpriv.compare import gradients

    del workdir, progress
    results = [gradients.gradient_parity(name) for name in config.gradient_models]
    return results, gradients.parity_table(results)


def _accounting(config, workdir, progress):
    from jaxpriv.compare import accounting

    del config, workdir, progress
    rows = accounting.accounting_parity()
    return rows, accounting.format_accounting_table(rows)


def _speed(config, workdir, progress):
    from jaxpriv.compare import speed

    del workdir, progress
    result = speed.speed_comparison(config.run, config.repeats)
    return result, speed.format_speed_table(result)


def _training(config, workdir, progress):
    from jaxpriv.compare import training

    rows = training.training_parity(
        config.run, config.seeds, os.path.join(workdir, "training"), progress=progress
    )
    return rows, training.format_training_table(rows)


TITLES = {
    "gradients": (
        "Gradient parity (per-example clipped gradients and the summed update)",
        _gradients,
    ),
    "accounting": ("Accounting parity (ε)", _accounting),
    "speed": ("Speed (one train step)", _speed),
    "training": ("Training parity (DP-SGD, same config, same initial weights)", _training),
}
PARTS = tuple(TITLES)


def _plain(value):
    """JSON form of NumPy arrays and scalars (``tolist`` turns either into Python values)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def run(config: ml_collections.ConfigDict, parts, workdir: str, *, progress: bool = True) -> str:
    """Runs ``parts`` (a subset of ``PARTS``, in that order) and returns the Markdown report."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown comparison {sorted(unknown)}; choose from {PARTS}")
    os.makedirs(workdir, exist_ok=True)
    sections = []
    for part in (p for p in PARTS if p in parts):
        title, compute = TITLES[part]
        with warnings.catch_warnings():
            for message in QUIET:
                warnings.filterwarnings("ignore", message=message)
            result, table = compute(config, workdir, progress)
        with open(os.path.join(workdir, f"{part}.json"), "w") as f:
            json.dump(result, f, indent=1, default=_plain)
        sections.append(f"## {title}\n\n{table}\n")
    report = "\n".join(sections)
    with open(os.path.join(workdir, "compare.md"), "w") as f:
        f.write(report)
    return report
