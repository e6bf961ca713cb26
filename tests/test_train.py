"""The train loop: compile once, ε accounting per epoch, clear errors for bad input."""

import math

import pytest

from jaxpriv import config as config_lib
from jaxpriv.data import pipeline
from jaxpriv.dp import accounting
from jaxpriv.models import build_model
from jaxpriv.train import loop, parallel
from jaxpriv.train.metrics import read_jsonl


def tiny_config(tmp_path, mode="maskdp"):
    c = config_lib.default_config()
    c.name = f"tiny_{mode}"
    c.data.data_dir = str(tmp_path / "data")
    c.data.num_train, c.data.num_test = 64, 32
    c.model.kwargs = dict(width=8, depth=1, heads=2, mlp_dim=8, max_kept_tokens=24)
    c.train.batch_size, c.train.microbatch_size, c.train.epochs = 16, 8, 2.0
    c.train.eval_batch_size = 32
    c.dp.mode = mode
    c.dp.epsilon = 8.0
    c.dp.delta = 1e-3
    return c


def test_maskdp_run_writes_epsilon_per_epoch_and_stays_within_budget(tmp_path):
    config = tiny_config(tmp_path)
    result = loop.train(config, str(tmp_path / "run"), progress=False)
    records = read_jsonl(str(tmp_path / "run" / "metrics.jsonl"))
    assert [r["epoch"] for r in records] == [1.0, 2.0]
    assert [r["step"] for r in records] == [4, 8]
    epsilons = [r["epsilon"] for r in records]
    assert epsilons[0] < epsilons[1] <= config.dp.epsilon * (1 + 1e-3)
    assert epsilons[1] == pytest.approx(config.dp.epsilon, rel=1e-2)  # σ was calibrated to it
    assert epsilons[1] == pytest.approx(
        accounting.epsilon(
            noise_multiplier=result["noise_multiplier"], sampling_rate=16 / 64, steps=8, delta=1e-3
        )
    )
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result == records[-1]


def test_fixed_noise_multiplier_stops_when_the_budget_is_spent(tmp_path):
    config = tiny_config(tmp_path, "dpsgd")
    config.dp.noise_multiplier = 1.0
    config.dp.epsilon = 3.0
    config.train.epochs = 1000.0
    plan = loop.plan_run(config, 64)
    budget_steps = accounting.max_steps(
        noise_multiplier=1.0, sampling_rate=0.25, target_epsilon=3.0, delta=1e-3
    )
    assert plan.steps == budget_steps < 4000

    def spent(steps):
        return accounting.epsilon(noise_multiplier=1.0, sampling_rate=0.25, steps=steps, delta=1e-3)

    assert spent(plan.steps) <= 3.0 < spent(plan.steps + 1)


def build(config, secret=1):
    """(plan, mechanism, state, step, train source) of ``config`` on all devices."""
    train_source, _, num_classes = loop.load_data(config.data)
    plan = loop.plan_run(config, len(train_source))
    mechanism = loop.build_mechanism(config, plan, secret)
    mesh = parallel.data_mesh()
    example = train_source[0]["video"][None]
    _, state, step = loop.build_step(config, plan, mechanism, num_classes, example, "video", mesh)
    return plan, mechanism, state, step, train_source, mesh


def test_train_step_compiles_once_across_poisson_batch_sizes(tmp_path):
    plan, mechanism, state, step, train_source, mesh = build(tiny_config(tmp_path, "maskdp"))
    sizes = set()
    shapes = {"private": plan.capacity, "public": plan.public_capacity}
    for batches in pipeline.train_batches(train_source, mechanism, num_steps=6):
        sizes.add(int(batches["private"]["weight"].sum()))
        assert batches["public"]["weight"].sum() == plan.batch_size  # B public examples
        global_batches = {k: parallel.to_global(b, mesh, shapes[k]) for k, b in batches.items()}
        state, _ = step(state, global_batches)
    assert len(sizes) > 1  # the Poisson batch sizes really differed
    assert step._cache_size() == 1


def test_runs_log_only_what_the_guarantee_covers(tmp_path):
    """MaskDP logs the public-view loss, DP-SGD no loss, unless train.log_private_loss."""
    logged = {}
    for mode, private_loss in [("dpsgd", False), ("maskdp", False), ("dpsgd", True)]:
        config = tiny_config(tmp_path, mode)
        config.train.epochs = 1.0
        config.train.log_private_loss = private_loss
        workdir = tmp_path / f"{mode}-{private_loss}"
        loop.train(config, str(workdir), progress=False)
        logged[mode, private_loss] = set(read_jsonl(str(workdir / "metrics.jsonl"))[0])
    common = {"step", "epoch", "test_accuracy", "epsilon", "delta", "noise_multiplier", "mode"}
    common |= {"params_sha256", "wall_time", "step_time"}
    assert logged["dpsgd", False] == common
    assert logged["maskdp", False] == common | {"public_loss"}
    assert logged["dpsgd", True] == common | {"private_loss"}


