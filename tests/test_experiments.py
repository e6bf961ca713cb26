"""Sweeps: cells of a grid, resumable, with a table and plots whose ε matches `jaxpriv account`."""

import copy
import csv
import dataclasses
import glob
import os
import re

import ml_collections
import numpy as np
import pytest
from matplotlib import image
from test_train import tiny_config

from jaxpriv import cli
from jaxpriv.anonymize import readers
from jaxpriv.data import pipeline
from jaxpriv.dp import accounting
from jaxpriv.experiments import sweep
from jaxpriv.train import loop
from jaxpriv.train.metrics import read_jsonl

EXAMPLE = os.path.join(
    os.path.dirname(os.path.dirname(__file__)), "configs/experiments/tiny_sweep.py"
)
IDS = [
    "dp.epsilon=2.0,dp.mode=dpsgd",
    "dp.epsilon=2.0,dp.mode=maskdp",
    "dp.epsilon=8.0,dp.mode=dpsgd",
    "dp.epsilon=8.0,dp.mode=maskdp",
]


def tiny_experiment(tmp_path, axes=None):
    """dp.mode × dp.epsilon on test_train's tiny config: 1 epoch of 4 steps of q = 16/64."""
    experiment = sweep.experiment_config()
    experiment.name = "tiny"
    experiment.base = tiny_config(tmp_path)
    experiment.base.train.epochs = 1.0
    experiment.base.dp.secret_seed = 0
    experiment.grid = sweep.grid(axes or {"dp.mode": ["dpsgd", "maskdp"], "dp.epsilon": [2.0, 8.0]})
    experiment.report.compare_key, experiment.report.reference = "dp.mode", "dpsgd"
    return experiment


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The tiny sweep interrupted in its 2nd cell, then rerun: (experiment, workdir, trained
    cell names, the rerun's table)."""
    tmp = tmp_path_factory.mktemp("sweep")
    experiment, workdir = tiny_experiment(tmp), str(tmp / "run")
    trained, real_train = [], loop.train

    def train(config, workdir, *, progress):
        trained.append(config.name)
        if len(trained) == 2:
            raise Interrupted
        return real_train(config, workdir, progress=progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train", train)
        with pytest.raises(Interrupted):
            sweep.run(experiment, workdir, progress=False)
        table = sweep.run(experiment, workdir, progress=False)
    return experiment, workdir, trained, table


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_interrupted_sweep_resumes_without_redoing_finished_cells(swept):
    _, workdir, trained, _ = swept
    assert trained == [IDS[0], IDS[1], IDS[1], IDS[2], IDS[3]]
    assert [row["cell"] for row in read_jsonl(os.path.join(workdir, "results.jsonl"))] == IDS
    assert sorted(os.listdir(os.path.join(workdir, "cells"))) == IDS
    for cell in IDS:  # each cell's TensorBoard events and privacy report
        folder = os.path.join(workdir, "cells", cell)
        assert glob.glob(os.path.join(folder, "events.out.tfevents.*")), cell
        with open(os.path.join(folder, "report.md")) as f:
            assert f"`dp.mode = {cell.split('dp.mode=')[1].split(',')[0]}`" in f.read()


def test_finished_sweep_trains_nothing_and_rewrites_the_report(swept, monkeypatch):
    experiment, workdir, _, table = swept
    os.remove(os.path.join(workdir, "results.md"))
    monkeypatch.setattr(loop, "train", None)  # calling it would fail
    assert sweep.run(experiment, workdir, progress=False) == table
    assert os.path.isfile(os.path.join(workdir, "results.md"))


def test_results_hold_grid_values_and_final_records(swept):
    _, workdir, _, table = swept
    rows = read_jsonl(os.path.join(workdir, "results.jsonl"))
    assert [row["values"] for row in rows] == [
        {"dp.epsilon": eps, "dp.mode": mode} for eps in (2.0, 8.0) for mode in ("dpsgd", "maskdp")
    ]
    assert all(row["step"] == 4 and 0 <= row["test_accuracy"] <= 1 for row in rows)
    summary = read_csv(os.path.join(workdir, "results.csv"))
    assert [(r["dp.epsilon"], r["dp.mode"], r["seeds"]) for r in summary] == [
        (eps, mode, "1") for eps in ("2.0", "8.0") for mode in ("dpsgd", "maskdp")
    ]
    assert [float(r["test_accuracy_mean"]) for r in summary] == [
        row["test_accuracy"] for row in rows
    ]
    with open(os.path.join(workdir, "results.md")) as f:
        markdown = f.read()
    assert table in markdown and len(table.splitlines()) == 2 + len(IDS)
    assert table.splitlines()[2].startswith("| 2.0 | dpsgd | 1 | ")
    assert "![accuracy_vs_epsilon.png](accuracy_vs_epsilon.png)" in markdown
    assert "![accuracy_relative.png](accuracy_relative.png)" in markdown


def test_epsilon_column_equals_jaxpriv_account(swept, capsys):
    _, workdir, _, _ = swept
    for row in read_csv(os.path.join(workdir, "results.csv")):
        sigma, steps, eps = row["noise_multiplier"], int(float(row["steps"])), float(row["epsilon"])
        assert eps == pytest.approx(
            accounting.epsilon(
                noise_multiplier=float(sigma), sampling_rate=16 / 64, steps=steps, delta=1e-3
            )
        )
        assert eps == pytest.approx(float(row["dp.epsilon"]), rel=1e-2)  # σ calibrated to it
        argv = ["account", "-q", "0.25", "--steps", str(steps), "--sigma", sigma]
        assert cli.main([*argv, "--delta", "1e-3", "--accountant", "pld"]) == 0
        printed = re.search(r"pld: ε=([\d.]+) with σ=", capsys.readouterr().out)
        assert float(printed[1]) == pytest.approx(eps, abs=1e-4)


@pytest.mark.parametrize("name", ["accuracy_vs_epsilon.png", "accuracy_relative.png"])
def test_plots_are_png_images(swept, name):
    path = os.path.join(swept[1], name)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    height, width, channels = image.imread(path).shape
    assert height > 300 and width > 500 and channels in (3, 4)


def test_a_result_of_a_different_config_is_refused(swept):
    experiment, workdir, _, _ = swept
    changed = experiment.copy_and_resolve_references()
    changed.base.train.learning_rate = 1e-2
    with pytest.raises(ValueError, match="trained with a different config; use another --workdir"):
        sweep.run(changed, workdir, progress=False)


def test_dataset_size_of_a_tfds_folder_comes_from_its_info(swept):
    experiment, workdir, _, _ = swept
    cell = sweep.cells(experiment)[0]
    pattern = os.path.join(experiment.base.data.data_dir, "**", "dataset_info.json")
    (info,) = glob.glob(pattern, recursive=True)
    on_folder = copy.deepcopy(cell.config)
    on_folder.data.name = os.path.dirname(info)
    folder_cell = dataclasses.replace(cell, config=on_folder)
    assert sweep.dataset_size(folder_cell, workdir) == (64, True)
    assert sweep.dataset_size(cell, workdir) == (64, True)


def test_irrelevant_values_collapse_non_private_cells(tmp_path):
    axes = {"dp.mode": ["none", "dpsgd"], "dp.epsilon": [2.0, 8.0], "seed": [0, 1]}
    experiment = tiny_experiment(tmp_path, axes)
    experiment.report.reference = "none"
    cells = sweep.cells(experiment)
    assert [cell.id for cell in cells] == [
        "dp.mode=none,seed=0",
        "dp.mode=none,seed=1",
        "dp.epsilon=2.0,dp.mode=dpsgd,seed=0",
        "dp.epsilon=2.0,dp.mode=dpsgd,seed=1",
        "dp.epsilon=8.0,dp.mode=dpsgd,seed=0",
        "dp.epsilon=8.0,dp.mode=dpsgd,seed=1",
    ]
    assert cells[1].values == {"dp.mode": "none", "seed": 1} and cells[1].config.seed == 1
    assert cells[0].config.dp.epsilon == experiment.base.dp.epsilon  # the base value
    assert cells[4].config.dp.epsilon == 8.0 and cells[4].config.name == cells[4].id
    experiment.irrelevant = []
    assert len(sweep.cells(experiment)) == 8


def test_dry_run_prints_the_cells_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "train", None)  # calling it would fail
    argv = ["experiment", EXAMPLE, "--dry-run", "--workdir", str(tmp_path)]
    assert cli.main([*argv, "--config.grid.seed=[0]", "--config.base.train.epochs=1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.endswith("| pending |")]
    assert [row[0] for row in rows] == [
        "| dp.mode=none,seed=0",
        "| dp.epsilon=2.0,dp.mode=dpsgd,seed=0",
        "| dp.epsilon=2.0,dp.mode=maskdp,seed=0",
        "| dp.epsilon=8.0,dp.mode=dpsgd,seed=0",
        "| dp.epsilon=8.0,dp.mode=maskdp,seed=0",
    ]
    assert {tuple(row[1:4]) for row in rows} == {("512", "0.125", "8")}  # N, q, steps
    assert rows[0][5] == "∞"
    assert [float(row[5]) for row in rows[1:]] == pytest.approx([2, 2, 8, 8], rel=1e-3)
    assert float(rows[0][4]) == 0 < float(rows[3][4]) < float(rows[1][4]) == float(rows[2][4])
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"grid": sweep.grid({"dp.epsilom": [1.0]})},
            "experiment grid: unknown config key 'dp.epsilom'; valid keys here: accountant, ",
        ),
        (
            {"grid": ml_collections.ConfigDict({"seed": [0], "dp": {"epsilon": 2.0}})},
            "grid.dp.epsilon must be a non-empty list, got 2.0",
        ),
        (
            {"report.reference": "original"},
            r"report.reference='original' is not a value of the grid key 'dp.mode' "
            r"\(dpsgd, maskdp\)",
        ),
        (
            {"report.compare_key": "data.name"},
            r"report.compare_key='data.name' is not a grid key \(dp.epsilon, dp.mode\)",
        ),
    ],
    ids=["grid key", "grid value", "reference", "compare key"],
)
def test_bad_experiments_are_clear_errors(tmp_path, change, message):
    experiment = tiny_experiment(tmp_path)
    experiment.update_from_flattened_dict(change)
    with pytest.raises(ValueError, match=message):
        sweep.cells(experiment)


