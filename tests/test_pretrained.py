"""Pretrained weights: .npz round trip, checkpoints of jaxpriv train, merging into a new head."""

import hashlib
import os

import jax
import numpy as np
import pytest
from test_train import tiny_config

from jaxpriv.models import build_model
from jaxpriv.models.pretrained import load_params, merge, save_params
from jaxpriv.train import loop
from jaxpriv.train.metrics import read_jsonl

IMAGE = np.zeros((1, 16, 16, 3), np.uint8)
HEAD = ["params/head/bias", "params/head/kernel"]


def tiny_vit_params(num_classes: int, seed: int = 0):
    model = build_model("vit", num_classes, width=16, depth=1, heads=2, mlp_dim=32)
    return jax.jit(model.init)(jax.random.key(seed), IMAGE)


def flat(params) -> dict:
    return {
        "/".join(k.key for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def test_npz_round_trip_is_bit_exact(tmp_path):
    params = tiny_vit_params(3)
    path = tmp_path / "vit.npz"
    save_params(path, params)
    assert os.listdir(tmp_path) == ["vit.npz"]  # no temporary file left behind
    loaded = load_params(path)
    expected = flat(params)
    assert sorted(loaded) == sorted(expected) and "params/block0/Dense_0/kernel" in loaded
    for name, value in expected.items():
        assert loaded[name].dtype == value.dtype
        np.testing.assert_array_equal(loaded[name], value)


def test_merge_keeps_the_head_of_another_number_of_classes(tmp_path):
    save_params(tmp_path / "vit.npz", tiny_vit_params(3, seed=1))
    pretrained = load_params(tmp_path / "vit.npz")
    init = tiny_vit_params(5, seed=2)
    merged, report = merge(init, pretrained, source="vit.npz")
    assert report["kept_init"] == HEAD and report["unused"] == HEAD
    assert report["loaded"] == len(pretrained) - 2
    init_flat = flat(init)
    for name, value in flat(merged).items():
        expected = init_flat[name] if name in HEAD else pretrained[name]
        assert value.dtype == init_flat[name].dtype
        np.testing.assert_array_equal(value, expected, err_msg=name)
    # Also inside jit, as in the train loop's init.
    jitted = jax.jit(lambda p: merge(p, pretrained)[0])(init)
    jax.tree.map(np.testing.assert_array_equal, jitted, merged)


def test_unrelated_weights_raise_instead_of_training_from_scratch(tmp_path):
    path = tmp_path / "timm_vit.npz"  # e.g. weights not converted to jaxpriv's names
    timm = {"blocks.0.attn.qkv.weight": np.ones((48, 16)), "head.weight": np.ones((3, 16))}
    save_params(path, timm)
    with pytest.raises(ValueError, match="timm_vit.npz") as error:
        merge(tiny_vit_params(3), load_params(path), source=str(path))
    assert "params/block0/" in str(error.value) and "blocks.0.attn.qkv.weight" in str(error.value)


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_params(tmp_path / "missing.npz")
    (tmp_path / "weights.txt").write_text("not weights")
    with pytest.raises(ValueError, match="not an .npz"):
        load_params(tmp_path / "weights.txt")
    with pytest.raises(ValueError, match="neither an .npz file nor a jaxpriv checkpoint"):
        load_params(tmp_path)


def test_loads_the_final_params_of_a_train_checkpoint(tmp_path):
    config = tiny_config(tmp_path, "none")
    config.data.num_train, config.data.num_test = 16, 8
    config.train.batch_size, config.train.microbatch_size, config.train.epochs = 8, 8, 1.0
    config.train.eval_batch_size = 8
    workdir = tmp_path / "run"
    loop.train(config, str(workdir), progress=False)
    final_digest = read_jsonl(str(workdir / "metrics.jsonl"))[-1]["params_sha256"]

    loaded = load_params(workdir / "checkpoints")
    digest = hashlib.sha256()
    for name in sorted(loaded, key=lambda n: n.split("/")):  # the leaf order of the pytree
        digest.update(loaded[name].tobytes())
    assert digest.hexdigest() == final_digest
    for path in (workdir, workdir / "checkpoints" / "2"):  # the workdir, a step directory
        other = load_params(path)
        assert sorted(other) == sorted(loaded)
        jax.tree.map(np.testing.assert_array_equal, other, loaded)

    # Fine-tuning the same model from it loads every parameter.
    train_source, _, num_classes = loop.load_data(config.data)
    model = build_model(config.model.name, num_classes, **config.model.kwargs)
    init = model.init(jax.random.key(7), train_source[0]["video"][None])
    _, report = merge(init, loaded, source=str(workdir))
    assert report == {"loaded": len(loaded), "kept_init": [], "unused": []}