def test_unreachable_epsilon_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path, "dpsgd")
    config.dp.epsilon, config.dp.delta = 1e-6, 1e-12
    with pytest.raises(accounting.UnreachableBudgetError, match="noise_multiplier > 1024"):
        loop.plan_run(config, 64)


@pytest.mark.parametrize("mode", ["none", "dpsgd"])
def test_nan_parameters_stop_the_run_with_a_clear_error(tmp_path, mode):
    config = tiny_config(tmp_path, mode)
    config.train.optimizer, config.train.learning_rate = "sgd", 1e30
    config.train.log_every_steps = 1
    with pytest.raises(
        FloatingPointError,
        match=r"the parameters became NaN or infinite at step \d+; the run diverged",
    ):
        loop.train(config, str(tmp_path / "run"), progress=False)


def test_unknown_config_key_is_a_clear_error(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"unknown config key 'dp.epsilom'; valid keys here: "
        r"accountant, clip_norm, clipping, delta, epsilon",
    ):
        config_lib.apply_override(config, "--config.dp.epsilom=2")
    config.train.unknown = 3
    with pytest.raises(ValueError, match="unknown config key 'train.unknown'"):
        loop.train(config, str(tmp_path / "run"), progress=False)


def test_overrides_are_typed(tmp_path):
    config = tiny_config(tmp_path)
    config_lib.apply_override(config, "--config.dp.epsilon=2")
    config_lib.apply_override(config, "--config.dp.public_clip_norm=inf")
    config_lib.apply_override(config, "--config.model.kwargs.width=16")
    assert config.dp.epsilon == 2.0 and isinstance(config.dp.epsilon, float)
    assert math.isinf(config.dp.public_clip_norm) and config.model.kwargs.width == 16
    with pytest.raises(
        ValueError, match="config key 'train.batch_size' holds a int; cannot set it to 'big'"
    ):
        config_lib.apply_override(config, "--config.train.batch_size=big")


def test_config_files_load(tmp_path):
    for name, mode in [
        ("video_nonprivate", "none"),
        ("video_dpsgd", "dpsgd"),
        ("video_maskdp", "maskdp"),
    ]:
        config = config_lib.load_config(f"configs/{name}.py", ["--config.dp.epsilon=2"])
        config_lib.check_known_keys(config)
        assert config.dp.mode == mode and config.dp.epsilon == 2.0


def test_dp_training_refuses_per_epoch_shuffling(tmp_path):
    """Disjoint per-epoch batches are not what the without-replacement accounting covers."""
    config = tiny_config(tmp_path, "dpsgd")
    config.dp.sampling = "shuffle"
    with pytest.raises(ValueError, match="use dp.sampling='poisson' for DP training"):
        loop.plan_run(config, 64)
    config.dp.mode = "none"
    assert loop.plan_run(config, 64).capacity == 16  # fine without DP


def test_model_init_from_a_finished_run_starts_from_its_parameters(tmp_path, capsys):
    first = tiny_config(tmp_path, "none")
    record = loop.train(first, str(tmp_path / "first"), progress=False)
    second = tiny_config(tmp_path, "dpsgd")
    second.model.init_from = str(tmp_path / "first")
    _, _, state, _, _, _ = build(second)
    assert loop.params_digest(state.params) != record["params_sha256"]
    state = loop.with_pretrained(state, second.model.init_from)
    assert loop.params_digest(state.params) == record["params_sha256"]
    assert "initialised: none" in capsys.readouterr().out
    second.model.init_from = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        loop.train(second, str(tmp_path / "second"), progress=False)


def test_microbatch_loop_unrolls_convolutional_models_on_cpu():
    train = config_lib.default_config().train
    vit, resnet = build_model("video_vit", 8), build_model("resnet", 8)
    assert not loop.unroll_microbatches(train, vit)  # video ViT: scan
    assert loop.unroll_microbatches(train, resnet)  # conv on CPU: unroll (jax-ml/jax#12868)
    train.microbatch_loop = "scan"
    assert not loop.unroll_microbatches(train, resnet)
    train.microbatch_loop = "while"
    with pytest.raises(ValueError, match="'auto', 'scan' or 'unroll', got 'while'"):
        loop.unroll_microbatches(train, resnet)
