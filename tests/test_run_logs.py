"""A run's logs: TensorBoard events equal to metrics.jsonl, W&B on request, run.json without
the secret seed, and logging settings that never block a resume."""

import json
import sys
import types

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_train import tiny_config

from jaxpriv.train import loop
from jaxpriv.train.metrics import TAGS, read_jsonl


def events(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the scalar events in ``folder``, read by TensorBoard itself."""
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


@pytest.fixture(scope="module")
def maskdp_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("maskdp")
    config = tiny_config(tmp_path)
    config.train.log_every_steps = 1
    config.dp.secret_seed = 1234
    workdir = tmp_path / "run"
    loop.train(config, str(workdir), progress=False)
    return config, workdir


def test_tensorboard_events_hold_the_values_of_metrics_jsonl(maskdp_run):
    _, workdir = maskdp_run
    records = read_jsonl(str(workdir / "metrics.jsonl"))
    logged = events(workdir)
    expected_keys = {"test_accuracy", "epsilon", "noise_multiplier", "public_loss", "epoch"}
    assert expected_keys | {"step_time"} <= set(records[0])
    for key in expected_keys:
        at_epochs = {step: value for step, value in logged[TAGS[key]] if step % 4 == 0}
        assert at_epochs == {r["step"]: np.float32(r[key]) for r in records}, key
    timed = [(r["step"], np.float32(r["step_time"])) for r in records if r["step_time"]]
    assert timed and logged[TAGS["step_time"]] == timed
    # the public-view loss also at every logged step between the evaluations
    assert [step for step, _ in logged[TAGS["public_loss"]]] == list(range(1, 9))
    assert TAGS["train_loss"] not in logged and TAGS["private_loss"] not in logged


def test_run_json_describes_the_run_without_its_secret_seed(maskdp_run):
    config, workdir = maskdp_run
    text = (workdir / "run.json").read_text()
    run = json.loads(text)
    assert "1234" not in text and run["config"]["dp"]["secret_seed"] == "set (hidden)"
    plan = loop.plan_run(config, config.data.num_train)
    assert run["plan"]["noise_multiplier"] == plan.noise_multiplier
    assert run["plan"]["steps"] == plan.steps == 8
    assert run["clipping"] == "ghost" and run["config"]["dp"]["epsilon"] == config.dp.epsilon


def test_logging_settings_do_not_change_what_a_run_resumes(tmp_path):
    config = tiny_config(tmp_path)
    changed = tiny_config(tmp_path)
    changed.log.tensorboard = False
    changed.log.report = False
    assert loop.fingerprint(config) == loop.fingerprint(changed)


class FakeWandb(types.ModuleType):
    """Records what jaxpriv asks of the ``wandb`` module."""

    def __init__(self):
        super().__init__("wandb")
        self.init_kwargs, self.logged, self.finished = None, [], False

    def init(self, **kwargs):
        self.init_kwargs = kwargs
        return self

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True

    def Settings(self, **kwargs):  # noqa: N802 - wandb's name
        return kwargs


def test_weights_and_biases_gets_the_same_values_and_no_secret(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = tiny_config(tmp_path, "dpsgd")
    config.log.tensorboard, config.log.wandb = False, True
    config.dp.secret_seed = 99
    config.train.epochs = 1.0
    loop.train(config, str(tmp_path / "run"), progress=False)
    record = read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))[-1]
    assert fake.finished and fake.init_kwargs["project"] == "jaxpriv"
    assert fake.init_kwargs["config"]["dp"]["secret_seed"] == "set (hidden)"
    # W&B's metadata would hold the command line, where a set seed may stand
    assert fake.init_kwargs["settings"] == {"x_disable_meta": True, "save_code": False}
    step, values = fake.logged[-1]
    assert step == record["step"]
    assert values[TAGS["epsilon"]] == record["epsilon"]
    assert values[TAGS["test_accuracy"]] == record["test_accuracy"]
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_weights_and_biases_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    config = tiny_config(tmp_path, "dpsgd")
    config.log.wandb = True
    with pytest.raises(ValueError, match="pip install wandb"):
        loop.train(config, str(tmp_path / "run"), progress=False)
