"""3-D body poses of detected persons: fitting to 2-D COCO keypoints, box placement, smoothing.

A :class:`FittedPose` holds the parameters of ``N`` persons for a :class:`~.body.BodyModel`
(leading dimension ``N`` on every field); :meth:`FittedPose.posed` gives their camera-frame
vertices and keypoints (OpenCV camera, :mod:`.camera`). Keypoints are COCO ``[N, 17, 3]`` or
``[17, 3]`` arrays of (x, y, visibility) in pixels; a visibility of 0 marks a missing keypoint,
positive ones weigh the keypoint by ``min(visibility, 1)`` (COCO's flags 1 and 2, or detector
scores).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .body import BodyModel
from .camera import Camera

# Below this many visible keypoints a person's pose is not fitted: place_in_box instead.
MIN_VISIBLE = 4
TORSO = (5, 6, 11, 12)  # shoulders and hips
_LEFT_RIGHT = ((5, 6), (11, 12))  # the person's left and right shoulder, hip


@dataclasses.dataclass
class FittedPose:
    """Body parameters of ``N`` persons; translation in metres, camera frame."""

    global_orient: torch.Tensor  # [N, 3] axis-angle, camera axes (0: upright, facing the camera)
    pose: torch.Tensor  # [N, num_pose]
    shape: torch.Tensor  # [N, num_shape]
    translation: torch.Tensor  # [N, 3] of the root joint

    def __len__(self) -> int:
        return len(self.translation)

    def __getitem__(self, index: int | slice) -> FittedPose:
        """Persons ``index`` (an int keeps the leading dimension: N = 1)."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return FittedPose(*(field[index] for field in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.global_orient, self.pose, self.shape, self.translation

    @staticmethod
    def cat(poses: list[FittedPose]) -> FittedPose:
        """The persons of ``poses`` one after the other."""
        return FittedPose(*(torch.cat(fields) for fields in zip(*(p._fields() for p in poses))))

    def posed(self, body: BodyModel) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame (vertices ``[N, V, 3]``, keypoints ``[N, 17, 3]``) in metres."""
        vertices, keypoints = body(self.pose, self.shape, self.global_orient)
        offset = self.translation[:, None]
        return vertices + offset, keypoints + offset


def _as_keypoints(keypoints) -> torch.Tensor:
    """float32 ``[N, 17, 3]`` of a ``[17, 3]`` or ``[N, 17, 3]`` array or tensor."""
    return torch.as_tensor(np.asarray(keypoints, dtype=np.float32)).reshape(-1, 17, 3)


def count_visible(keypoints) -> torch.Tensor:
    """Number of keypoints with a positive visibility per person, int ``[N]``."""
    return (_as_keypoints(keypoints)[..., 2] > 0).sum(-1)


def _facing_away(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Bool ``[N]``: the person's left shoulder/hip is left of the right one in the image."""
    sides = sum(
        (points[:, left, 0] - points[:, right, 0]) * weights[:, left] * weights[:, right]
        for left, right in _LEFT_RIGHT
    )
    return sides < 0


def _torso_weights(weights: torch.Tensor) -> torch.Tensor:
    """The weights of the torso keypoints only, for persons with 3 or more of them visible."""
    torso = torch.zeros_like(weights)
    torso[:, TORSO] = weights[:, TORSO]
    enough = (torso > 0).sum(-1, keepdim=True) >= 3
    return torch.where(enough, torso, weights)


