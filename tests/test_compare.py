"""`jaxpriv compare`: accounting parity with Opacus, the speed harness, training with Opacus."""

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("opacus")

from jaxpriv import cli  # noqa: E402
from jaxpriv.compare import accounting, harness, speed, training  # noqa: E402
from jaxpriv.train import loop  # noqa: E402

SCHEDULES = [accounting.SCHEDULES[i] for i in (0, 3, 4)]


@pytest.fixture(scope="module")
def parity_rows():
    return accounting.accounting_parity(SCHEDULES)


def test_rdp_matches_opacus_at_integer_orders(parity_rows):
    for row in parity_rows:
        assert row["jaxpriv_rdp_integer_orders"] == pytest.approx(
            row["opacus_rdp_integer_orders"], rel=1e-9
        )
        # At fractional orders dp-accounting's series is an upper bound of Opacus' exact one.
        assert row["jaxpriv_rdp"] >= row["opacus_rdp"] - 1e-9
        assert row["jaxpriv_rdp"] == pytest.approx(row["opacus_rdp"], rel=0.01)


def test_pld_matches_opacus_prv_within_their_discretisation(parity_rows):
    for row in parity_rows:
        assert abs(row["jaxpriv_pld"] - row["opacus_prv"]) <= accounting.PRV_EPS_ERROR + 0.01
        assert row["jaxpriv_pld"] < row["jaxpriv_rdp"]


def test_accounting_table_shows_every_schedule(parity_rows):
    table = accounting.format_accounting_table(parity_rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(SCHEDULES)
    assert f"{parity_rows[1]['opacus_prv']:.4f}" in lines[3]


def test_unknown_opacus_accountant_is_rejected():
    with pytest.raises(ValueError, match="'rdp' or 'prv'"):
        accounting.opacus_epsilon(SCHEDULES[0], "gdp")


def tiny_run(tmp_path):
    config = harness.default_config().run
    config.data.data_dir = str(tmp_path / "tfds")
    config.data.num_train = 256
    config.data.num_test = 64
    config.model.kwargs.width = 16
    config.model.kwargs.depth = 1
    config.model.kwargs.mlp_dim = 32
    config.train.batch_size = 32
    config.train.microbatch_size = 32
    config.train.epochs = 1.0
    return config


def test_speed_comparison_times_every_step_kind(tmp_path):
    result = speed.speed_comparison(tiny_run(tmp_path), repeats=2)
    names = [*speed.JAX_RUNNERS.values(), *speed.TORCH_RUNNERS]
    assert list(result["median_ms"]) == names
    assert all(ms > 0 for ms in result["median_ms"].values())
    ms = result["median_ms"]
    assert result["jaxpriv_dpsgd_over_opacus_hooks"] == pytest.approx(
        ms["jaxpriv DP-SGD"] / ms["Opacus DP-SGD (hooks)"]
    )
    table = speed.format_speed_table(result)
    assert all(f"| {name} |" in table for name in names)


def test_opacus_training_follows_jaxpriv_schedule_and_budget(tmp_path):
    config = tiny_run(tmp_path)
    train_source, _, _ = loop.load_data(config.data)
    plan = loop.plan_run(config, len(train_source))
    result = training.opacus_train(config, progress=False)
    assert result["steps"] == plan.steps == 8
    assert result["noise_multiplier"] == plan.noise_multiplier
    # Opacus' PRV accountant agrees with the ε that jaxpriv calibrated σ to.
    assert result["epsilon"] == pytest.approx(config.dp.epsilon, abs=0.1)
    assert 0.0 <= result["test_accuracy"] <= 1.0


def test_summary_of_training_runs():
    rows = [{"framework": "jaxpriv", "test_accuracy": a} for a in (0.5, 0.7)] + [
        {"framework": "opacus", "test_accuracy": a} for a in (0.4, 0.6)
    ]
    summary = training.summarize(rows)
    assert summary["jaxpriv"]["mean"] == pytest.approx(0.6)
    assert summary["opacus"]["std"] == pytest.approx(math.sqrt(0.02))
    assert summary["difference"] == pytest.approx(0.1)
    assert summary["standard_error"] == pytest.approx(math.sqrt(0.02 / 2 + 0.02 / 2))


def test_cli_compare_accounting_writes_table_and_json(tmp_path, capsys):
    workdir = tmp_path / "compare"
    assert cli.main(["compare", "--only", "accounting", "--workdir", str(workdir)]) == 0
    printed = capsys.readouterr().out
    assert "Accounting parity" in printed and "Opacus PRV" in printed
    rows = json.loads((workdir / "accounting.json").read_text())
    assert [r["schedule"] for r in rows] == [s.name for s in accounting.SCHEDULES]
    assert (workdir / "compare.md").read_text().strip() in printed


def test_cli_compare_rejects_unknown_config_key(tmp_path, capsys):
    argv = ["compare", "--only", "accounting", "--workdir", str(tmp_path), "--config.sedes=1"]
    assert cli.main(argv) == 2
    assert "unknown config key 'sedes'" in capsys.readouterr().err


def test_gradient_parity_part_writes_json(tmp_path):
    config = harness.default_config()
    config.gradient_models = ("resnet",)
    report = harness.run(config, ["gradients"], str(tmp_path), progress=False)
    (result,) = json.loads((tmp_path / "gradients.json").read_text())
    assert result["update_rel_error"] < 1e-5
    assert "resnet" in report
