"""Book-keeping ("ghost") clipping gives the vmap path's per-example norms and clipped sums."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dp_fixtures import C, dp_sums, flat, make_batch, setup

from jaxpriv.dp import clipping, ghost
from jaxpriv.models import VideoViT
from jaxpriv.train.step import make_loss_fn

FAMILIES = ["vit", "vit_split", "resnet"]  # ResNet: convolutions, GroupNorm and a dense head


@functools.partial(jax.jit, static_argnums=(0, 3))
def vmap_path(loss_fn, params, batch, maskdp):
    """(Σ_i clip(·, C), per-example norms) from each example's whole gradient (vmap)."""
    contributions, stats = jax.vmap(
        lambda ex: clipping.private_contribution(loss_fn, params, ex, clip_norm=C, maskdp=maskdp)
    )(batch)
    return jax.tree.map(lambda x: x.sum(0), contributions), stats["grad_norm"]


@functools.partial(jax.jit, static_argnums=(0, 3))
def ghost_path(loss_fn, params, batch, maskdp):
    """The same from one batched backward pass (``ghost.clipped_sum``)."""

    def objective(p):
        full = loss_fn(p, batch, False)
        return (full - loss_fn(p, batch, True) if maskdp else full), full

    keep = jnp.ones(len(batch["weight"]), bool)
    if maskdp:
        keep = jnp.any(batch["sensitive"].reshape(len(keep), -1), axis=1)
    total, norms, _ = ghost.clipped_sum(objective, params, clip_norm=C, keep=keep)
    return total, norms


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("mode", ["dpsgd", "maskdp"])
def test_ghost_equals_vmap_on_each_model_family(name, mode):
    loss_fn, params = setup(name)
    batch = make_batch()
    batch["sensitive"] = batch["sensitive"].at[3].set(False)  # MaskDP: a residual of exactly 0
    maskdp = mode == "maskdp"
    expected_sum, expected_norms = vmap_path(loss_fn, params, batch, maskdp)
    total, norms = ghost_path(loss_fn, params, batch, maskdp)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-5, atol=1e-7)
    assert (norms[3] == 0) == maskdp
    assert jnp.sum(expected_norms > C) >= 2  # clipping is active
    np.testing.assert_allclose(flat(total), flat(expected_sum), rtol=1e-5, atol=1e-8)


def test_the_mechanism_sums_agree_with_padding_and_both_maskdp_batches():
    batch = make_batch()
    batch["weight"] = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    vmap_sums, vmap_stats = dp_sums("vit_split", batch, "maskdp")
    ghost_sums, ghost_stats = dp_sums("vit_split", batch, "maskdp", clipping="ghost")
    for part in ("private", "public"):
        np.testing.assert_allclose(ghost_sums[part], vmap_sums[part], rtol=1e-5, atol=1e-8)
        for key, value in vmap_stats[part].items():
            np.testing.assert_allclose(ghost_stats[part][key], value, rtol=1e-5)


def test_ghost_equals_vmap_on_the_video_vit_with_a_finite_public_clip():
    model = VideoViT(num_classes=3, width=8, depth=1, heads=2, mlp_dim=8, split_streams=True)
    rng = np.random.default_rng(0)
    batch = {
        "video": jnp.asarray(rng.integers(0, 256, (4, 4, 8, 8, 3)), jnp.uint8),
        "label": jnp.asarray([0, 1, 2, 0], jnp.int32),
        "sensitive": jnp.asarray(rng.random((4, 4, 8, 8)) < 0.1),
        "weight": jnp.asarray([1.0, 1.0, 1.0, 0.0]),  # one padding example
    }
    params = model.init(jax.random.key(0), batch["video"][:1])
    loss_fn = make_loss_fn(model, "video")
    for method_sums in (clipping.private_microbatch_sum, clipping.public_microbatch_sum):
        options = {"maskdp": True} if method_sums is clipping.private_microbatch_sum else {}

        def sums(method, method_sums=method_sums, options=options):
            return method_sums(loss_fn, params, batch, clip_norm=C, method=method, **options)

        (vmap_sum, vmap_stats), (ghost_sum, ghost_stats) = (
            jax.jit(sums, static_argnums=0)(m) for m in clipping.METHODS
        )
        np.testing.assert_allclose(flat(ghost_sum), flat(vmap_sum), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(ghost_stats["loss"], vmap_stats["loss"], rtol=1e-6)
        assert jnp.linalg.norm(flat(vmap_sum)) <= 3 * C * (1 + 1e-5)


@pytest.mark.parametrize("tokens", [2, 64])  # ghost norm (Gram matrices) / instantiated
def test_dense_layer_norms_and_sums_are_exact(tokens):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, tokens, 8, 4)), jnp.float32)
    delta = jnp.asarray(rng.normal(size=(3, tokens, 5)), jnp.float32)
    layer = nn.DenseGeneral(5, axis=(-2, -1))
    params = layer.init(jax.random.key(0), x)["params"]
    norm2, clipped_sum = ghost._dense_layer(layer, params, [x, x[:, :1]], [delta, delta[:, :1]])
    per_example = [  # two calls of one layer: their gradients add
        {
            "kernel": jnp.einsum("tij,to->ijo", x[i], delta[i])
            + jnp.einsum("tij,to->ijo", x[i, :1], delta[i, :1]),
            "bias": delta[i].sum(0) + delta[i, 0],
        }
        for i in range(3)
    ]
    expected = [float(jnp.sum(flat(g) ** 2)) for g in per_example]
    np.testing.assert_allclose(norm2, expected, rtol=1e-5)
    scale = jnp.asarray([0.5, 0.0, 2.0])
    total = clipped_sum(scale)
    np.testing.assert_allclose(
        flat(total), 0.5 * flat(per_example[0]) + 2.0 * flat(per_example[2]), rtol=1e-5, atol=1e-5
    )


def test_a_parameter_beside_submodules_is_a_clear_error():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(x) + self.param("offset", nn.initializers.zeros, (3,))

    model = Mixed()
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)

    def objective(p):
        losses = jnp.sum(model.apply(p, x), axis=1)
        return losses, losses

    with pytest.raises(
        ValueError, match=r"holds \['offset'\] beside submodules.*dp.clipping='vmap'"
    ):
        ghost.clipped_sum(objective, params, clip_norm=C, keep=jnp.ones(2, bool))
