"""Sweeps: one training run per cell of a grid over train-config keys, resumable.

An experiment config file's ``get_config()`` starts from ``experiment_config()`` and sets:

- ``name``;
- ``base``: the training config every cell starts from (``config.default_config()`` with
  changes, or ``config.load_config("configs/….py")``);
- ``grid``: lists of values per dotted train-config key, built with ``grid({"dp.mode": [...],
  "dp.epsilon": [...], "seed": [0, 1]})``; the cells are their Cartesian product. A value is set
  like the command-line override ``--config.KEY=VALUE``, with the same typing and errors;
- ``irrelevant``: rules ``(key, value, keys)``: in cells whose config has ``key == value`` the
  grid values of ``keys`` do not matter, so those cells keep the base values there and run once
  instead of once per value. The default rule collapses the DP settings of non-private cells;
- ``report``: see ``jaxpriv.experiments.report``.

Overrides apply to the experiment config: ``--config.base.train.epochs=1``,
``--config.grid.seed=[0,1]``. Cell ``c`` trains in ``WORKDIR/cells/<c>/`` (``<c>`` spells its
grid values, e.g. ``dp.epsilon=2.0,dp.mode=dpsgd,seed=0``) and appends one line to
``WORKDIR/results.jsonl``: ``cell``, ``values`` (its grid values), ``config_sha256`` and the
final metrics record of ``loop.train``. A rerun skips the cells found there and resumes a
half-done cell from its checkpoint.
"""

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re

import ml_collections
import tensorflow_datasets as tfds
import tqdm

from jaxpriv import config as config_lib
from jaxpriv.dp import accounting
from jaxpriv.experiments import report
from jaxpriv.train import loop
from jaxpriv.train.metrics import JsonlWriter, read_jsonl

RESULTS = "results.jsonl"
# What the privacy settings change nothing about: non-private training.
NON_PRIVATE = (
    "dp.mode",
    "none",
    (
        "dp.epsilon",
        "dp.delta",
        "dp.noise_multiplier",
        "dp.clip_norm",
        "dp.public_clip_norm",
        "dp.accountant",
        "dp.neighboring",
    ),
)


def experiment_config() -> ml_collections.ConfigDict:
    """The default experiment: every key an experiment config file may set."""
    c = ml_collections.ConfigDict()
    c.name = "experiment"  # default workdir: runs/<name>
    c.base = config_lib.default_config()  # the training config of every cell
    c.grid = ml_collections.ConfigDict()  # use grid({...}); e.g. grid.dp.epsilon = [2.0, 8.0]
    c.irrelevant = [NON_PRIVATE]  # (key, value, keys) rules that collapse cells
    c.report = report.report_config()
    return c


def grid(axes: dict) -> ml_collections.ConfigDict:
    """The grid of ``{"dotted.key": [values]}``, nested like the train config."""
    nested = ml_collections.ConfigDict()
    for key, values in axes.items():
        *parents, leaf = key.split(".")
        node = nested
        for name in parents:
            if name not in node:
                node[name] = ml_collections.ConfigDict()
            node = node[name]
        node[leaf] = list(values)
    return nested


def load(path: str, overrides=()) -> ml_collections.ConfigDict:
    """The experiment config file at ``path`` with ``--config.KEY=VALUE`` overrides applied."""
    experiment = config_lib.load_config(path, overrides)
    reference = experiment_config()
    reference.base, reference.grid = experiment.base, experiment.grid  # checked per cell
    config_lib.check_known_keys(experiment, reference)
    return experiment


