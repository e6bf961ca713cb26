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
import scipy.optimize
import torch
from scipy.spatial.transform import Rotation

from .body import BodyModel, KeypointFunction
from .camera import Camera

# Below this many visible keypoints a person's pose is not fitted: place_in_box instead.
MIN_VISIBLE = 4
TORSO = (5, 6, 11, 12)  # shoulders and hips
_UPPER_BODY = (0, 1, 2, 3, 4, 5, 6, 11, 12)  # the head and torso: what the neutral pose gets right
# m² per person: an iteration that changes the fit loss less than this ends it (0.3 mm at the
# person, a twentieth of a pixel at 4 m in a 512-pixel-high image).
TOLERANCE = 1e-7
# Keypoint pairs whose directions the world keypoints fix: shoulders and hips across, the torso's
# sides and the limbs.
BONES = (
    (6, 5), (12, 11), (5, 11), (6, 12), (5, 7), (7, 9), (6, 8), (8, 10),
    (11, 13), (13, 15), (12, 14), (14, 16),
)  # fmt: skip
_BONE_ENDS = torch.tensor(BONES)
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


def _kabsch(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rotations ``[N, 3, 3]`` that best map points ``source`` onto ``target`` (``[N, K, 3]``,
    each centred at its weighted centroid first), weighted least squares."""
    total = weights.sum(-1, keepdim=True)[..., None]
    centred = [
        points - (weights[..., None] * points).sum(1, keepdim=True) / total
        for points in (source, target)
    ]
    covariance = (weights[..., None] * centred[1]).transpose(1, 2) @ centred[0]
    u, _, vt = torch.linalg.svd(covariance)
    flip = torch.ones_like(covariance[:, 0])
    flip[:, 2] = torch.sign(torch.linalg.det(u @ vt))
    return u @ torch.diag_embed(flip) @ vt


def _initial_orientation(
    posed_keypoints: KeypointFunction,
    neutral_pose: torch.Tensor,
    points: torch.Tensor,
    weights: torch.Tensor,
    world: torch.Tensor,
    world_given: torch.Tensor,
) -> torch.Tensor:
    """Axis-angle ``[N, 3]``: the rotation of the neutral body's torso and head onto the
    person's world keypoints where it has them, otherwise upright and turned towards or away
    from the camera as the shoulders and hips say."""
    n = len(points)
    orient = torch.zeros(n, 3)
    orient[_facing_away(points, weights), 1] = math.pi
    known = world_given.sum(-1) > 0
    if bool(known.any()):
        with torch.no_grad():
            model = posed_keypoints(neutral_pose.expand(n, -1), torch.zeros(n, 3))
        upper = torch.zeros_like(world_given)
        upper[:, _UPPER_BODY] = world_given[:, _UPPER_BODY]
        rotations = Rotation.from_matrix(_kabsch(model, world, upper).double().numpy())
        orient[known] = torch.as_tensor(rotations.as_rotvec(), dtype=torch.float32)[known]
    return orient


def _initial_guess(
    posed_keypoints: KeypointFunction,
    neutral_pose: torch.Tensor,
    points: torch.Tensor,
    weights: torch.Tensor,
    camera: Camera,
    orient: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pose ``[N, num_pose]``, translation ``[N, 3]``): the neutral pose, turned by
    ``orient``, at the depth where its torso keypoints' spread matches the image's."""
    pose = neutral_pose.expand(len(points), -1)
    with torch.no_grad():
        model = posed_keypoints(pose, orient)
    torso = _torso_weights(weights)
    model_centre, model_spread = _spread(model[..., :2], torso)
    image_centre, image_spread = _spread(points, torso)
    depth = camera.focal * model_spread / image_spread.clamp(min=1e-3)
    optical_centre = torch.tensor([camera.cx, camera.cy])
    xy = (image_centre - optical_centre) * (depth / camera.focal)[:, None] - model_centre
    return pose.clone(), torch.cat([xy, depth[:, None]], 1)


def _reprojection_loss(
    keypoints: torch.Tensor,
    camera: Camera,
    points: torch.Tensor,
    weights: torch.Tensor,
    metres_per_pixel: torch.Tensor,
) -> torch.Tensor:
    """Per person ``[N]``: weighted mean squared reprojection error of camera-frame keypoints
    ``[N, 17, 3]``, in metres at the person."""
    residual = (camera.project(keypoints) - points) * metres_per_pixel[:, None, None]
    return (weights * residual.square().sum(-1)).sum(-1) / weights.sum(-1).clamp(min=1e-6)


def _bone_directions(keypoints: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``[N, len(BONES), 3]`` along the :data:`BONES` of keypoints ``[N, 17, 3]``."""
    vectors = keypoints[:, _BONE_ENDS[:, 1]] - keypoints[:, _BONE_ENDS[:, 0]]
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def _world_bones(world: torch.Tensor, given: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(bone directions ``[N, len(BONES), 3]`` of the world keypoints, bone weights ``[N,
    len(BONES)]``: 1 where both ends are given), computed once per fit."""
    weights = given[:, _BONE_ENDS[:, 0]] * given[:, _BONE_ENDS[:, 1]]
    return _bone_directions(world), weights


def _world_loss(keypoints: torch.Tensor, directions: torch.Tensor, weights: torch.Tensor):
    """Per person ``[N]``: mean squared difference between the directions of the bones of
    keypoints and the world keypoints' (`_world_bones`). Directions, not positions, so that
    the body model's proportions need not match."""
    difference = (_bone_directions(keypoints) - directions).square().sum(-1)
    return (weights * difference).sum(-1) / weights.sum(-1).clamp(min=1e-6)


def _as_world(world, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(world keypoints ``[N, 17, 3]`` with the missing ones zeroed, float ``[N, 17]``: 1 where
    given) of ``None`` or an array, NaN where missing."""
    if world is None:
        return torch.zeros(n, 17, 3), torch.zeros(n, 17)
    world = torch.as_tensor(np.asarray(world, dtype=np.float32)).reshape(-1, 17, 3)
    if len(world) != n:
        raise ValueError(f"world keypoints of {len(world)} persons, keypoints of {n}")
    given = torch.isfinite(world).all(-1)
    return torch.where(given[..., None], world, 0.0), given.float()


def _minimise(loss_fn, params: list[torch.Tensor], steps: int) -> None:
    """Minimises ``loss_fn() -> scalar`` over ``params`` (updated in place) with SciPy's
    L-BFGS-B for at most ``steps`` iterations, stopping once an iteration changes the loss by
    less than :data:`TOLERANCE` (SciPy's loop costs little next to torch's own L-BFGS, whose
    Python overhead per evaluation matched the evaluation itself here)."""
    sizes = [p.numel() for p in params]

    def assign(flat: np.ndarray) -> None:
        with torch.no_grad():
            for p, chunk in zip(params, torch.from_numpy(flat).split(sizes)):
                p.copy_(chunk.view_as(p))

    def value_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        assign(flat)
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        return float(loss.detach()), torch.cat([g.reshape(-1) for g in grads]).double().numpy()

    start = torch.cat([p.detach().reshape(-1) for p in params]).double().numpy()
    result = scipy.optimize.minimize(
        value_and_grad,
        start,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": steps, "ftol": TOLERANCE, "gtol": 1e-12, "maxcor": 20},
    )
    assign(result.x)


def fit_pose(
    body: BodyModel,
    keypoints,
    camera: Camera,
    *,
    shape: torch.Tensor | None = None,
    init: FittedPose | None = None,
    world=None,
    steps: int = 40,
    torso_steps: int = 15,
    pose_prior: float = 1e-4,
    shape_prior: float = 1e-3,
    world_weight: float = 0.01,
    temporal: float = 0.0,
) -> FittedPose:
    """Fits orientation, body pose, translation (and shape) to COCO keypoints ``[N, 17, 3]``.

    Minimises, per person, the weighted mean squared reprojection error (through
    ``camera.project``, in metres at the person's initial depth) plus ``world_weight ·`` the
    mean squared distance (m²) to its world keypoints (below) plus ``pose_prior · |(pose -
    body.neutral_pose) / body.pose_scale|²`` (the pose is optimised in these units) plus
    ``shape_prior · |shape - body.neutral_shape|²``, with L-BFGS: first ``torso_steps``
    iterations of orientation and translation on the torso keypoints (skipped with ``init``, or
    when every person has world keypoints), then ``steps`` iterations of all parameters on all
    keypoints, each stage stopping early once converged.

    ``world``: ``[N, 17, 3]`` 3-D keypoints in metres, camera axes, as a person model gives
    them (MediaPipe's world landmarks), NaN where missing. Compared centred between the hips,
    they settle what 2-D keypoints leave ambiguous (which way the person faces, which limbs are
    in front) and give the start orientation. ``shape`` ``[num_shape]`` or ``[N, num_shape]``
    fixes the shape (one identity per track; the fit then evaluates only
    ``body.keypoint_function``); ``init``: a previous fit of the same persons (warm start for
    the next video frame). ``temporal > 0``: the persons are the consecutive frames of one
    track, fitted together with ``temporal ·`` :func:`_frame_to_frame` added, so that the
    frames agree on one 3-D solution where 2-D keypoints leave several. Every person needs
    :data:`MIN_VISIBLE` visible keypoints.
    """
    keypoints = _as_keypoints(keypoints)
    points, weights = keypoints[..., :2], keypoints[..., 2].clamp(0, 1)
    n = len(keypoints)
    if bool((count_visible(keypoints) < MIN_VISIBLE).any()):
        raise ValueError(f"fit_pose needs {MIN_VISIBLE} visible keypoints per person")
    world, world_given = _as_world(world, n)
    world_known, world_bones = bool(world_given.any()), _world_bones(world, world_given)
    fixed_shape = shape is not None
    shape = (body.neutral_shape if shape is None else torch.as_tensor(shape)).expand(n, -1)
    if init is not None and len(init) != n:
        raise ValueError(f"init holds {len(init)} persons, keypoints {n}")
    if init is not None and not fixed_shape:
        shape = init.shape
    shape = shape.float().clone().requires_grad_(not fixed_shape)
    if fixed_shape:
        posed_keypoints = body.keypoint_function(shape)
    else:
        posed_keypoints = lambda pose, orient: body(pose, shape, orient)[1]  # noqa: E731
    if init is None:
        start = (posed_keypoints, body.neutral_pose, points, weights)
        orient = _initial_orientation(*start, world, world_given)
        pose, translation = _initial_guess(*start, camera, orient)
    else:
        orient, pose, translation = init.global_orient, init.pose, init.translation
    metres_per_pixel = translation[:, 2] / camera.focal
    orient, translation = (t.detach().clone().requires_grad_(True) for t in (orient, translation))
    # The pose is optimised in units of body.pose_scale: an isotropic prior, better conditioning.
    latent = ((pose - body.neutral_pose) / body.pose_scale).detach().requires_grad_(True)

    def loss(w: torch.Tensor) -> torch.Tensor:
        pose = body.neutral_pose + body.pose_scale * latent
        posed = posed_keypoints(pose, orient) + translation[:, None]
        total = _reprojection_loss(posed, camera, points, w, metres_per_pixel).sum()
        if world_known:
            total = total + world_weight * _world_loss(posed, *world_bones).sum()
        total = total + pose_prior * latent.square().sum()
        if not fixed_shape:
            total = total + shape_prior * (shape - body.neutral_shape).square().sum()
        if temporal:
            total = total + temporal * _frame_to_frame(FittedPose(orient, pose, shape, translation))
        return total

    if init is None and torso_steps > 0 and not bool(world_given.any(-1).all()):
        _minimise(lambda: loss(_torso_weights(weights)), [orient, translation], torso_steps)
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
