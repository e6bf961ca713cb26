"""Models: patches, token dropping, the split-stream ViT and the compacted public view."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpriv.data import synthetic
from jaxpriv.models import ResNet, VideoViT, ViT, build_model
from jaxpriv.models.vit import patchify, tokens_touching


def test_patchify_orders_pixels_by_token():
    x = jnp.arange(2 * 4 * 4 * 1).reshape(2, 4, 4, 1)
    patches = patchify(x, (2, 2))
    assert patches.shape == (2, 4, 4)
    np.testing.assert_array_equal(patches[0, 1], [2, 3, 6, 7])  # top-right 2×2 block
    video = jnp.zeros((1, 4, 8, 8, 3))
    assert patchify(video, (2, 4, 4)).shape == (1, 2 * 2 * 2, 2 * 4 * 4 * 3)
    with pytest.raises(ValueError, match=r"cannot be cut into patches of shape \(3, 3\)"):
        patchify(x, (3, 3))


def test_tokens_touching_any_masked_pixel():
    mask = jnp.zeros((1, 4, 4), bool).at[0, 0, 3].set(True)
    np.testing.assert_array_equal(tokens_touching(mask, (2, 2)), [[False, True, False, False]])


@pytest.fixture(scope="module")
def clips():
    data = synthetic.generate(4, seed=0, frames=4)
    return jnp.asarray(data["video"]), jnp.asarray(data["sensitive"]).astype(bool)


def test_dropped_pixels_do_not_change_the_output(clips):
    video, sensitive = clips
    for model in (
        VideoViT(8, width=16, depth=1, heads=2, mlp_dim=16),
        VideoViT(8, split_streams=True),
    ):
        params = model.init(jax.random.key(0), video[:1])
        other = jnp.where(sensitive[..., None], 255 - video, video)
        np.testing.assert_array_equal(
            model.apply(params, video, sensitive, sensitive),
            model.apply(params, other, sensitive, sensitive),
        )
        assert not jnp.allclose(model.apply(params, video), model.apply(params, other))


def test_compacted_public_view_equals_the_masked_one(clips):
    video, sensitive = clips
    kept = int(jnp.max(jnp.sum(~tokens_touching(sensitive, (2, 4, 4)), axis=1)))
    masked = VideoViT(8, split_streams=True)
    compact = VideoViT(8, split_streams=True, max_kept_tokens=kept)
    params = masked.init(jax.random.key(0), video[:1])
    np.testing.assert_allclose(
        compact.apply(params, video, sensitive, sensitive),
        masked.apply(params, video, sensitive, sensitive),
        atol=1e-5,
    )


def test_split_streams_public_stream_ignores_sensitive_content(clips):
    """Full view = public head (independent of sensitive pixels) + private head."""
    video, sensitive = clips
    model = VideoViT(8, split_streams=True)
    params = model.init(jax.random.key(0), video[:1])
    other = jnp.where(sensitive[..., None], 255 - video, video)
    assert not jnp.allclose(
        model.apply(params, video, None, sensitive), model.apply(params, other, None, sensitive)
    )
    no_private = jax.tree.map(lambda x: x, params)
    no_private["params"]["private_head"]["kernel"] = jnp.zeros_like(
        params["params"]["private_head"]["kernel"]
    )
    full = model.apply(no_private, video, None, sensitive)
    np.testing.assert_allclose(full, model.apply(no_private, other, None, sensitive), atol=1e-5)
    np.testing.assert_allclose(
        full, model.apply(no_private, video, sensitive, sensitive), atol=1e-5
    )


def test_build_model_names_and_unknown_model():
    assert isinstance(build_model("vit", 3), ViT)
    assert isinstance(build_model("resnet", 3), ResNet)
    with pytest.raises(
        ValueError, match=r"unknown model 'vgg'; choose one of \['resnet', 'video_vit', 'vit'\]"
    ):
        build_model("vgg", 3)
