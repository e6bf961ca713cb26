"""Parametric human bodies for the avatar method: a common interface and two implementations.

Every body maps ``pose [B, num_pose]``, ``shape [B, num_shape]`` and ``global_orient [B, 3]`` to
``(vertices [B, V, 3], keypoints [B, 17, 3])``, differentiably, in metres and in the *body
frame*: the axes of the OpenCV camera (:mod:`.camera`: x right in the image, y down, z away from
the camera), the origin at the root joint (pelvis). ``global_orient`` is an axis-angle rotation
in those axes about the root: zero is an upright person facing the camera (head towards -y,
chest towards -z, the person's left at +x). Adding a translation places the body in the camera
frame. Keypoints follow the COCO order of :data:`COCO_KEYPOINTS`.

* :class:`AnnyBody` (the default): the anny model (NAVER, Apache-2.0 code, CC0 data shipped in
  its wheel, so it runs offline), on a coarse mesh; built once into a small cache.
* :class:`SmplhBody`: SMPL-H through ``smplx``, from the licensed model files the user supplies.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from jaxpriv import files

COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


class BodyModel(Protocol):
    """A posable, shape-parametric body (see the module docstring for the frame)."""

    faces: np.ndarray  # int [F, 3] triangles
    num_pose: int  # body pose parameters per example (excluding the global orientation)
    num_shape: int  # shape parameters
    neutral_pose: torch.Tensor  # [num_pose]: a relaxed standing pose, the pose prior's mean
    pose_scale: torch.Tensor  # [num_pose]: typical deviation from it (rad), the prior's scale
    neutral_shape: torch.Tensor  # [num_shape]: an average adult, the shape prior's mean

    def __call__(
        self, pose: torch.Tensor, shape: torch.Tensor, global_orient: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices [B, V, 3], keypoints [B, 17, 3]) in metres, body frame; differentiable."""
        ...

    def keypoint_function(self, shape: torch.Tensor) -> KeypointFunction:
        """The keypoints of ``B`` bodies of fixed shapes ``[B, num_shape]``: what the pose fit
        evaluates, at most as costly as ``__call__``."""
        ...