def test_unknown_experiment_override_is_a_clear_error(capsys):
    assert cli.main(["experiment", EXAMPLE, "--dry-run", "--config.grid.dp.epsilom=[1]"]) == 2
    assert "unknown config key 'grid.dp.epsilom'" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["experiment", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ["CONFIG", "--workdir", "--dry-run", "--no-progress", "--config.grid.seed"]:
        assert option in text


def staged_experiment(tmp_path):
    """Method × region on 40 embedded clips of 2 frames, anonymized by the sweep's stage."""
    experiment = tiny_experiment(tmp_path, {})
    experiment.base.dp.mode = "none"
    experiment.base.train.batch_size, experiment.base.train.microbatch_size = 8, 8
    stage = experiment.anonymize
    stage.layout, stage.num_clips, stage.frames, stage.workers = "synthetic", 40, 2, 1
    stage.size, stage.clip_frames, stage.frame_stride, stage.test_fraction = 32, 2, 1, 0.25
    experiment.grid = sweep.grid(
        {"anonymize.method": ["none", "maskout"], "anonymize.region": ["face", "body"]}
    )
    experiment.report.compare_key, experiment.report.reference = "anonymize.method", "none"
    return experiment


STAGED_IDS = [
    "anonymize.method=none",
    "anonymize.method=maskout,anonymize.region=face",
    "anonymize.method=maskout,anonymize.region=body",
]


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """(experiment, workdir, table) of a staged sweep, run end to end."""
    tmp = tmp_path_factory.mktemp("staged")
    experiment, workdir = staged_experiment(tmp), str(tmp / "run")
    return experiment, workdir, sweep.run(experiment, workdir, progress=False)


def test_staged_sweep_anonymizes_once_per_setting_and_tests_on_the_original(staged):
    experiment, workdir, table = staged
    planned = sweep.cells(experiment)
    assert [cell.id for cell in planned] == STAGED_IDS
    assert sorted(os.listdir(os.path.join(workdir, "data"))) == [
        "method=maskout,region=body",
        "method=maskout,region=face",
        "original",
    ]
    configs = [sweep.with_stage_data(cell, workdir) for cell in planned]
    original = configs[0].data.name
    assert original.startswith(os.path.join(workdir, "data", "original"))
    assert [config.data.test_name for config in configs] == [original] * 3
    assert configs[2].data.name.startswith(
        os.path.join(workdir, "data", "method=maskout,region=body")
    )
    train = [pipeline.load_source(config.data.name, "train") for config in configs]
    test = pipeline.load_source(original, "test")
    clips = {video.key: video for video in readers.read_synthetic(40, seed=0, frames=2, size=32)}
    assert len(test) + len(train[0]) == 40
    for record in [*test, *train[0]]:  # method none: the generated pixels, bit for bit
        key = record["key"].decode() if isinstance(record["key"], bytes) else record["key"]
        np.testing.assert_array_equal(record["video"], clips[key.split("#")[0]].frames)
    for original_record, face, body in zip(*train):
        assert original_record["key"] == face["key"] == body["key"]
        changed = [(r["video"] != original_record["video"]).any(-1) for r in (face, body)]
        assert [(c & ~r["region"].astype(bool)).any() for c, r in zip(changed, (face, body))] == [
            False,
            False,
        ]  # mask-out changes only the region
        assert 0 < changed[0].sum() < changed[1].sum()  # the face is a small part of the body
    assert len(table.splitlines()) == 2 + 3 and "| none | – | 1 |" in table


def test_staged_dry_run_counts_the_training_clips_it_will_write(staged, tmp_path):
    experiment, workdir, _ = staged
    written = pipeline.load_source(
        sweep.with_stage_data(sweep.cells(experiment)[0], workdir).data.name, "train"
    )
    fresh = sweep.describe(experiment, str(tmp_path))  # nothing anonymized there yet
    done = sweep.describe(experiment, workdir)
    for text, status in [(fresh, "pending"), (done, "done")]:
        assert "anonymization stage: the embedded synthetic clips (40 of 2 frames): " in text
        assert f"{len(written)} train and {40 - len(written)} test inputs" in text
        rows = [line.split(" | ") for line in text.splitlines() if line.endswith(f"{status} |")]
        assert [int(row[1]) for row in rows] == [len(written)] * 3
    assert not os.listdir(tmp_path)


def test_a_stage_without_test_inputs_is_refused_by_the_dry_run_and_the_run(tmp_path):
    experiment = staged_experiment(tmp_path)
    experiment.anonymize.num_clips, experiment.anonymize.test_fraction = 2, 0.01
    message = (
        "anonymization stage: none of the 2 inputs falls in the test split "
        "(anonymize.test_fraction=0.01, by hash of the name)"
    )
    for attempt in (sweep.describe, sweep.run):
        with pytest.raises(ValueError, match=re.escape(message)):
            attempt(experiment, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_avatar_cells_take_whole_bodies(tmp_path):
    experiment = staged_experiment(tmp_path)
    experiment.grid = sweep.grid({"anonymize.method": ["maskout", "avatar"]})
    experiment.report.compare_key, experiment.report.reference = "anonymize.method", "maskout"
    planned = sweep.cells(experiment)
    assert [cell.id for cell in planned] == [
        "anonymize.method=maskout",
        "anonymize.method=avatar,anonymize.region=body",
    ]
    assert [cell.stage.region for cell in planned] == ["face", "body"]
