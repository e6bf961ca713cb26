"""Body models of the avatar method: SMPL-H through smplx (on a synthetic model file in the
SMPL-H format, `body_fixtures`) and anny (offline, its data in its wheel)."""

from __future__ import annotations

import body_fixtures
import numpy as np
import pytest
import torch

from jaxpriv.anonymize.avatar import body

# The body frame is the upright, camera-facing one: SMPL's y-up, +z-facing axes flipped.
SMPL_TO_BODY = np.array([1.0, -1.0, -1.0])


@pytest.fixture(scope="module")
def smplh(tmp_path_factory):
    return body.make_body("smplh", body_fixtures.write_smplh_model(tmp_path_factory.mktemp("m")))


@pytest.fixture(scope="module")
def anny():
    return body.make_body("anny")


def rest(model):
    zeros = torch.zeros(1, 3)
    return model(torch.zeros(1, model.num_pose), model.neutral_shape[None], zeros)


def test_smplx_loads_the_synthetic_smplh_file_and_reads_its_keypoints(smplh):
    pose = torch.zeros(2, smplh.num_pose)
    vertices, keypoints = smplh(pose, smplh.neutral_shape.expand(2, -1), torch.zeros(2, 3))
    assert vertices.shape == (2, body_fixtures.NUM_VERTICES, 3) and keypoints.shape == (2, 17, 3)
    assert smplh.faces.shape[1] == 3 and smplh.faces.max() < body_fixtures.NUM_VERTICES
    # Zero pose is SMPL's T-pose (the fixture's joints), except the arms, which the body lowers.
    for name, joint in [("left_hip", 1), ("right_knee", 5), ("left_ankle", 7)]:
        expected = body_fixtures.JOINTS[joint] * SMPL_TO_BODY
        np.testing.assert_allclose(
            keypoints[0, body.COCO_KEYPOINTS.index(name)], expected, atol=1e-5
        )
    nose = np.array(body_fixtures.FACE_VERTICES[332]) * SMPL_TO_BODY
    np.testing.assert_allclose(keypoints[0, 0], nose, atol=1e-5)
    np.testing.assert_allclose(vertices[0, 332], nose, atol=1e-5)


def test_body_keypoints_are_differentiable_in_the_pose(smplh, anny):
    for model in (smplh, anny):
        pose = torch.zeros(1, model.num_pose, requires_grad=True)
        _, keypoints = model(pose, model.neutral_shape[None], torch.zeros(1, 3))
        keypoints[0, body.COCO_KEYPOINTS.index("left_wrist")].sum().backward()
        assert pose.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["smplh", "anny"])
def test_the_keypoint_function_gives_the_full_models_keypoints(request, name):
    """What the pose fit evaluates (anny's: skinning folded into the keypoints, the rest model
    built once) is the keypoints of the full model, for any pose, shape and orientation."""
    model = request.getfixturevalue(name)
    generator = torch.Generator().manual_seed(0)
    pose = 0.4 * torch.randn(3, model.num_pose, generator=generator)
    spread = 0.2 * torch.randn(3, model.num_shape, generator=generator)
    shape = (model.neutral_shape + spread).clamp(0, 1)
    orient = 0.5 * torch.randn(3, 3, generator=generator)
    _, expected = model(pose, shape, orient)
    fast = model.keypoint_function(shape)(pose, orient)
    torch.testing.assert_close(fast, expected, atol=2e-6, rtol=0)


def test_anny_runs_offline_upright_and_human_sized(anny):
    vertices, keypoints = rest(anny)
    assert vertices.shape[0] == 1 and vertices.shape[1] == anny.faces.max() + 1
    y = keypoints[0, :, 1]  # y points down
    nose, ankles = y[0], y[15:17]
    assert (nose < ankles).all()  # head above feet
    height = float(vertices[0, :, 1].max() - vertices[0, :, 1].min())
    assert 1.4 < height < 2.0
    left, right = keypoints[0, 5, 0], keypoints[0, 6, 0]
    assert left > right  # facing the camera: the person's left on the image's right
    assert keypoints[0, 0, 2] < keypoints[0, 3:5, 2].mean() - 0.05  # the nose nearer than the ears


def test_global_orientation_turns_the_body_about_its_root(anny):
    quarter = torch.tensor([[0.0, np.pi / 2, 0.0]])  # a quarter turn about the vertical
    _, upright = rest(anny)
    _, turned = anny(torch.zeros(1, anny.num_pose), anny.neutral_shape[None], quarter)
    np.testing.assert_allclose(turned[..., 1], upright[..., 1], atol=1e-5)  # heights unchanged
    np.testing.assert_allclose(
        turned.norm(dim=-1), upright.norm(dim=-1), atol=1e-5
    )  # distances to the root unchanged


def test_body_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="smplh body needs model_path"):
        body.make_body("smplh")
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        body.make_body("smplh", tmp_path / "nowhere.pkl")
    with pytest.raises(FileNotFoundError, match="no SMPLH_NEUTRAL.pkl or .npz"):
        body.make_body("smplh", tmp_path)
    with pytest.raises(ValueError, match="anny body ships with its package"):
        body.make_body("anny", tmp_path)
    with pytest.raises(ValueError, match="unknown body 'smpl'"):
        body.make_body("smpl")
