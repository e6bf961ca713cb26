"""3-D pose from 2-D keypoints: fitting recovers a known pose, boxes, smoothing.

The body is mostly the synthetic SMPL-H model of `body_fixtures` (its joints are exactly
known); one test fits the anny body, with its shape free.
"""

from __future__ import annotations

import functools

import body_fixtures
import numpy as np
import pytest
import torch

from jaxpriv.anonymize.avatar import body, pose
from jaxpriv.anonymize.avatar.camera import Camera

CAMERA = Camera.for_image(256, 256)
# Bound on the mean distance (m) between the fitted and the true 3-D keypoints, camera frame:
# the fit sees only 2-D keypoints, so depth and body size trade off a little.
MEAN_JOINT_ERROR = 0.06
ROOT_ALIGNED_ERROR = 0.05  # the same with both skeletons' hip centres aligned


@pytest.fixture(scope="module")
def smplh(tmp_path_factory):
    return body.make_body("smplh", body_fixtures.write_smplh_model(tmp_path_factory.mktemp("m")))


def known_pose(model, orient) -> pose.FittedPose:
    """Arms raised above the T-pose (the neutral pose has them down) and bent, legs apart;
    4 m in front of the camera."""
    rotations = torch.zeros(model.num_pose)
    # (SMPL joint, axis, angle): shoulders, elbows and hips about the forward axis.
    for joint, axis, angle in [(16, 2, 0.5), (17, 2, -0.3), (18, 2, 1.0), (19, 2, -1.2)] + [
        (1, 2, 0.35),
        (2, 2, -0.2),
    ]:
        rotations[3 * (joint - 1) + axis] = angle
    return pose.FittedPose(
        torch.tensor([orient]),
        rotations[None],
        model.neutral_shape[None],
        torch.tensor([[0.1, 0.2, 4.0]]),
    )


def projected(model, fitted: pose.FittedPose, visibility: float = 2.0) -> torch.Tensor:
    with torch.no_grad():
        _, keypoints = fitted.posed(model)
    flags = torch.full((*keypoints.shape[:2], 1), visibility)
    return torch.cat([CAMERA.project(keypoints), flags], -1)


def joint_errors(model, fitted, truth) -> tuple[float, float]:
    """(mean 3-D keypoint error, the same after aligning the hip centres), metres."""
    with torch.no_grad():
        (_, ours), (_, theirs) = fitted.posed(model), truth.posed(model)
    hips = slice(11, 13)
    aligned = (ours - ours[:, hips].mean(1, keepdim=True)) - (
        theirs - theirs[:, hips].mean(1, keepdim=True)
    )
    return float((ours - theirs).norm(dim=-1).mean()), float(aligned.norm(dim=-1).mean())


@pytest.mark.parametrize("orient", [[0.0, 0.0, 0.0], [0.1, 0.3, 0.05]])
def test_fitting_recovers_a_known_pose_from_its_projected_keypoints(smplh, orient):
    truth = known_pose(smplh, orient)
    keypoints = projected(smplh, truth)
    fitted = pose.fit_pose(smplh, keypoints, CAMERA, shape=smplh.neutral_shape)
    assert float(pose.reprojection_error(smplh, fitted, keypoints, CAMERA)) < 1.0  # px
    error, aligned = joint_errors(smplh, fitted, truth)
    assert error < MEAN_JOINT_ERROR and aligned < ROOT_ALIGNED_ERROR
    start = pose.place_in_box(smplh, [0, 0, 256, 256], CAMERA)  # the neutral pose, for scale
    assert joint_errors(smplh, start, truth)[1] > 2 * ROOT_ALIGNED_ERROR  # the fit did the work


def anny_pose(anny, orient, rotations: dict[str, list[float]]) -> pose.FittedPose:
    """anny with the given bones turned (axis-angle in its axes: y is the forward axis), 4 m
    in front of the camera."""
    pose_parameters = torch.zeros(anny.num_pose)
    bones = list(body.ANNY_POSED_BONES)
    for bone, rotation in rotations.items():
        index = 3 * bones.index(bone)
        pose_parameters[index : index + 3] = torch.tensor(rotation)
    return pose.FittedPose(
        torch.tensor([orient]),
        pose_parameters[None],
        anny.neutral_shape[None],
        torch.tensor([[0.1, 0.2, 4.0]]),
    )


def test_fitting_anny_recovers_a_known_pose_with_a_free_shape():
    anny = body.make_body("anny")
    arms_raised_and_bent_a_leg_apart = {
        "upperarm01.L": [0.0, -1.0, 0.0],
        "lowerarm01.L": [0.0, -0.8, 0.0],
        "upperarm01.R": [0.0, 0.5, 0.0],
        "lowerarm01.R": [0.0, -0.7, 0.0],
        "upperleg01.R": [0.0, 0.25, 0.0],
    }
    truth = anny_pose(anny, [0.05, 0.1, 0.15], arms_raised_and_bent_a_leg_apart)
    keypoints = projected(anny, truth)
    fitted = pose.fit_pose(anny, keypoints, CAMERA)
    assert float(pose.reprojection_error(anny, fitted, keypoints, CAMERA)) < 1.0  # px
    error, aligned = joint_errors(anny, fitted, truth)
    assert error < MEAN_JOINT_ERROR and aligned < ROOT_ALIGNED_ERROR


