"""Checkpoint and resume: a MaskDP run killed with SIGKILL and resumed ends bit-identical to an
uninterrupted one (private and public samplers, noise, ε); another config or other data at the
same path is refused."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_run_logs import events
from test_train import tiny_config

from jaxpriv.train import loop
from jaxpriv.train.metrics import TAGS, read_jsonl

TRAIN = """
import sys
sys.path.insert(0, {tests!r})
from test_train import tiny_config
from jaxpriv.train import loop
import pathlib
config = tiny_config(pathlib.Path({tmp!r}), "maskdp")
config.update_from_flattened_dict({overrides!r})
loop.train(config, {workdir!r}, progress=False)
"""

OVERRIDES = {
    "train.epochs": 8.0,  # 32 steps of 16 from 64 examples
    "checkpoint.every_steps": 3,
    "dp.secret_seed": -1,  # a fresh secret noise and sampling seed, kept in the checkpoints
}


def config_for(tmp_path, **changes):
    config = tiny_config(tmp_path, "maskdp")
    config.update_from_flattened_dict({**OVERRIDES, **changes})
    return config


def saved_steps(workdir):
    folder = os.path.join(workdir, "checkpoints")
    return (
        sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []
    )


def test_killed_run_resumes_bit_identical_with_the_same_epsilon(tmp_path):
    workdir = str(tmp_path / "killed")
    code = TRAIN.format(
        tests=os.path.dirname(__file__), tmp=str(tmp_path), overrides=OVERRIDES, workdir=workdir
    )
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not [s for s in saved_steps(workdir) if s >= 6] and time.time() < deadline:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = max(saved_steps(workdir))
    assert 6 <= killed_at < 32  # killed in the middle of the run
    meta = os.path.join(workdir, "checkpoints", str(killed_at), "meta", "metadata")
    secret = int(json.loads(open(meta).read())["metadata"]["secret"])
    assert secret >= 2**64  # a 128-bit secret from the OS (this fails with odds 2^-64)

    resumed = loop.train(config_for(tmp_path), workdir, progress=False)
    reference_dir = str(tmp_path / "reference")  # never interrupted, with the same secret
    reference = loop.train(
        config_for(tmp_path, **{"dp.secret_seed": secret}), reference_dir, progress=False
    )
    assert resumed["params_sha256"] == reference["params_sha256"]
    assert resumed["epsilon"] == reference["epsilon"]  # neither re-spent nor forgotten
    records = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in records] == [4 * e for e in range(1, 9)]  # no step twice
    reference_records = read_jsonl(os.path.join(reference_dir, "metrics.jsonl"))
    for key in ("epsilon", "params_sha256", "public_loss", "test_accuracy"):
        assert [r[key] for r in records] == [r[key] for r in reference_records], key
    # TensorBoard, over the killed run's event file and the resumed one's: every step once
    logged = events(workdir)
    for key in ("epsilon", "public_loss", "test_accuracy"):
        at_epochs = [(step, value) for step, value in logged[TAGS[key]] if step % 4 == 0]
        assert at_epochs == [(r["step"], np.float32(r[key])) for r in records], key
    loss_steps = [step for step, _ in logged[TAGS["public_loss"]]]
    assert loss_steps == sorted({4 * e for e in range(1, 9)} | {10, 20, 30})  # epochs, logs

    # A finished run is not trained again.
    assert loop.train(config_for(tmp_path), workdir, progress=False) == records[-1]


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    config = config_for(tmp_path, **{"train.epochs": 1.0})
    loop.train(config, str(tmp_path / "run"), progress=False)
    config.dp.epsilon = 2.0
    with pytest.raises(
        ValueError, match=r"different config.*dp\.epsilon: 8\.0 \(checkpoint\) vs 2\.0"
    ):
        loop.train(config, str(tmp_path / "run"), progress=False)


def test_a_checkpoint_of_other_data_at_the_same_path_is_refused(tmp_path):
    folders = []
    for seed in (0, 1):
        config = config_for(tmp_path, **{"data.seed": seed})
        source, _, _ = loop.load_data(config.data)
        folders.append(source.dataset_info.data_dir)
    data = tmp_path / "prepared"
    shutil.copytree(folders[0], data)
    config = config_for(tmp_path, **{"train.epochs": 1.0, "data.name": str(data)})
    loop.train(config, str(tmp_path / "run"), progress=False)
    shutil.rmtree(data)
    shutil.copytree(folders[1], data)  # same path, same size, other content
    with pytest.raises(
        ValueError,
        match=r"different config or dataset: dataset: \{'size': 64, 'sha256': '[0-9a-f]{64}'\} \(checkpoint\) vs",
    ):
        loop.train(config, str(tmp_path / "run"), progress=False)
