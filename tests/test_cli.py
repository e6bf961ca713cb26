"""The command line: help texts, accounting output, clear errors."""

import pytest

from jaxpriv import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_account_prints_rdp_and_pld_epsilon(capsys):
    code, out, _ = run(capsys, "account", "-q", "0.01", "--steps", "1000", "--sigma", "1")
    assert code == 0
    assert "pld: ε=1.8289 with σ=1" in out
    assert "rdp: ε=2.1014 with σ=1" in out


def test_account_calibrates_sigma_for_a_target(capsys):
    code, out, _ = run(
        capsys, "account", "-q", "0.0625", "--epochs", "10", "--epsilon", "4", "--accountant", "pld"
    )
    assert code == 0 and "steps=160" in out
    assert "pld: σ=1.17" in out  # the σ of the demo's DP runs


def test_unreachable_target_is_an_error_not_a_traceback(capsys):
    code, _, err = run(
        capsys, "account", "-q", "0.5", "--steps", "1000", "--epsilon", "1e-6", "--delta", "1e-12"
    )
    assert code == 2
    assert err.startswith("jaxpriv account: error: target ε=1e-06")


@pytest.mark.parametrize(
    "command, options",
    [
        ("train", ["--config", "--workdir", "--no-progress", "--config.KEY=VALUE"]),
        (
            "account",
            [
                "--noise-multiplier",
                "--epsilon",
                "--sampling-rate",
                "--steps",
                "--epochs",
                "--delta",
                "--accountant",
                "--sampling",
                "--dataset-size",
                "--neighboring",
            ],
        ),
        ("demo", ["--epsilon", "--workdir", "--no-progress"]),
        (
            "anonymize",
            [
                "--format",
                "--input",
                "--annotations",
                "--split",
                "--out",
                "--region",
                "--method",
                "--histogram",
                "--sensitivity",
                "--detector",
                "--dilate",
                "--expand-box",
                "--size",
                "--clip-frames",
                "--frame-stride",
                "--max-gap",
                "--num-clips",
                "--frames",
                "--test-fraction",
                "--workers",
                "--shard-size",
                "--on-error",
                "--seed",
            ],
        ),
    ],
)
def test_help_explains_every_option(capsys, command, options):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text


def test_unknown_override_of_train_is_a_clear_error(capsys):
    code, _, err = run(capsys, "train", "--config", "configs/video_dpsgd.py", "--config.dp.nois=1")
    assert code == 2
    assert "unknown config key 'dp.nois'" in err