@dataclasses.dataclass(frozen=True)
class Cell:
    id: str
    values: dict  # grid key → value; keys made irrelevant are left out
    config: ml_collections.ConfigDict

    @functools.cached_property
    def sha256(self) -> str:
        """Digest of the settings that the cell's result depends on."""
        text = json.dumps(loop.fingerprint(self.config), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def axes(experiment: ml_collections.ConfigDict) -> dict:
    """Dotted grid key → list of values."""
    flat = {}

    def visit(node, prefix):
        for key, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                visit(value, f"{prefix}{key}.")
            elif isinstance(value, (list, tuple)) and value:
                flat[f"{prefix}{key}"] = list(value)
            else:
                raise ValueError(f"grid.{prefix}{key} must be a non-empty list, got {value!r}")

    visit(experiment.grid, "")
    return flat


def cells(experiment: ml_collections.ConfigDict) -> list[Cell]:
    """The distinct cells of the grid, in grid order; irrelevant values collapsed."""
    grid_axes = axes(experiment)
    planned = {}
    for combination in itertools.product(*grid_axes.values()):
        values = dict(zip(grid_axes, combination))
        values = _relevant(values, _cell_config(experiment.base, values), experiment.irrelevant)
        cell = Cell(cell_id(values), values, _cell_config(experiment.base, values))
        if cell.id in planned and planned[cell.id].values != values:
            raise ValueError(f"two grid cells share the id {cell.id!r}; make their values differ")
        planned.setdefault(cell.id, cell)
    _check_report(experiment.report, grid_axes)
    return list(planned.values())


def cell_id(values: dict) -> str:
    """A readable folder name: ``key=value`` pairs joined by commas."""
    return ",".join(re.sub(r"[^\w.=+-]", "-", f"{k}={v}") for k, v in values.items()) or "base"


def _cell_config(base: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    config = copy.deepcopy(base)
    for key, value in values.items():
        try:
            config_lib.apply_override(config, f"{key}={value}")
        except ValueError as error:
            raise ValueError(f"experiment grid: {error}") from error
    config.name = cell_id(values)
    return config


def _relevant(values: dict, config: ml_collections.ConfigDict, rules) -> dict:
    """``values`` without the keys that a rule matching ``config`` declares irrelevant."""
    dropped = set()
    for key, value, keys in rules:
        try:
            current = functools.reduce(lambda node, name: node[name], key.split("."), config)
        except KeyError as error:
            raise ValueError(f"experiment irrelevant: unknown config key {key!r}") from error
        if current == value:
            dropped.update(keys)
    return {k: v for k, v in values.items() if k not in dropped}


def _check_report(options: ml_collections.ConfigDict, grid_axes: dict) -> None:
    key = options.compare_key
    if not key:
        return
    if key not in grid_axes:
        raise ValueError(f"report.compare_key={key!r} is not a grid key ({', '.join(grid_axes)})")
    choices = [str(value) for value in grid_axes[key]]
    if options.reference not in choices:
        raise ValueError(
            f"report.reference={options.reference!r} is not a value of the grid key {key!r} "
            f"({', '.join(choices)})"
        )


def finished(workdir: str, planned: list[Cell]) -> dict:
    """Cell id → result line of the planned cells in ``workdir/results.jsonl``."""
    path = os.path.join(workdir, RESULTS)
    by_id = {cell.id: cell for cell in planned}
    done = {}
    for row in read_jsonl(path) if os.path.exists(path) else []:
        cell = by_id.get(row["cell"])
        if cell is None:
            continue
        if row["config_sha256"] != cell.sha256:
            raise ValueError(
                f"{path} holds a result of cell {cell.id!r} trained with a different config; "
                "use another --workdir, or delete that line and the cell's folder to redo it"
            )
        done[cell.id] = row
    return done


def run(experiment: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> str:
    """Trains the cells not finished yet, then writes the report; returns its Markdown table."""
    planned = cells(experiment)
    done = finished(workdir, planned)
    pending = [cell for cell in planned if cell.id not in done]
    writer = JsonlWriter(os.path.join(workdir, RESULTS))
    bar = tqdm.tqdm(
        pending,
        initial=len(done),
        total=len(planned),
        desc=experiment.name,
        unit="cell",
        disable=not progress,
    )
    for cell in bar:
        bar.set_postfix_str(cell.id)
        record = loop.train(cell.config, os.path.join(workdir, "cells", cell.id), progress=progress)
        writer.write(
            {"cell": cell.id, "values": cell.values, "config_sha256": cell.sha256, **record}
        )
    done = finished(workdir, planned)
    return report.write(experiment, [done[cell.id] for cell in planned], workdir)


def dataset_size(data: ml_collections.ConfigDict) -> int:
    """Training examples of the configured dataset, read without loading any data."""
    if data.name == "synthetic":
        return data.num_train
    folder = os.path.expanduser(data.name)
    if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
        raise FileNotFoundError(
            f"data.name={data.name!r} is neither 'synthetic' nor a prepared TFDS dataset folder "
            "(the folder holding dataset_info.json)"
        )
    return tfds.builder_from_directory(folder).info.splits["train"].num_examples


def describe(experiment: ml_collections.ConfigDict, workdir: str) -> str:
    """The planned cells as a Markdown table: dataset size, q, steps, σ, ε and status."""
    planned = cells(experiment)
    done = finished(workdir, planned)
    lines = [
        f"{experiment.name}: {len(planned)} cells, {len(done)} done, in {workdir}",
        "| cell | N | q | steps | σ | ε | δ | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in planned:
        dp = cell.config.dp
        # The micro-batch size changes only the physical batch shape, not σ or the steps.
        plan = loop.plan_run(cell.config, dataset_size(cell.config.data), microbatch_size=1)
        eps = planned_epsilon(dp, plan)
        lines.append(
            f"| {cell.id} | {plan.dataset_size} | {plan.sampling_rate:.4g} | {plan.steps} | "
            f"{plan.noise_multiplier:.4f} | {'∞' if eps is None else f'{eps:.4f}'} | "
            f"{dp.delta:g} | {'done' if cell.id in done else 'pending'} |"
        )
    return "\n".join(lines)


def planned_epsilon(dp: ml_collections.ConfigDict, plan: loop.Plan) -> float | None:
    """ε that the whole schedule of ``plan`` spends; None for non-private training."""
    if plan.noise_multiplier == 0:
        return None
    return accounting.epsilon(
        noise_multiplier=plan.noise_multiplier,
        sampling_rate=plan.sampling_rate,
        steps=plan.steps,
        **loop.accounting_options(dp, plan.dataset_size),
    )