# (pose [B, num_pose], global_orient [B, 3]) -> keypoints [B, 17, 3], body frame; differentiable.
KeypointFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def rotation_matrices(rotvecs: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of axis-angle vectors ``[..., 3]`` (Rodrigues' formula).

    The angle is taken as ``sqrt(|r|² + 1e-12)`` so that the gradient is finite at zero.
    """
    angle = torch.sqrt(rotvecs.square().sum(-1, keepdim=True) + 1e-12)[..., None]
    x, y, z = (rotvecs / angle[..., 0]).unbind(-1)
    zero = torch.zeros_like(x)
    cross = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).unflatten(-1, (3, 3))
    eye = torch.eye(3, dtype=rotvecs.dtype, device=rotvecs.device)
    return eye + torch.sin(angle) * cross + (1 - torch.cos(angle)) * (cross @ cross)


def to_body_frame(
    points: torch.Tensor, root: torch.Tensor, axes: torch.Tensor, global_orient: torch.Tensor
) -> torch.Tensor:
    """``R(global_orient) · axes · (points - root)``: points ``[B, N, 3]`` of a model's own frame
    (root ``[B, 3]``; ``axes [3, 3]`` maps its axes to the upright, camera-facing body frame)."""
    rotation = rotation_matrices(global_orient) @ axes.to(points)
    return (points - root[:, None]) @ rotation.transpose(1, 2)


# --------------------------------------------------------------------------------------------
# SMPL-H (licensed model files, through smplx)

# SMPL joints of the COCO body keypoints, and smplx's SMPL vertex ids of the face keypoints.
_SMPL_JOINTS = {
    "left_shoulder": 16,
    "right_shoulder": 17,
    "left_elbow": 18,
    "right_elbow": 19,
    "left_wrist": 20,
    "right_wrist": 21,
    "left_hip": 1,
    "right_hip": 2,
    "left_knee": 4,
    "right_knee": 5,
    "left_ankle": 7,
    "right_ankle": 8,
}
_SMPL_FACE_VERTICES = {
    "nose": "nose",
    "left_eye": "leye",
    "right_eye": "reye",
    "left_ear": "lear",
    "right_ear": "rear",
}
# SMPL: y up, the person faces +z, their left at +x.
_SMPL_AXES = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
# Arms lowered from SMPL's T-pose by this angle (rad) about the forward axis.
_SMPL_ARMS_DOWN = 1.0
# Typical range (rad) of the 21 body joints' rotations: hips, spine1, knees, spine2, ankles,
# spine3, feet, neck, collars, head, shoulders, elbows, wrists.
_SMPL_POSE_SCALE = [1.0, 1.0, 0.4, 1.5, 1.5, 0.4, 0.5, 0.5, 0.4, 0.3, 0.3, 0.5, 0.3, 0.3, 0.5]
_SMPL_POSE_SCALE += [1.5, 1.5, 1.5, 1.5, 0.5, 0.5]


def smplh_file(model_path: str | os.PathLike, gender: str = "neutral") -> Path:
    """The SMPL-H model file: ``model_path`` itself, or ``SMPLH_<GENDER>.pkl``/``.npz`` in the
    folder ``model_path`` or in its ``smplh`` subfolder (smplx's layout)."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"SMPL-H model path {str(path)!r} does not exist")
    if path.is_file():
        return path
    for folder in (path, path / "smplh"):
        for ext in ("pkl", "npz"):
            candidate = folder / f"SMPLH_{gender.upper()}.{ext}"
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"no SMPLH_{gender.upper()}.pkl or .npz in {str(path)!r} or in its smplh/ subfolder"
    )


class SmplhBody:
    """SMPL-H from the user's licensed model files (smplx); flat hands, ``num_betas`` betas.

    ``pose``: the 21 body joints' axis-angle rotations (SMPL's ``body_pose``, 63 values, zero
    being SMPL's T-pose). COCO keypoints: SMPL joints for the limbs, smplx's SMPL vertex ids for
    the nose, eyes and ears.
    """

    def __init__(self, model_path: str | os.PathLike, gender: str = "neutral", num_betas: int = 10):
        import smplx
        from smplx.vertex_ids import vertex_ids

        path = smplh_file(model_path, gender)
        self.model = smplx.create(
            str(path),
            model_type="smplh",
            gender=gender,
            ext=path.suffix.lstrip("."),
            num_betas=num_betas,
            use_pca=False,
            flat_hand_mean=True,
            create_transl=False,
        )
        self.faces = np.asarray(self.model.faces, dtype=np.int64)
        self.num_pose = 3 * self.model.NUM_BODY_JOINTS
        self.num_shape = self.model.num_betas
        self.neutral_pose = torch.zeros(self.num_pose)
        self.neutral_pose[3 * (16 - 1) + 2] = -_SMPL_ARMS_DOWN  # left shoulder
        self.neutral_pose[3 * (17 - 1) + 2] = _SMPL_ARMS_DOWN  # right shoulder
        self.pose_scale = torch.tensor(_SMPL_POSE_SCALE).repeat_interleave(3)
        self.neutral_shape = torch.zeros(self.num_shape)
        ids = vertex_ids["smplh"]
        self._face_vertices = torch.tensor(
            [ids[_SMPL_FACE_VERTICES[k]] for k in COCO_KEYPOINTS[:5]]
        )
        self._joints = torch.tensor([_SMPL_JOINTS[k] for k in COCO_KEYPOINTS[5:]])

    def __call__(
        self, pose: torch.Tensor, shape: torch.Tensor, global_orient: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices [B, 6890, 3], keypoints [B, 17, 3]), body frame."""
        zeros = pose.new_zeros
        batch = pose.shape[0]
        out = self.model(
            betas=shape,
            body_pose=pose,
            global_orient=zeros(batch, 3),
            left_hand_pose=zeros(batch, 3 * self.model.NUM_HAND_JOINTS),
            right_hand_pose=zeros(batch, 3 * self.model.NUM_HAND_JOINTS),
        )
        keypoints = torch.cat(
            [out.vertices[:, self._face_vertices], out.joints[:, self._joints]], dim=1
        )
        root = out.joints[:, 0]
        return (
            to_body_frame(out.vertices, root, _SMPL_AXES, global_orient),
            to_body_frame(keypoints, root, _SMPL_AXES, global_orient),
        )

    def keypoint_function(self, shape: torch.Tensor) -> KeypointFunction:
        """``__call__``'s keypoints (SMPL-H's pose blend shapes move the joints' vertices)."""
        return lambda pose, global_orient: self(pose, shape, global_orient)[1]


# --------------------------------------------------------------------------------------------
# anny (offline, CC0 data)

# The rig without finger, toe and face bones, and the bones it poses, SMPL-like, with the typical
# range (rad) of each: hips, knees, ankles; three spine bones, neck and head; collars, shoulders,
# elbows and wrists. The twist bones (upperarm02, lowerarm02, upperleg02, lowerleg02) keep
# their rest pose.
ANNY_RIG = "anny-nohands-notoes"
ANNY_POSED_BONES = {
    "upperleg01.L": 1.0,
    "upperleg01.R": 1.0,
    "lowerleg01.L": 1.5,
    "lowerleg01.R": 1.5,
    "foot.L": 0.5,
    "foot.R": 0.5,
    "spine04": 0.4,
    "spine02": 0.4,
    "spine01": 0.4,
    "neck01": 0.5,
    "head": 0.5,
    "clavicle.L": 0.3,
    "clavicle.R": 0.3,
    "upperarm01.L": 1.5,
    "upperarm01.R": 1.5,
    "lowerarm01.L": 1.5,
    "lowerarm01.R": 1.5,
    "wrist.L": 0.5,
    "wrist.R": 0.5,
}
# An average young adult (about 1.8 m; the age anchors are newborn, baby, child, young, old at
# -1/3, 0, 1/3, 2/3, 1: age 0.5 would be a teenager).
ANNY_NEUTRAL_SHAPE = {
    "gender": 0.5,
    "age": 2 / 3,
    "muscle": 0.5,
    "weight": 0.5,
    "height": 0.5,
    "proportions": 0.5,
}
# anny: z up, the person faces -y, their left at +x.
_ANNY_AXES = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def default_anny_cache_dir() -> Path:
    """``$JAXPRIV_ANNY_DIR`` or ``~/.cache/jaxpriv/anny``: where :class:`AnnyBody` keeps its build."""
    return Path(os.environ.get("JAXPRIV_ANNY_DIR", "~/.cache/jaxpriv/anny")).expanduser()


@contextlib.contextmanager
def _anny_cache(path: str | os.PathLike):
    """Points anny's own build cache to ``path`` while the block runs."""
    import anny.paths

    previous = anny.paths.get_anny_cache_path()
    anny.paths.set_anny_cache_path(path)
    try:
        yield
    finally:
        anny.paths.set_anny_cache_path(previous)


def _transfer_keypoints(reference, data) -> torch.Tensor:
    """anny's COCO keypoint regressor, defined on the full mesh ``reference`` (ModelData),
    carried over to the mesh of ``data``: float64 ``[17, V]``, rows summing to 1.

    Each full-mesh vertex the regressor reads is replaced by its closest point on the new
    mesh (barycentric weights of that triangle's corners), both meshes at rest.
    """
    from anny.paths import get_anny_root_dir
    from anny.utils.warp_mesh_utils import point_to_mesh_distance_and_face_uvs

    coco = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    full = torch.stack([coco[k][reference.base_mesh_vertex_indices] for k in COCO_KEYPOINTS])
    support = torch.nonzero(full.any(0))[:, 0]
    _, faces, uvs = point_to_mesh_distance_and_face_uvs(
        reference.template_vertices[support].float(),
        data.template_vertices.float(),
        data.faces,
        1.0,
    )
    uvs = uvs.double()
    barycentric = torch.stack([uvs[:, 0], uvs[:, 1], 1 - uvs[:, 0] - uvs[:, 1]], 1)
    contributions = full[:, support, None].double() * barycentric  # [17, S, 3]
    weights = torch.zeros(len(COCO_KEYPOINTS), len(data.template_vertices), dtype=torch.float64)
    return weights.index_add_(1, data.faces[faces.long()].flatten(), contributions.flatten(1))


def _build_anny(topology: str):
    """(ModelData of anny on ``topology``, COCO regressor [17, V]); minutes on CPU.

    anny's intermediate builds (~800 MB) go to a scratch folder that is deleted afterwards.
    """
    from anny.models import build_compact_model_data
    from anny.models.full_model import build_anny_model_data
    from anny.models.model_data import RigConfig, TopologyConfig, with_bone_orientation

    rig = RigConfig.from_string(ANNY_RIG)
    with tempfile.TemporaryDirectory() as scratch, _anny_cache(scratch):
        data = build_compact_model_data(
            rig=rig,
            topology=TopologyConfig.from_string(topology),
            local_changes="none",
            facial_actions="none",
            phenotypes="default",
        )
        # The mesh the coarse topology was projected on, which anny's COCO regressor reads.
        reference = build_anny_model_data(
            rig=with_bone_orientation(rig, "blender"),
            topology=TopologyConfig.from_string("anny"),
            local_changes="none",
            facial_actions="none",
        )
    return data, _transfer_keypoints(reference, data)


def _load_anny(cache_dir: Path, topology: str):
    """(ModelData, COCO regressor) from ``cache_dir``, built and saved there on first use."""
    import anny
    import safetensors.torch
    from anny.models.model_data import ModelData

    stem = f"anny-{anny.__version__}-{ANNY_RIG}-{topology}"
    model_file = cache_dir / f"{stem}.model.safetensors"
    keypoints_file = cache_dir / f"{stem}.coco.safetensors"
    if not keypoints_file.exists():  # written last: the build is complete
        data, keypoints = _build_anny(topology)
        with files.atomic_path(model_file) as temporary:
            data.save_safetensors(str(temporary))
        with files.atomic_path(keypoints_file) as temporary:
            safetensors.torch.save_file({"coco": keypoints}, str(temporary))
    keypoints = safetensors.torch.load_file(keypoints_file)["coco"]
    return ModelData.load_safetensors(model_file), keypoints


class AnnyBody:
    """The anny body on a coarse mesh, with anny's COCO keypoint regressor carried over to it.

    ``topology``: one of anny's reduced meshes (``notoes_collapse10pc``: 1229 vertices, 2454
    triangles; ``notoes_collapse5pc``, ``notoes_collapse3pc``, or the full ``notoes``). The first
    use of a topology builds it (about 2 minutes on CPU, ~1 GB of scratch space) into
    ``cache_dir`` (default: :func:`default_anny_cache_dir`, ~6 MB); later loads take ~10 ms.

    ``pose``: axis-angle rotations of the :data:`ANNY_POSED_BONES` (57 values) in anny's
    world-aligned rest axes (its ``local-ref`` parameterization); zero is anny's rest A-pose.
    ``shape``: anny's phenotypes (gender, age, muscle, weight, height, proportions) in [0, 1],
    clamped there; :data:`ANNY_NEUTRAL_SHAPE` is the neutral value.
    """

    def __init__(
        self, cache_dir: str | os.PathLike | None = None, topology: str = "notoes_collapse10pc"
    ):
        from anny.models.phenotype import Anny

        cache_dir = default_anny_cache_dir() if cache_dir is None else Path(cache_dir)
        data, keypoints = _load_anny(cache_dir, topology)
        self.model = Anny.from_model_data(
            data,
            skinning_method="lbs",
            pose_parameterization="local-ref",
            bone_orientation="cached",
            root_identity_orientation=False,
            phenotypes="default",
        ).to(torch.float32)
        self.keypoint_weights = keypoints.float()
        self.faces = self.model.faces.numpy().astype(np.int64)
        self._bones = torch.tensor([self.model.bone_labels.index(b) for b in ANNY_POSED_BONES])
        self.num_pose = 3 * len(ANNY_POSED_BONES)
        self.num_shape = len(self.model.phenotype_labels)
        self.neutral_pose = torch.zeros(self.num_pose)
        self.pose_scale = torch.tensor(list(ANNY_POSED_BONES.values())).repeat_interleave(3)
        self.neutral_shape = torch.tensor(
            [ANNY_NEUTRAL_SHAPE[k] for k in self.model.phenotype_labels]
        )

    def _deltas(self, pose: torch.Tensor) -> torch.Tensor:
        """anny's per-bone delta transforms ``[B, J, 4, 4]`` for ``pose [B, num_pose]``."""
        batch = pose.shape[0]
        deltas = torch.eye(4, dtype=pose.dtype, device=pose.device).repeat(
            batch, self.model.bone_count, 1, 1
        )
        deltas[:, self._bones, :3, :3] = rotation_matrices(pose.unflatten(1, (-1, 3)))
        return deltas

    def __call__(
        self, pose: torch.Tensor, shape: torch.Tensor, global_orient: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices [B, V, 3], keypoints [B, 17, 3]), body frame."""
        out = self.model(pose_parameters=self._deltas(pose), phenotype_kwargs=shape)
        vertices = out["vertices"]
        keypoints = torch.einsum("kv,bvd->bkd", self.keypoint_weights, vertices)
        root = out["bone_poses"][:, 0, :3, 3]
        return (
            to_body_frame(vertices, root, _ANNY_AXES, global_orient),
            to_body_frame(keypoints, root, _ANNY_AXES, global_orient),
        )

    def keypoint_function(self, shape: torch.Tensor) -> KeypointFunction:
        """``__call__``'s keypoints, exactly, without the mesh and with the rest model (shape
        blend shapes, bone orientations) built once.

        Linear blend skinning is linear in the vertices, so keypoint ``k`` is ``Σ_j T_j y_kj``
        over the bone transforms ``T_j = W_j P_j⁻¹`` (posed pose ``W``, rest pose ``P``), with
        ``y_kj = Σ_v a_kv w_vj (x_v, 1)`` (regressor ``a``, skinning weights ``w``, rest vertices
        ``x``): ``Σ_j W_j z_kj`` with ``z = P⁻¹ y`` computed once. The posed poses follow anny's
        forward kinematics in its ``local-ref`` parameterization (rotation-only deltas ``D``):
        ``W_c = W_p K_c``, ``K_c = [U_pᵀ D_c U_c | U_pᵀ A_p (h_c − h_p)]`` (reference
        orientations ``U``, rest heads ``h``, ``A_p = U_p R_pᵀ``, ``A_0 = I``), ``W_0 = K_0``,
        one batched product per depth level.
        """
        model = self.model
        n = len(shape)
        with torch.no_grad():
            _, phenotypes, local_changes, facial_actions = model.get_tensor_inputs(
                None, shape, None, None
            )
            rest = model.get_rest_model(
                model._get_phenotype_blendshape_coefficients(
                    phenotypes, local_changes, facial_actions
                )
            )
            rest_poses = rest["rest_bone_poses"].expand(n, -1, -1, -1)
            rotations, heads = rest_poses[..., :3, :3], rest_poses[..., :3, 3]
            levels, (local, order, inverse, parent) = (
                model.kinematic_chain_levels,
                model.kinematic_chain_indices,
            )
            reference = model.reference_bone_orientations
            reference = rotations if reference is None else reference.expand_as(rotations)
            to_reference = reference @ rotations.transpose(-1, -2)
            to_reference[:, 0] = torch.eye(3)
            parent_t = reference[:, parent].transpose(-1, -2)
            offsets = parent_t @ to_reference[:, parent] @ (heads - heads[:, parent])[..., None]
            links = torch.eye(4).repeat(n, model.bone_count, 1, 1)
            links[..., :3, :3] = parent_t @ reference
            links[..., :3, 3:] = offsets
            vertices = rest["rest_vertices"].expand(n, -1, -1)
            homogeneous = torch.cat([vertices, torch.ones_like(vertices[..., :1])], -1)
            anchors = torch.einsum(
                "kv,vj,bvd->bjdk",
                self.keypoint_weights,
                model.dense_vertex_bone_weights.to(homogeneous),
                homogeneous,
            )
            anchors = torch.linalg.inv(rest_poses) @ anchors  # z = P⁻¹ y, [N, J, 4, 17]
        posed_before, posed_after = parent_t[:, self._bones], reference[:, self._bones]

        def keypoints(pose: torch.Tensor, global_orient: torch.Tensor) -> torch.Tensor:
            deltas = rotation_matrices(pose.unflatten(1, (-1, 3)))
            chain = links.clone()
            chain[:, self._bones, :3, :3] = posed_before @ deltas @ posed_after
            chain = chain[:, order]
            posed = [chain[:, :1]]
            for first, last in levels[1:]:
                posed.append(posed[-1][:, local[first:last]] @ chain[:, first:last])
            poses = torch.cat(posed, 1)[:, inverse]
            points = (poses[..., :3, :] @ anchors).sum(1).transpose(1, 2)
            return to_body_frame(points, poses[:, 0, :3, 3], _ANNY_AXES, global_orient)

        return keypoints


def make_body(name: str = "anny", model_path: str | os.PathLike | None = None, **kw) -> BodyModel:
    """The body ``name``: ``"anny"`` (``AnnyBody(**kw)``) or ``"smplh"`` (``SmplhBody(model_path,
    **kw)``, which needs the licensed SMPL-H files)."""
    if name == "anny":
        if model_path is not None:
            raise ValueError("the anny body ships with its package: it takes no model_path")
        return AnnyBody(**kw)
    if name == "smplh":
        if model_path is None:
            raise ValueError(
                "the smplh body needs model_path: the licensed SMPL-H model files "
                "(SMPLH_<GENDER>.pkl/.npz, from https://mano.is.tue.mpg.de) or their folder"
            )
        return SmplhBody(model_path, **kw)
    raise ValueError(f"unknown body {name!r}; expected 'anny' or 'smplh'")