def _spread(points: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted centroid ``[N, 2]`` and RMS distance to it ``[N]`` of points ``[N, K, 2]``."""
    total = weights.sum(-1, keepdim=True)
    centre = (weights[..., None] * points).sum(1) / total
    spread = torch.sqrt(
        (weights * (points - centre[:, None]).square().sum(-1)).sum(-1) / total[:, 0]
    )
    return centre, spread


def _initial_guess(
    body: BodyModel,
    points: torch.Tensor,
    weights: torch.Tensor,
    camera: Camera,
    shape: torch.Tensor,
) -> FittedPose:
    """Neutral pose, upright and turned towards or away from the camera as the shoulders and
    hips say, at the depth where its torso keypoints' spread matches the image's."""
    n = len(points)
    orient = torch.zeros(n, 3)
    orient[_facing_away(points, weights), 1] = math.pi
    pose = body.neutral_pose.expand(n, -1)
    with torch.no_grad():
        _, model = body(pose, shape, orient)
    torso = _torso_weights(weights)
    model_centre, model_spread = _spread(model[..., :2], torso)
    image_centre, image_spread = _spread(points, torso)
    depth = camera.focal * model_spread / image_spread.clamp(min=1e-3)
    optical_centre = torch.tensor([camera.cx, camera.cy])
    xy = (image_centre - optical_centre) * (depth / camera.focal)[:, None] - model_centre
    return FittedPose(orient, pose.clone(), shape.clone(), torch.cat([xy, depth[:, None]], 1))


def _reprojection_loss(
    fitted: FittedPose,
    body: BodyModel,
    camera: Camera,
    points: torch.Tensor,
    weights: torch.Tensor,
    metres_per_pixel: torch.Tensor,
) -> torch.Tensor:
    """Per person ``[N]``: weighted mean squared reprojection error in metres at the person."""
    _, keypoints = fitted.posed(body)
    residual = (camera.project(keypoints) - points) * metres_per_pixel[:, None, None]
    return (weights * residual.square().sum(-1)).sum(-1) / weights.sum(-1).clamp(min=1e-6)


def _minimise(loss_fn, params: list[torch.Tensor], steps: int) -> None:
    """Runs L-BFGS (strong Wolfe line search) on ``loss_fn() -> scalar`` for ``steps`` iterations."""
    optimizer = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_pose(
    body: BodyModel,
    keypoints,
    camera: Camera,
    *,
    shape: torch.Tensor | None = None,
    init: FittedPose | None = None,
    steps: int = 40,
    torso_steps: int = 15,
    pose_prior: float = 1e-4,
    shape_prior: float = 1e-3,
    temporal: float = 0.0,
) -> FittedPose:
    """Fits orientation, body pose, translation (and shape) to COCO keypoints ``[N, 17, 3]``.

    Minimises, per person, the weighted mean squared reprojection error (through
    ``camera.project``, in metres at the person's initial depth) plus ``pose_prior ·
    |(pose - body.neutral_pose) / body.pose_scale|²`` (the pose is optimised in these units)
    plus ``shape_prior · |shape - body.neutral_shape|²``, with L-BFGS: first ``torso_steps``
    iterations of orientation and translation on the torso keypoints from
    :func:`_initial_guess` (skipped with ``init``), then ``steps`` iterations of all parameters
    on all keypoints. ``shape`` ``[num_shape]`` or ``[N, num_shape]`` fixes the
    shape (one identity per track); ``init``: a previous fit of the same persons (warm start
    for the next video frame). ``temporal > 0``: the persons are the consecutive frames of one
    track, fitted together with ``temporal ·`` :func:`_frame_to_frame` added, so that the
    frames agree on one 3-D solution where 2-D keypoints leave several. Every person needs
    :data:`MIN_VISIBLE` visible keypoints.
    """
    keypoints = _as_keypoints(keypoints)
    points, weights = keypoints[..., :2], keypoints[..., 2].clamp(0, 1)
    n = len(keypoints)
    if bool((count_visible(keypoints) < MIN_VISIBLE).any()):
        raise ValueError(f"fit_pose needs {MIN_VISIBLE} visible keypoints per person")
    fixed_shape = shape is not None
    shape = (body.neutral_shape if shape is None else torch.as_tensor(shape)).expand(n, -1)
    if init is None:
        start = _initial_guess(body, points, weights, camera, shape.float())
    elif len(init) != n:
        raise ValueError(f"init holds {len(init)} persons, keypoints {n}")
    else:
        start = dataclasses.replace(init, shape=shape.float() if fixed_shape else init.shape)
    metres_per_pixel = start.translation[:, 2] / camera.focal
    # The pose is optimised in units of body.pose_scale: an isotropic prior, better conditioning.
    orient, translation = (
        t.detach().clone().requires_grad_(True) for t in (start.global_orient, start.translation)
    )
    shape = start.shape.detach().clone().requires_grad_(not fixed_shape)
    latent = ((start.pose - body.neutral_pose) / body.pose_scale).detach().requires_grad_(True)

    def loss(w: torch.Tensor) -> torch.Tensor:
        fitted = FittedPose(
            orient, body.neutral_pose + body.pose_scale * latent, shape, translation
        )
        total = _reprojection_loss(fitted, body, camera, points, w, metres_per_pixel).sum()
        total = total + pose_prior * latent.square().sum()
        if not fixed_shape:
            total = total + shape_prior * (shape - body.neutral_shape).square().sum()
        if temporal:
            total = total + temporal * _frame_to_frame(fitted)
        return total

    if init is None and torso_steps > 0:
        torso = _torso_weights(weights)
        _minimise(lambda: loss(torso), [orient, translation], torso_steps)
    _minimise(
        lambda: loss(weights), [orient, translation, latent] + [shape] * (not fixed_shape), steps
    )
    with torch.no_grad():
        pose = body.neutral_pose + body.pose_scale * latent
    return FittedPose(orient.detach(), pose, shape.detach(), translation.detach())


def _frame_to_frame(fitted: FittedPose) -> torch.Tensor:
    """Sum of the squared changes of orientation, pose and translation (m) between consecutive
    persons."""
    fields = fitted.global_orient, fitted.pose, fitted.translation
    return sum(field.diff(dim=0).square().sum() for field in fields)


def reprojection_error(
    body: BodyModel, fitted: FittedPose, keypoints, camera: Camera
) -> torch.Tensor:
    """Weighted RMS distance in pixels ``[N]`` between the projected and the given keypoints."""
    keypoints = _as_keypoints(keypoints)
    weights = keypoints[..., 2].clamp(0, 1)
    with torch.no_grad():
        _, posed = fitted.posed(body)
        distance2 = (camera.project(posed) - keypoints[..., :2]).square().sum(-1)
    return torch.sqrt((weights * distance2).sum(-1) / weights.sum(-1).clamp(min=1e-6))


def _projected_bounds(points: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel bounding box (low ``[N, 2]``, high ``[N, 2]``) of camera-frame points ``[N, V, 3]``."""
    projected = camera.project(points)
    return projected.amin(1), projected.amax(1)


def place_in_box(
    body: BodyModel, box, camera: Camera, shape: torch.Tensor | None = None
) -> FittedPose:
    """The neutral standing pose, facing the camera, whose projection spans the height of each
    box ``(x0, y0, x1, y1)`` (``[4]`` or ``[N, 4]``, pixels), centred in it.

    For persons without enough keypoints to fit (:data:`MIN_VISIBLE`). The depth is corrected
    a few times for the perspective of the body's own depth.
    """
    box = torch.as_tensor(np.asarray(box, dtype=np.float32)).reshape(-1, 4)
    n = len(box)
    shape = (body.neutral_shape if shape is None else torch.as_tensor(shape)).expand(n, -1)
    zeros = torch.zeros(n, 3)
    fitted = FittedPose(
        zeros, body.neutral_pose.expand(n, -1).clone(), shape.float().clone(), zeros
    )
    with torch.no_grad():
        vertices, _ = fitted.posed(body)
    height = vertices[..., 1].amax(1) - vertices[..., 1].amin(1)
    box_height = (box[:, 3] - box[:, 1]).clamp(min=1.0)
    depth = camera.focal * height / box_height
    translation = torch.cat([torch.zeros(n, 2), depth[:, None]], 1)
    for _ in range(3):
        low, high = _projected_bounds(vertices + translation[:, None], camera)
        translation *= ((high[:, 1] - low[:, 1]) / box_height)[:, None]
        low, high = _projected_bounds(vertices + translation[:, None], camera)
        shift = (box[:, :2] + box[:, 2:]) / 2 - (low + high) / 2
        translation[:, :2] += shift * (translation[:, 2:] / camera.focal)
    fitted.translation = translation
    return fitted


def smooth_poses(poses: list[FittedPose], window: int = 5) -> list[FittedPose]:
    """Temporal smoothing of one track's per-frame fits (each with the same N persons).

    Every parameter goes through a centred Gaussian (standard deviation ``window / 4`` frames)
    truncated to ``window`` frames, renormalised where it is cut by the clip's ends, so that a
    constant sequence stays constant. Axis-angle orientations are averaged as vectors (fine for
    the small changes between neighbouring frames).
    """
    count = len(poses)
    if count == 0 or window <= 1:
        return list(poses)
    half = window // 2
    offsets = torch.arange(count)[None] - torch.arange(count)[:, None]  # [T, T]
    kernel = torch.exp(-0.5 * (offsets / (window / 4)).square()) * (offsets.abs() <= half)
    kernel = kernel / kernel.sum(1, keepdim=True)
    fields = [torch.stack(f) for f in zip(*(p._fields() for p in poses))]  # each [T, N, D]
    smoothed = [torch.einsum("ts,snd->tnd", kernel.to(f), f) for f in fields]
    return [FittedPose(*(f[t] for f in smoothed)) for t in range(count)]
