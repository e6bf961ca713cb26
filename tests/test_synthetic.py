"""Tests of the embedded synthetic dataset."""

import re
import time

import numpy as np
import pytest

from jaxpriv.data import schema, synthetic

N = 96  # 12 examples per class


@pytest.fixture(scope="module")
def videos():
    return synthetic.generate(N, seed=0)


def _bounding_boxes(figure):
    """(top row, left column) of the figure in every frame: int [N, T] each."""
    rows, cols = figure.any(axis=-1), figure.any(axis=-2)
    return rows.argmax(axis=-1), cols.argmax(axis=-1)


def test_same_seed_same_arrays_other_seed_differs(videos):
    again = synthetic.generate(N, seed=0)
    other = synthetic.generate(N, seed=1)
    for name in videos:
        np.testing.assert_array_equal(videos[name], again[name])
    assert not np.array_equal(videos["video"], other["video"])


@pytest.mark.parametrize(
    "kind, frames, pixel_shape",
    [("video", 8, (8, 32, 32, 3)), ("video", 3, (3, 40, 40, 3)), ("image", 8, (32, 32, 3))],
)
def test_shapes_and_dtypes(kind, frames, pixel_shape):
    size = pixel_shape[-2]
    data = synthetic.generate(10, seed=0, kind=kind, frames=frames, size=size)
    assert set(data) == {kind, schema.LABEL, schema.SENSITIVE}
    assert data[kind].shape == (10, *pixel_shape) and data[kind].dtype == np.uint8
    assert data[schema.SENSITIVE].shape == (10, *pixel_shape[:-1])
    assert data[schema.SENSITIVE].dtype == np.uint8
    assert data[schema.LABEL].shape == (10,) and data[schema.LABEL].dtype == np.int64
    for i in range(10):
        schema.validate_example({name: values[i] for name, values in data.items()})


def test_bad_options_raise():
    message = "unknown sensitivity policy 'background'; choose one of ('real', 'all', 'none')"
    with pytest.raises(ValueError, match=re.escape(message)):  # the old name of "real"
        synthetic.generate(2, seed=0, sensitivity="background")
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic.generate(2, seed=0, kind="audio")
    with pytest.raises(ValueError, match="size must be at least 32"):
        synthetic.generate(2, seed=0, size=16)


def test_default_policy_masks_exactly_the_figure(videos):
    figure = videos["sensitive"] == 0
    pixels = videos["video"]
    for i in range(N):
        # The figure wears two colours (a checked pattern); the noisy background is never
        # that uniform, so the figure's pixels are exactly the mask's zeros.
        colours = np.unique(pixels[i][figure[i]], axis=0)
        assert len(colours) == 2
        for colour in colours:
            assert (pixels[i][~figure[i]] != colour).any(axis=-1).mean() > 0.9
    area = figure.sum(axis=(2, 3))
    assert area.min() >= 150 and area.max() <= 260  # one whole figure per frame


@pytest.mark.parametrize("policy, value", [("all", 1), ("none", 0)])
def test_other_policies_are_constant_and_keep_pixels(videos, policy, value):
    data = synthetic.generate(N, seed=0, sensitivity=policy)
    assert (data["sensitive"] == value).all()
    np.testing.assert_array_equal(data["video"], videos["video"])
    np.testing.assert_array_equal(data["label"], videos["label"])


