"""The command line: help texts, accounting output, clear errors; the launch scripts."""

import os
import shlex
import subprocess
import sys

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
    assert "pld: σ=1.17" in out  # the σ of the default config's DP runs (10 epochs)


def test_account_at_tiny_sigma_says_which_accountant_answered(capsys):
    code, out, err = run(capsys, "account", "-q", "0.01", "--steps", "100", "--sigma", "1e-6")
    assert code == 0 and err == ""
    assert "pld: ε=5.5e+13 with σ=1e-06\n  note: ε is the RDP accountant's" in out


def test_account_for_a_huge_target_reports_the_epsilon_really_spent(capsys):
    argv = ["account", "-q", "0.01", "--steps", "100", "--epsilon", "1e9", "--accountant", "pld"]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "pld: σ=0.1250 spends ε=219.5554 (target ε=1e+09)\n  note: σ=0.125 is the search" in out


def test_unreachable_target_is_an_error_not_a_traceback(capsys):
    code, _, err = run(
        capsys, "account", "-q", "0.5", "--steps", "1000", "--epsilon", "1e-6", "--delta", "1e-12"
    )
    assert code == 2
    assert err.startswith("jaxpriv account: error: target ε=1e-06")


@pytest.mark.parametrize(
    "command, options",
    [
        (
            "train",
            ["--config", "--workdir", "--no-progress", "--distributed", "--config.KEY=VALUE"],
        ),
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
                "--preview",
            ],
        ),
        ("compare", ["--config", "--only", "--workdir", "--no-progress"]),
        (
            "audit",
            [
                "--epsilon",
                "--seeds",
                "--canaries",
                "--steps",
                "--sampling-rate",
                "--confidence",
                "--workdir",
            ],
        ),
        ("report", ["workdir", "report.md", "leak check", "ε", "audit"]),
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distributed_without_a_cluster_is_a_clear_error():
    """--distributed joins a run before anything else, and says how to start one."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))
    }
    argv = ["train", "--distributed", "--config", "configs/video_dpsgd.py"]
    done = subprocess.run(
        [sys.executable, "-m", "jaxpriv.cli", *argv], cwd=ROOT, env=env, capture_output=True
    )
    assert done.returncode == 2
    assert done.stderr.decode().startswith("jaxpriv train: error: --distributed: ")
    assert "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID" in done.stderr.decode()


TRAIN_ARGS = ["--workdir", "runs/a b", "--config.model.kwargs={'depth': 2}"]
QUOTED = "--workdir 'runs/a b' '--config.model.kwargs={'\\''depth'\\'': 2}'"


def launch(*argv, **env):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | env
    return subprocess.run(["bash", *argv], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["launch/local.sh", "--dry-run", "configs/video_dpsgd.py"],
            [".venv/bin/jaxpriv train --config configs/video_dpsgd.py " + QUOTED],
        ),
        (
            ["launch/local.sh", "--cpu-devices", "8", "--dry-run", "configs/video_dpsgd.py"],
            [
                "env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=8 "
                ".venv/bin/jaxpriv train --config configs/video_dpsgd.py " + QUOTED
            ],
        ),
        (
            ["launch/slurm.sbatch", "--dry-run", "configs/video_dpsgd.py"],
            [
                "srun .venv/bin/jaxpriv train --distributed --no-progress "
                "--config configs/video_dpsgd.py " + QUOTED,
            ],
        ),
    ],
)
def test_launch_scripts_print_the_commands_they_would_run(argv, expected):
    done = launch(*argv, *TRAIN_ARGS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected
    train = shlex.split(expected[-1])
    assert train[train.index("--config") + 2 :] == TRAIN_ARGS  # the shell gets them back


def test_tpu_pod_script_runs_the_same_train_command_on_every_worker(tmp_path):
    done = launch(
        "launch/tpu_pod.sh",
        "--dry-run",
        "my-tpu",
        "us-central2-b",
        "configs/video_dpsgd.py",
        *TRAIN_ARGS,
        TMPDIR=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    copy, ssh = done.stdout.splitlines()
    assert copy == (
        f"gcloud compute tpus tpu-vm scp {tmp_path}/jaxpriv-source.tgz my-tpu: "
        "--zone=us-central2-b --worker=all"
    )
    *gcloud, command = shlex.split(ssh)
    assert (
        gcloud == "gcloud compute tpus tpu-vm ssh my-tpu --zone=us-central2-b --worker=all".split()
    )
    *setup, train = command.removeprefix("--command=").split(" && ")
    assert setup == [
        "mkdir -p jaxpriv",
        "tar -xzf jaxpriv-source.tgz -C jaxpriv",
        "cd jaxpriv",
        "bash launch/setup.sh tpu",
    ]
    assert shlex.split(train) == [
        ".venv/bin/jaxpriv",
        "train",
        "--distributed",
        "--config",
        "configs/video_dpsgd.py",
        *TRAIN_ARGS,
    ]  # as the worker's shell reads it


def test_the_anonymization_array_prints_the_command_every_task_runs():
    arguments = ["--format", "folder", "--input", "photos of people", "--out", "out dir"]
    done = launch("launch/anonymize.sbatch", "--dry-run", *arguments, "--method", "avatar")
    assert done.returncode == 0, done.stderr
    (command,) = done.stdout.splitlines()
    assert shlex.split(command) == [
        ".venv/bin/jaxpriv",
        "anonymize",
        "--device",
        "cuda",
        "--workers",
        "1",
        "--no-progress",
        *arguments,
        "--method",
        "avatar",
    ]  # each array task finds its --task-index and --num-tasks in SLURM's environment


@pytest.mark.parametrize(
    "script",
    ["launch/local.sh", "launch/slurm.sbatch", "launch/tpu_pod.sh", "launch/anonymize.sbatch"],
)
def test_launch_scripts_explain_their_usage(script):
    done = launch(script)
    assert done.returncode == 2
    assert "Usage" in done.stderr and done.stdout == ""


def test_train_saves_checkpoints_in_a_relative_workdir(capsys, tmp_path, monkeypatch):
    """Orbax refuses relative checkpoint paths; `jaxpriv train --workdir run` must still work."""
    monkeypatch.chdir(tmp_path)
    tiny = {
        "data.data_dir": str(tmp_path / "data"),
        "data.num_train": 32,
        "data.num_test": 16,
        "model.kwargs": {"width": 8, "depth": 1, "heads": 2, "mlp_dim": 8},
        "train.batch_size": 16,
        "train.microbatch_size": 8,
        "train.epochs": 1.0,
        "train.eval_batch_size": 16,
        "checkpoint.every_steps": 1,
    }
    overrides = [f"--config.{key}={value}" for key, value in tiny.items()]
    config = os.path.join(ROOT, "configs", "video_nonprivate.py")
    code, out, err = run(capsys, "train", "--config", config, "--workdir", "run", *overrides)
    assert code == 0, err
    assert out.startswith("training on 1 cpu device(s) in 1 process(es)\n")
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1", "2"]
    assert f"privacy report: {os.path.join('run', 'report.md')}" in out
    assert "**Nothing, formally.**" in (tmp_path / "run" / "report.md").read_text()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))

    # A report that fails is a warning: the run is complete and succeeded.
    from jaxpriv.report import card

    def broken(workdir):
        raise KeyError("broken")

    monkeypatch.setattr(card, "write", broken)
    code, out, err = run(capsys, "train", "--config", config, "--workdir", "run", *overrides)
    assert code == 0 and "privacy report" not in out
    assert "warning: the privacy report of run could not be written (KeyError" in err


def test_audit_writes_its_table_and_fails_when_an_audit_misses(capsys, tmp_path, monkeypatch):
    from jaxpriv.audit import run as audit

    def result(placement, epsilon, found):
        return {
            "mode": "maskdp",
            "placement": placement,
            "seed": 0,
            "sampling_rate": 0.02,
            "steps": 500,
            "noise_multiplier": 1.0,
            "epsilon": epsilon,
            "epsilon_lower_bound": found,
            "confidence": 0.95,
            "score": "ridge",
            "r": 20,
            "v": 20,
            "precision": 1.0,
            "leak_expected": placement == "public",
            "seconds": 1.0,
        }

    outcome = [result("sensitive", 2.0, 0.0), result("public", 2.0, 3.0)]
    monkeypatch.setattr(audit, "audit_suite", lambda *args, **kwargs: outcome)
    assert cli.main(["audit", "--workdir", str(tmp_path)]) == 0
    assert "pass (leak found)" in capsys.readouterr().out
    assert (tmp_path / "audit.md").read_text().count("| maskdp |") == 2
    outcome[1] = result("public", 2.0, 0.5)  # the self-test misses the leak
    assert cli.main(["audit"]) == 2
    captured = capsys.readouterr()
    assert "FAIL: leak missed" in captured.out
    assert "1 of 2 audits did not find what they should" in captured.err


@pytest.mark.parametrize("command", ["train", "account", "anonymize", "demo", "experiment"])
def test_help_shows_the_default_of_every_option_that_has_one(command):
    (commands,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    parser = commands.choices[command]
    text = parser.format_help()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False) and action.dest != "help":
            help_text = parser._get_formatter()._expand_help(action)
            assert "default" in help_text, (command, action.option_strings)
    if command == "anonymize":  # the flags made from the options, defaults of None included
        assert "--if-none {skip,keep,fail}" in text and "(default: skip)" in text


def test_synthetic_input_takes_no_input_folder(capsys, tmp_path):
    argv = [
        "anonymize",
        "--format",
        "synthetic",
        "--input",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "the synthetic format generates its clips: it takes no input folder" in err
