"""DP-SGD and MaskDP gradients: clipping, padding, the MaskDP split and its sensitivity, on the
pre-noise sums that ``DpMechanism.gradient_sums`` (the train step's) computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_fixtures import C, dp_sum, dp_sums, flat, make_batch, setup, take

from jaxpriv.dp import clipping

MODELS = ["vit", "resnet"]
ALL_MODELS = ["vit", "vit_split", "resnet"]  # for the MaskDP privacy properties


def norm(x):
    return float(jnp.linalg.norm(x))


def test_clip_by_global_norm_exact():
    tree = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[4.0]])}
    clipped, total = clipping.clip_by_global_norm(tree, 1.0)
    assert total == 5.0
    np.testing.assert_allclose(flat(clipped), [0.6, 0.0, 0.8], rtol=1e-6)
    same, _ = clipping.clip_by_global_norm(tree, 10.0)
    np.testing.assert_array_equal(flat(same), flat(tree))
    zero, _ = clipping.clip_by_global_norm({"a": jnp.zeros(3)}, 1.0)
    np.testing.assert_array_equal(flat(zero), jnp.zeros(3))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("maskdp", [False, True])
def test_contributions_are_clipped(name, maskdp):
    loss_fn, params = setup(name)
    batch = make_batch()
    contributions, stats = jax.jit(
        jax.vmap(
            lambda ex: clipping.private_contribution(
                loss_fn, params, ex, clip_norm=C, maskdp=maskdp
            )
        )
    )(batch)
    norms = jax.vmap(lambda c: jnp.linalg.norm(flat(c)))(contributions)
    assert jnp.all(norms <= C * (1 + 1e-5))  # MaskDP: clip(r, C); its public part is apart
    assert jnp.all(stats["grad_norm"] > C)  # the bound is active, not vacuous
    assert jnp.all(stats["clipped"] == 1.0)


@pytest.mark.parametrize("name", MODELS)
def test_vmap_grads_equal_one_at_a_time(name):
    loss_fn, params = setup(name)
    batch = make_batch()
    vmapped = jax.vmap(lambda ex: clipping.example_grad(loss_fn, params, ex, False)[1])(batch)

    def single_grad(one):  # the batch of one example, without vmap
        return jax.grad(lambda p: loss_fn(p, one, False)[0])(params)

    for i in range(4):
        single = single_grad(jax.tree.map(lambda x, i=i: x[i : i + 1], batch))
        np.testing.assert_allclose(flat(take(vmapped, i)), flat(single), rtol=1e-4, atol=1e-6)


def assert_sums_close(a, b, rtol, atol):
    assert a[0].keys() == b[0].keys()
    for name in a[0]:
        np.testing.assert_allclose(a[0][name], b[0][name], rtol=rtol, atol=atol)
        np.testing.assert_allclose(a[1][name]["loss"], b[1][name]["loss"], rtol=rtol)


@pytest.mark.parametrize("mode", ["none", "dpsgd", "maskdp"])
def test_microbatching_does_not_change_the_sums(mode):
    batch = make_batch()
    whole = dp_sums("vit", batch, mode, microbatch_size=4)
    for mb in (1, 2):
        assert_sums_close(dp_sums("vit", batch, mode, microbatch_size=mb), whole, 1e-4, 1e-5)


@pytest.mark.parametrize("mode", ["none", "dpsgd", "maskdp"])
def test_unrolled_microbatches_give_the_scanned_sums(mode):
    batch = make_batch()
    batch["weight"] = jnp.array([1.0, 1.0, 0.0, 0.0])  # the second micro-batch is all padding
    scanned = dp_sums("resnet", batch, mode)
    assert_sums_close(dp_sums("resnet", batch, mode, unroll=True), scanned, 1e-5, 1e-7)


@pytest.mark.parametrize(
    "mode, public_clip_norm, clipping_method",
    [
        *[(mode, c, "vmap") for mode in ("none", "dpsgd", "maskdp") for c in (C, None)],
        ("maskdp", C, "ghost"),  # the ghost path's private and public sums
    ],
)
def test_padding_example_changes_nothing(mode, public_clip_norm, clipping_method):
    batch = make_batch(n=4)
    padded = jax.tree.map(lambda x: jnp.concatenate([x[:2], x[:2]]), make_batch(n=4, seed=1))
    padded = jax.tree.map(
        lambda x, y: x.at[:2].set(y[:2]), padded, batch
    )  # real: batch's first two
    padded["weight"] = jnp.array([1.0, 1.0, 0.0, 0.0])
    kwargs = dict(public_clip_norm=public_clip_norm, clipping=clipping_method)
    reference, stats = dp_sums("vit", {**batch, "weight": padded["weight"]}, mode, **kwargs)
    with_padding, padded_stats = dp_sums("vit", padded, mode, **kwargs)
    for name in reference:
        np.testing.assert_array_equal(with_padding[name], reference[name])
        assert padded_stats[name]["loss"] == stats[name]["loss"]


def test_public_sum_with_unbounded_norm_is_the_batched_public_gradient():
    """C_pub = ∞: Σ_j p_j as one batched gradient equals the per-example public gradients summed."""
    loss_fn, params = setup("vit_split")
    batch = make_batch()
    sums, _ = dp_sums("vit_split", batch, "maskdp", public_clip_norm=None)
    per_example = jax.jit(
        jax.vmap(lambda ex: flat(clipping.example_grad(loss_fn, params, ex, True)[1]))
    )
    np.testing.assert_allclose(sums["public"], per_example(batch).sum(0), rtol=1e-4, atol=1e-6)
    clipped, _ = dp_sums("vit_split", batch, "maskdp", public_clip_norm=C)
    assert norm(clipped["public"]) <= 4 * C * (1 + 1e-5) < norm(sums["public"])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_all_public_example_has_no_residual(name):
    loss_fn, params = setup(name)
    example = take(make_batch(), 0)
    example["sensitive"] = jnp.zeros_like(example["sensitive"])
    _, full = clipping.example_grad(loss_fn, params, example, public=False)
    _, public = clipping.example_grad(loss_fn, params, example, public=True)
    np.testing.assert_array_equal(flat(full), flat(public))
    contribution, stats = clipping.private_contribution(
        loss_fn, params, example, clip_norm=C, maskdp=True
    )
    assert stats["grad_norm"] == 0.0  # its public gradient enters only through the public batch
    np.testing.assert_array_equal(flat(contribution), np.zeros_like(flat(public)))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_all_sensitive_residual_is_the_whole_input_dependence(name):
    loss_fn, params = setup(name)
    batch = make_batch(n=2)
    batch["sensitive"] = jnp.ones_like(batch["sensitive"])
    batch["label"] = batch["label"].at[1].set(batch["label"][0])
    a, b = take(batch, 0), take(batch, 1)
    # The public view of an all-sensitive example sees no pixel: its gradient is input-independent…
    _, public_a = clipping.example_grad(loss_fn, params, a, public=True)
    _, public_b = clipping.example_grad(loss_fn, params, b, public=True)
    np.testing.assert_allclose(flat(public_a), flat(public_b), rtol=1e-5, atol=1e-7)
    # …so the residual g − p carries all of the example's dependence on its pixels.
    _, full_a = clipping.example_grad(loss_fn, params, a, public=False)
    contribution, stats = clipping.private_contribution(
        loss_fn, params, a, clip_norm=1e6, maskdp=True
    )
    np.testing.assert_allclose(stats["grad_norm"], norm(flat(full_a) - flat(public_a)), rtol=1e-5)
    np.testing.assert_allclose(
        flat(contribution), flat(full_a) - flat(public_a), rtol=1e-4, atol=1e-6
    )
    assert stats["grad_norm"] > 1e-3


@pytest.mark.parametrize("clipping_method", clipping.METHODS)
@pytest.mark.parametrize("name", ALL_MODELS)
def test_maskdp_removal_moves_the_sum_by_exactly_the_clipped_residual(name, clipping_method):
    """Neighbouring datasets: example i's sensitive content is absent; masks, labels, public pixels equal."""
    batch = make_batch()
    batch["absent"] = jnp.zeros_like(batch["sensitive"])
    before, stats = dp_sum(name, batch, "maskdp", clipping=clipping_method)
    assert stats["clipped"] == 4.0
    for i in range(4):
        removed = {**batch, "absent": batch["absent"].at[i].set(batch["sensitive"][i])}
        after, _ = dp_sum(name, removed, "maskdp", clipping=clipping_method)
        np.testing.assert_allclose(norm(before - after), C, rtol=1e-4)  # ≤ C, attained when clipped