def test_every_class_appears_equally_often(videos):
    counts = np.bincount(videos["label"], minlength=synthetic.NUM_CLASSES)
    assert synthetic.NUM_CLASSES == 8
    np.testing.assert_array_equal(counts, N // 8)


def test_label_encodes_the_motion(videos):
    """label = action * NUM_CONTEXTS + context; the action is the motion."""
    action = videos["label"] // synthetic.NUM_CONTEXTS
    top, left = _bounding_boxes(videos["sensitive"] == 0)
    dx, dy = np.diff(left, axis=1), np.diff(top, axis=1)
    walk_right, walk_left, jump, wave = (action == a for a in range(4))
    assert (dx[walk_right] > 0).all() and (dy[walk_right] == 0).all()
    assert (dx[walk_left] < 0).all() and (dy[walk_left] == 0).all()
    assert (dx[jump] == 0).all() and (np.abs(dy[jump]).sum(axis=1) > 0).all()
    assert (dx[wave] == 0).all() and (dy[wave] == 0).all()
    assert np.abs(dx).max() <= 2 and np.abs(dy).max() <= 2


def test_label_encodes_the_background_orientation(videos):
    """Context 0 (indoor) has horizontal stripes, context 1 vertical ones."""
    context = videos["label"] % synthetic.NUM_CONTEXTS
    pixels = videos["video"].astype(np.float32).mean(axis=(1, 4))  # N,H,W
    # Flat figure pixels would damp both directions alike; compare changes.
    along_rows = np.abs(np.diff(pixels, axis=1)).mean(axis=(1, 2))
    along_cols = np.abs(np.diff(pixels, axis=2)).mean(axis=(1, 2))
    np.testing.assert_array_equal(along_rows > along_cols, context == 0)


def test_single_frame_shows_the_action():
    """Images get the action's pose: no figure silhouette fits two actions."""
    data = synthetic.generate(200, seed=3, kind="image")
    action = data["label"] // synthetic.NUM_CONTEXTS
    actions_of_silhouette = {}
    for figure, a in zip(data["sensitive"] == 0, action):
        rows, cols = np.flatnonzero(figure.any(axis=1)), np.flatnonzero(figure.any(axis=0))
        crop = figure[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        actions_of_silhouette.setdefault((crop.shape, crop.tobytes()), set()).add(a)
    assert all(len(actions) == 1 for actions in actions_of_silhouette.values())
    assert set.union(*actions_of_silhouette.values()) == set(range(synthetic.NUM_ACTIONS))


def test_figure_holds_public_patches_and_tubelets(videos):
    public = videos["sensitive"] == 0
    n, t, h, w = public.shape
    patches = public.reshape(n, t, h // 4, 4, w // 4, 4).all(axis=(3, 5))
    assert patches.sum(axis=(2, 3)).mean() >= 4
    tubelets = patches.reshape(n, t // 2, 2, h // 4, w // 4).all(axis=2)
    assert tubelets.sum(axis=(2, 3)).mean() >= 3
    assert (tubelets.sum(axis=(2, 3)) >= 1).all()


def test_generating_many_clips_is_fast():
    start = time.perf_counter()
    synthetic.generate(1000, seed=0)
    assert time.perf_counter() - start < 5


def test_keypoints_lie_on_the_figure_facing_the_camera():
    points = synthetic.keypoints(16, seed=5, frames=4, size=32)
    figure = synthetic.generate(16, seed=5, frames=4, size=32)[schema.SENSITIVE] == 0
    assert points.shape == (16, 4, 17, 3)
    visible = points[..., 2] == 2
    n, t, k = np.nonzero(visible)
    rows, cols = np.floor(points[n, t, k, 1]).astype(int), np.floor(points[n, t, k, 0]).astype(int)
    # A keypoint on a part's edge (continuous coordinates) touches a figure pixel in a 2×2 window.
    near = np.zeros(len(n), bool)
    for dr in (-1, 0):
        for dc in (-1, 0):
            near |= figure[n, t, np.clip(rows + dr, 0, 31), np.clip(cols + dc, 0, 31)]
    assert near.all()
    unlabelled = points[..., 2] == 0
    assert unlabelled[..., 1:5].all() and not points[unlabelled][:, :2].any()
    left, right = points[..., 5:17:2, 0], points[..., 6:17:2, 0]  # shoulders .. ankles
    assert (left > right).all()  # facing the camera: the person's left is on the image's right
