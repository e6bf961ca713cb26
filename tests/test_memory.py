"""The micro-batch size chosen from a memory budget."""

import pytest
from test_train import tiny_config

from jaxpriv.data import schema
from jaxpriv.train import loop, memory, parallel


def test_the_largest_power_of_two_that_fits_is_chosen():
    calls = []

    def linear(m):
        calls.append(m)
        return 1000 + 100 * m

    assert memory.choose_microbatch_size(linear, 2000, largest=64) == 8  # 1800 <= 2000 < 2600
    assert calls == [1, 2, 8]
    assert memory.choose_microbatch_size(linear, 10**9, largest=48) == 32


def test_an_underestimate_is_corrected_by_halving():
    def convex(m):  # the linear estimate from m = 1, 2 is too optimistic
        return 100 * m * m

    assert memory.choose_microbatch_size(convex, 2000, largest=64) == 4  # 1600 <= 2000 < 6400


def test_a_budget_below_one_example_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"needs 1 MiB per device at micro-batch 1, over the budget"
    ):
        memory.choose_microbatch_size(lambda m: 2**20 * m, 2**19, largest=8)


def test_the_chosen_micro_batch_fits_the_compiled_step(tmp_path):
    config = tiny_config(tmp_path, "dpsgd")
    config.data.kind, config.model.name = "image", "vit"
    config.model.kwargs = dict(width=8, depth=1, heads=2, mlp_dim=8, patch=(8, 8))
    train_source, _, num_classes = loop.load_data(config.data)
    example = train_source[0][schema.IMAGE][None]
    mesh = parallel.data_mesh()
    plan = loop.plan_run(config, len(train_source), microbatch_size=1)
    measure = [
        loop.step_working_memory(config, plan, num_classes, example, "image", mesh, m)
        for m in (2, 4)
    ]
    assert measure[0] < measure[1]  # working memory grows with the micro-batch
    config.train.memory_budget_mb = (measure[0] + measure[1]) / 2 / 2**20
    assert loop.auto_microbatch_size(config, plan, num_classes, example, "image", mesh) == 2