def hip_centred_error(model, fitted, truth) -> float:
    return joint_errors(model, fitted, truth)[1]


def test_world_keypoints_settle_the_pose_in_fewer_steps():
    """A person turned 70° from the camera, an arm raised forward, a knee bent: 2-D keypoints
    leave the limbs' depths ambiguous. With its world keypoints (3-D, centred between the hips,
    as MediaPipe gives them) the fit finds the true 3-D pose in 20 L-BFGS steps; from the
    neutral start it has not after 40."""
    anny = body.make_body("anny")
    arm_forward_knee_bent = {
        "upperarm01.L": [0.0, -1.0, 0.0],
        "lowerarm01.L": [0.0, -0.8, 0.0],
        "upperarm01.R": [0.8, 0.5, 0.0],  # forward
        "lowerarm01.R": [0.0, -0.7, 0.0],
        "upperleg01.R": [0.6, 0.25, 0.0],
        "lowerleg01.R": [-0.9, 0.0, 0.0],
    }
    truth = anny_pose(anny, [0.05, -1.2, 0.1], arm_forward_knee_bent)
    keypoints = projected(anny, truth)
    with torch.no_grad():
        _, points = truth.posed(anny)
    world = (points - points[:, 11:13].mean(1, keepdim=True)).numpy()
    fit = functools.partial(pose.fit_pose, anny, keypoints, CAMERA, shape=anny.neutral_shape)
    from_world = fit(world=world, steps=20)
    assert float(pose.reprojection_error(anny, from_world, keypoints, CAMERA)) < 1.0  # px
    assert hip_centred_error(anny, from_world, truth) < 0.03  # m
    for steps in (20, 40):
        assert hip_centred_error(anny, fit(steps=steps), truth) > 0.03
    # A person without world keypoints (NaN) is fitted as without any.
    unknown = np.full((1, 17, 3), np.nan, np.float32)
    torch.testing.assert_close(fit(world=unknown, steps=5).pose, fit(steps=5).pose)


def test_missing_keypoints_are_ignored(smplh):
    truth = known_pose(smplh, [0.0, 0.2, 0.0])
    keypoints = projected(smplh, truth)
    wrong = keypoints.clone()
    wrong[0, 1:5] = torch.tensor([500.0, -300.0, 0.0])  # eyes and ears: far away, unlabelled
    fitted = pose.fit_pose(smplh, wrong, CAMERA, shape=smplh.neutral_shape)
    error, _ = joint_errors(smplh, fitted, truth)
    assert error < MEAN_JOINT_ERROR
    with pytest.raises(ValueError, match="needs 4 visible keypoints"):
        pose.fit_pose(smplh, keypoints * torch.tensor([1.0, 1.0, 0.0]), CAMERA)


def test_a_warm_start_needs_fewer_steps(smplh):
    truth = known_pose(smplh, [0.0, 0.1, 0.0])
    keypoints = projected(smplh, truth)
    first = pose.fit_pose(smplh, keypoints, CAMERA, shape=smplh.neutral_shape)
    moved = truth
    moved.translation = truth.translation + torch.tensor([[0.05, 0.0, 0.0]])
    next_keypoints = projected(smplh, moved)
    warm = pose.fit_pose(
        smplh, next_keypoints, CAMERA, shape=smplh.neutral_shape, init=first, steps=5
    )
    cold = pose.fit_pose(smplh, next_keypoints, CAMERA, shape=smplh.neutral_shape, steps=5)
    warm_error = pose.reprojection_error(smplh, warm, next_keypoints, CAMERA)
    assert warm_error < 1.0 and warm_error < pose.reprojection_error(
        smplh, cold, next_keypoints, CAMERA
    )


def test_place_in_box_fills_the_box_height_centred(smplh):
    boxes = np.array([[40.0, 30.0, 100.0, 220.0], [150.0, 100.0, 190.0, 180.0]])
    placed = pose.place_in_box(smplh, boxes, CAMERA)
    with torch.no_grad():
        vertices, _ = placed.posed(smplh)
    pixels = CAMERA.project(vertices)
    low, high = pixels.amin(1).numpy(), pixels.amax(1).numpy()
    np.testing.assert_allclose(high[:, 1] - low[:, 1], boxes[:, 3] - boxes[:, 1], atol=0.5)
    np.testing.assert_allclose((low + high) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2, atol=0.5)


def test_smoothing_keeps_a_constant_track_and_damps_jitter(smplh):
    truth = known_pose(smplh, [0.0, 0.0, 0.0])
    constant = [truth] * 7
    for smoothed in pose.smooth_poses(constant, 5):
        torch.testing.assert_close(smoothed.pose, truth.pose)
        torch.testing.assert_close(smoothed.translation, truth.translation)
    generator = torch.Generator().manual_seed(0)
    noisy = [
        pose.FittedPose(
            truth.global_orient,
            truth.pose + 0.1 * torch.randn(truth.pose.shape, generator=generator),
            truth.shape,
            truth.translation,
        )
        for _ in range(12)
    ]
    before = torch.stack([p.pose for p in noisy]).diff(dim=0).abs().mean()
    after = torch.stack([p.pose for p in pose.smooth_poses(noisy, 5)]).diff(dim=0).abs().mean()
    assert after < 0.5 * before
    assert pose.smooth_poses(noisy, 1) == noisy
