"""PyTorch twins and Opacus against jaxpriv: logits, clipped per-example gradients, update."""

import functools

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from jaxpriv.compare import gradients, torch_models  # noqa: E402
from jaxpriv.compare.torch_models import from_flax, grads_to_flax  # noqa: E402

TOL = 1e-5  # float32 relative error
MODELS = list(gradients.MODELS)


@functools.cache
def parity(name):
    return gradients.gradient_parity(name)


@pytest.mark.parametrize("name", MODELS)
def test_twin_logits_match_flax(name):
    assert parity(name)["logits_rel_error"] <= TOL


@pytest.mark.parametrize("name", MODELS)
def test_clipped_gradients_and_update_match_opacus(name):
    result = parity(name)
    assert 0 < result["jaxpriv_clipped_fraction"] < 1  # both regimes: some clipped, some not
    assert result["opacus_clipped_fraction"] == result["jaxpriv_clipped_fraction"]
    assert result["norm_rel_error"] <= TOL
    assert result["example_rel_error"] <= TOL
    assert result["update_rel_error"] <= TOL
    bound = result["clip_norm"] * (1 + TOL)
    assert np.all(result["jaxpriv_clipped_norms"] <= bound)
    assert np.all(result["opacus_clipped_norms"] <= bound)


def transposed_query(model, params, monkeypatch):
    """The ViT twin with its first (square) attention query weight transposed."""
    module = from_flax(model, params)
    weight = module.block0.MultiHeadDotProductAttention_0.query.weight
    with torch.no_grad():
        weight.copy_(weight.T.clone())
    return module


def symmetric_padding(model, params, monkeypatch):
    """The twin with torch's symmetric ``padding=k//2`` instead of XLA's ``SAME``."""

    def same_conv(conv, x):
        return conv(torch.nn.functional.pad(x, [conv.kernel_size[0] // 2] * 4))

    monkeypatch.setattr(torch_models, "same_conv", same_conv)
    return from_flax(model, params)


@pytest.mark.parametrize("name, fault", [("vit", transposed_query), ("resnet", symmetric_padding)])
def test_a_wrong_conversion_is_detected(name, fault, monkeypatch):
    model, params, _ = gradients.make_case(name)
    result = gradients.gradient_parity(name, module=fault(model, params, monkeypatch))
    assert result["logits_rel_error"] > 1e3 * TOL
    assert result["example_rel_error"] > 1e3 * TOL
    assert result["update_rel_error"] > 1e3 * TOL


@pytest.mark.parametrize("name", MODELS)
def test_grads_to_flax_round_trips_the_parameters(name):
    model, params, _ = gradients.make_case(name)
    module = from_flax(model, params)
    named = dict(module.named_parameters())
    jax.tree.map(np.testing.assert_array_equal, grads_to_flax(module, named, params), params)
    batched = grads_to_flax(module, {n: torch.stack([p, 2 * p]) for n, p in named.items()}, params)
    jax.tree.map(lambda b, p: np.testing.assert_array_equal(b, [p, 2 * p]), batched, params)


def test_mismatched_parameters_are_refused():
    vit, vit_params, _ = gradients.make_case("vit")
    _, resnet_params, _ = gradients.make_case("resnet")
    module = from_flax(vit, vit_params)
    with pytest.raises(ValueError, match="parameters differ"):
        grads_to_flax(module, dict(module.named_parameters()), resnet_params)
    with pytest.raises(ValueError, match="split_streams"):
        from_flax(vit.clone(split_streams=True), vit_params)