def test_maskdp_removal_for_a_conv_model_is_writing_the_public_fill():
    batch = make_batch()
    before, _ = dp_sum("resnet", batch, "maskdp")
    sensitive = batch["sensitive"][1][..., None]
    filled = batch["image"].at[1].set(jnp.where(sensitive, jnp.uint8(128), batch["image"][1]))
    after, _ = dp_sum("resnet", {**batch, "image": filled}, "maskdp")
    np.testing.assert_allclose(norm(before - after), C, rtol=1e-4)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_maskdp_replacement_is_bounded_by_2C_not_C(name):
    batch = make_batch()
    before, _ = dp_sum(name, batch, "maskdp")
    distances = []
    for seed in range(4):
        other = make_batch(seed=seed + 100)["image"][0]
        replaced = (
            batch["image"]
            .at[0]
            .set(jnp.where(batch["sensitive"][0][..., None], other, batch["image"][0]))
        )
        after, _ = dp_sum(name, {**batch, "image": replaced}, "maskdp")
        distances.append(norm(before - after))
    assert max(distances) <= 2 * C * (1 + 1e-5)
    assert max(distances) > C  # replacement really needs the replace-one (2C) accounting


@pytest.mark.parametrize("name", MODELS)
def test_public_pixels_are_not_protected_by_maskdp(name):
    """Public content is outside the MaskDP guarantee: changing it moves the noise-free public
    sum by far more than the 2C that bounds the private one."""
    batch = make_batch()
    before, _ = dp_sums(name, batch, "maskdp", public_clip_norm=None)
    public = ~batch["sensitive"][0][..., None]
    changed = (
        batch["image"].at[0].set(jnp.where(public, 255 - batch["image"][0], batch["image"][0]))
    )
    after, _ = dp_sums(name, {**batch, "image": changed}, "maskdp", public_clip_norm=None)
    assert norm(before["private"] - after["private"]) <= 2 * C * (1 + 1e-5)
    assert norm(before["public"] - after["public"]) > 2 * C


@pytest.mark.parametrize("clipping_method", clipping.METHODS)
def test_dpsgd_removal_of_an_example_moves_the_sum_by_C(clipping_method):
    batch = make_batch()
    before, _ = dp_sum("vit", batch, "dpsgd", clipping=clipping_method)
    removed = {**batch, "weight": batch["weight"].at[2].set(0.0)}
    after, _ = dp_sum("vit", removed, "dpsgd", clipping=clipping_method)
    np.testing.assert_allclose(norm(before - after), C, rtol=1e-4)


def test_mask_of_the_wrong_shape_is_a_clear_error():
    batch = make_batch()
    batch["sensitive"] = batch["sensitive"][:, :, :4]
    with pytest.raises(
        ValueError,
        match=r"sensitive mask has shape \(8, 4\) but image is "
        r"\(8, 8, 3\): expected \(8, 8\)",
    ):
        dp_sum("vit", batch, "maskdp")
