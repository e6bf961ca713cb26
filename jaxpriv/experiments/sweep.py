"""Sweeps: one training run per cell of a grid over train-config keys, resumable.

An experiment config file's ``get_config()`` starts from ``experiment_config()`` and sets:

- ``name``;
- ``base``: the training config every cell starts from (``config.default_config()`` with
  changes, or ``config.load_config("configs/….py")``);
- ``grid``: lists of values per dotted train-config key, built with ``grid({"dp.mode": [...],
  "dp.epsilon": [...], "seed": [0, 1]})``; the cells are their Cartesian product. A value is set
  like the command-line override ``--config.KEY=VALUE``, with the same typing and errors;
- ``anonymize``: optionally, an anonymization stage before training (``anonymize.layout``;
  see ``jaxpriv.experiments.anonymized``); its keys are grid keys too, e.g.
  ``"anonymize.method": ["none", "blur", "maskout"]``;
- ``irrelevant``: rules ``(key, value, keys)``: in cells whose config has ``key == value`` the
  grid values of ``keys`` do not matter, so those cells keep the base values there and run once
  instead of once per value. The default rules collapse the DP settings of non-private cells
  and the region settings of cells that anonymize nothing;
- ``implied``: rules ``(key, value, settings)``: cells whose grid values have ``key == value``
  also take ``settings`` (``{key: value}``), which join their grid values. The default rule
  gives avatar cells full bodies (``anonymize.region=body``): an avatar replaces whole persons;
- ``report``: see ``jaxpriv.experiments.report``.

Overrides apply to the experiment config: ``--config.base.train.epochs=1``,
``--config.grid.seed=[0,1]``. Cell ``c`` trains in ``WORKDIR/cells/<c>/`` (``<c>`` spells its
grid values, e.g. ``dp.epsilon=2.0,dp.mode=dpsgd,seed=0``) and appends one line to
``WORKDIR/results.jsonl``: ``cell``, ``values`` (its grid values), ``config_sha256`` and the
final metrics record of ``loop.train``; the cell's workdir also gets TensorBoard event files and
its privacy report (``report.md``, `jaxpriv.report.card`). A rerun skips the cells found there and resumes a
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
from jaxpriv.data import pipeline as data_pipeline
from jaxpriv.dp import accounting
from jaxpriv.experiments import anonymized, report
from jaxpriv.report import card
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
        "dp.clipping",
    ),
)


def experiment_config() -> ml_collections.ConfigDict:
    """The default experiment: every key an experiment config file may set."""
    c = ml_collections.ConfigDict()
    c.name = "experiment"  # default workdir: runs/<name>
    c.base = config_lib.default_config()  # the training config of every cell
    c.grid = ml_collections.ConfigDict()  # use grid({...}); e.g. grid.dp.epsilon = [2.0, 8.0]
    c.anonymize = anonymized.stage_config()  # the anonymization stage; off unless layout is set
    c.irrelevant = [NON_PRIVATE, anonymized.KEEP_ONLY]  # (key, value, keys) rules to collapse cells
    c.implied = [anonymized.AVATAR_BODIES]  # (key, value, settings) rules: what a value implies
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
    config: ml_collections.ConfigDict  # the training config
    stage: ml_collections.ConfigDict  # the anonymization stage (``anonymize``)

    @functools.cached_property
    def sha256(self) -> str:
        """Digest of the settings that the cell's result depends on."""
        settings = {"train": loop.fingerprint(self.config)}
        if anonymized.enabled(self.stage):
            settings["anonymize"] = {k: v for k, v in self.stage.items() if k != "workers"}
        text = json.dumps(settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def data_folder(self) -> str:
        """Where the stage writes this cell's anonymized copy, relative to the workdir."""
        if anonymized.options(self.stage) == anonymized.options(anonymized.original(self.stage)):
            return os.path.join("data", anonymized.ORIGINAL)
        stage_values = {
            k.removeprefix(STAGE): v for k, v in self.values.items() if k.startswith(STAGE)
        }
        return os.path.join("data", cell_id(stage_values) if stage_values else "anonymized")


STAGE = "anonymize."


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
        values = _implied(dict(zip(grid_axes, combination)), experiment.implied)
        values = _relevant(values, _cell_config(experiment, values), experiment.irrelevant)
        cell = Cell(cell_id(values), values, *_cell_config(experiment, values))
        if cell.id in planned and planned[cell.id].values != values:
            raise ValueError(f"two grid cells share the id {cell.id!r}; make their values differ")
        planned.setdefault(cell.id, cell)
    _check_report(experiment.report, grid_axes)
    return list(planned.values())


def cell_id(values: dict) -> str:
    """A readable folder name: ``key=value`` pairs joined by commas."""
    return ",".join(re.sub(r"[^\w.=+-]", "-", f"{k}={v}") for k, v in values.items()) or "base"


def _cell_config(experiment: ml_collections.ConfigDict, values: dict) -> tuple:
    """(training config, anonymization stage) of the cell with grid ``values``."""
    config, stage = copy.deepcopy(experiment.base), copy.deepcopy(experiment.anonymize)
    for key, value in values.items():
        target = stage if key.startswith(STAGE) else config
        try:
            config_lib.apply_override(target, f"{key.removeprefix(STAGE)}={value}")
        except ValueError as error:
            raise ValueError(f"experiment grid: {error}") from error
    config.name = cell_id(values)
    return config, stage


def _lookup(configs: tuple, key: str):
    """The value of a grid key in a cell's (training config, stage)."""
    config, stage = configs
    node = stage if key.startswith(STAGE) else config
    return functools.reduce(lambda node, name: node[name], key.removeprefix(STAGE).split("."), node)


def _implied(values: dict, rules) -> dict:
    """``values`` with the settings that a rule matching them implies."""
    values = dict(values)
    for key, value, settings in rules:
        if values.get(key) == value:
            values.update(settings)
    return values


def _relevant(values: dict, configs: tuple, rules) -> dict:
    """``values`` without the keys that a rule matching the cell's configs declares irrelevant."""
    dropped = set()
    for key, value, keys in rules:
        try:
            current = _lookup(configs, key)
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
    check_test_splits(planned)
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
        config = with_stage_data(cell, workdir, progress=progress)
        cell_dir = os.path.join(workdir, "cells", cell.id)
        record = loop.train(config, cell_dir, progress=progress)
        writer.write(
            {"cell": cell.id, "values": cell.values, "config_sha256": cell.sha256, **record}
        )
        card.write_at_end(config, cell_dir)
    done = finished(workdir, planned)
    return report.write(experiment, [done[cell.id] for cell in planned], workdir)


def with_stage_data(cell: Cell, workdir: str, *, progress: bool = True):
    """The cell's training config; with a stage, on its anonymized copy (made here if missing)."""
    if not anonymized.enabled(cell.stage):
        return cell.config
    config = copy.deepcopy(cell.config)
    original = anonymized.original(cell.stage)
    test_dataset = anonymized.prepare(
        original, os.path.join(workdir, "data", anonymized.ORIGINAL), progress=progress
    )
    config.data.name = anonymized.prepare(
        cell.stage, os.path.join(workdir, cell.data_folder), progress=progress
    )
    config.data.test_name = test_dataset if cell.stage.test_on == "original" else ""
    return config


def check_test_splits(planned: list[Cell]) -> None:
    """Raises ValueError up front when a cell would have no test split to evaluate on, or
    configures the generation of a prepared dataset."""
    for cell in planned:
        if anonymized.enabled(cell.stage):
            anonymized.check_test_split(cell.stage)
            continue
        data = cell.config.data
        loop.check_generation_keys(data)
        name = data.test_name or data.name
        if name != "synthetic":  # the synthetic data is written with both splits
            data_pipeline.with_split(loop.dataset_folder(data, name), "test")


def dataset_size(cell: Cell, workdir: str) -> tuple[int, bool]:
    """(training examples of the cell, whether exact), read without loading or writing data."""
    if anonymized.enabled(cell.stage):
        summary = os.path.join(workdir, cell.data_folder, "summary.json")
        if not os.path.exists(summary):
            return anonymized.planned_train_size(cell.stage)
        with open(summary) as file:
            return json.load(file)["records"]["train"], True
    data = cell.config.data
    if data.name == "synthetic":  # not written yet, perhaps: its size is configured
        return data.num_train, True
    folder = loop.dataset_folder(data, data.name)
    return tfds.builder_from_directory(folder).info.splits["train"].num_examples, True


def describe(experiment: ml_collections.ConfigDict, workdir: str) -> str:
    """The planned cells as a Markdown table: dataset size, q, steps, σ, ε and status."""
    planned = cells(experiment)
    check_test_splits(planned)
    done = finished(workdir, planned)
    stage = experiment.anonymize
    lines = [f"{experiment.name}: {len(planned)} cells, {len(done)} done, in {workdir}"]
    if anonymized.enabled(stage):
        lines.append(anonymized.describe_input(stage))
    lines += [
        "| cell | N | q | steps | σ | ε | δ | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    estimated = False
    for cell in planned:
        dp = cell.config.dp
        size, exact = dataset_size(cell, workdir)
        estimated |= not exact
        # The micro-batch size changes only the physical batch shape, not σ or the steps.
        plan = loop.plan_run(cell.config, size, microbatch_size=1)
        eps = planned_epsilon(dp, plan)
        lines.append(
            f"| {cell.id} | {'' if exact else '≥'}{plan.dataset_size} | "
            f"{plan.sampling_rate:.4g} | {plan.steps} | {plan.noise_multiplier:.4f} | "
            f"{'∞' if eps is None else f'{eps:.4f}'} | {dp.delta:g} | "
            f"{'done' if cell.id in done else 'pending'} |"
        )
    if estimated:
        lines.append(
            "≥: at least one clip per video; the exact N (and so q, σ) is known once the videos "
            "are anonymized. Set anonymize.max_clips for an exact plan."
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
