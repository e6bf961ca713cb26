"""The real-data experiment configs: `--dry-run` checks each layout (fixture folders) and plans."""

import os
import re

import pytest
from layout_fixtures import make_layout

from jaxpriv import cli
from jaxpriv.anonymize import layouts, pipeline
from jaxpriv.experiments import studies, sweep

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "experiments")
VIDEO = ["ucf101", "ntu60", "toyota_smarthome"]
IMAGE = ["coco2017", "cityscapes", "bdd100k"]
# Of the few fixture inputs of each layout, these shares put some in each split (by key hash).
TEST_FRACTION = {"ucf101": 0.5, "ntu60": 0.3, "toyota_smarthome": 0.3} | dict.fromkeys(IMAGE, 0.3)


def dry_run(name, root, workdir, capsys):
    argv = ["experiment", os.path.join(CONFIGS, f"{name}.py"), "--dry-run", "--workdir", workdir]
    argv += [f"--config.anonymize.root={root}", "--config.base.train.batch_size=1"]
    argv += [f"--config.anonymize.test_fraction={TEST_FRACTION[name]}"]
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", VIDEO + IMAGE)
def test_dry_run_checks_the_layout_and_plans_every_cell(name, tmp_path, capsys):
    root = make_layout(name, tmp_path / "dataset")
    code, out, err = dry_run(name, root, str(tmp_path / "runs"), capsys)
    assert code == 0, err
    units = layouts.read(name, root)
    train = [u for u in units if pipeline.split_of(u.key, TEST_FRACTION[name]) == "train"]
    task = layouts.LAYOUTS[name].task
    assert (
        f"anonymization stage: {name} at {root} ({task}): {len(train)} train and "
        f"{len(units) - len(train)} test inputs; tested on the original test split"
    ) in out
    rows = [line.split(" | ") for line in out.splitlines() if line.endswith("| pending |")]
    experiment = sweep.load(os.path.join(CONFIGS, f"{name}.py"))
    assert len(rows) == len(sweep.cells(experiment))
    assert {int(row[1]) for row in rows} == {len(train)}  # N: one clip per video, or the images
    if name in VIDEO:  # real, masked-out and avatar video × (none, DP-SGD and MaskDP at each ε)
        assert len(rows) == 3 * (1 + 2 * len(studies.EPSILONS)) * len(studies.SEEDS)
        avatars = [row[0] for row in rows if "anonymize.method=avatar" in row[0]]
        assert avatars and all("anonymize.region=body" in cell for cell in avatars)
        private = [row for row in rows if "dp.mode=none" not in row[0]]
        targets = [float(re.search(r"dp.epsilon=([\d.]+)", row[0])[1]) for row in private]
        assert [float(row[5]) for row in private] == pytest.approx(targets, rel=1e-3)
    else:  # the original once, then 4 methods × 2 regions
        assert len(rows) == (1 + 4 * 2) * len(studies.SEEDS)
        assert {row[5] for row in rows} == {"∞"}
    assert not os.path.exists(tmp_path / "runs")  # nothing written


def test_dry_run_on_a_wrong_folder_shows_the_expected_layout(tmp_path, capsys):
    make_layout("ucf101", tmp_path / "ucf")
    code, _, err = dry_run("ntu60", tmp_path / "ucf", str(tmp_path / "runs"), capsys)
    assert code == 2
    assert "jaxpriv experiment: error: ntu60 layout: " in err
    assert "expected layout:" in err and "SsssCcccPpppRrrrAaaa_rgb.avi" in err
