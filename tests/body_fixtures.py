"""A synthetic SMPL-H model file that ``smplx`` loads (the real files are licensed).

The body is a stick figure of tubes, SMPL's T-pose at human proportions (y up, facing +z, the
person's left at +x, metres, pelvis at the origin): one tube of ``RINGS × RING_SIZE`` vertices
per bone from a joint's parent to the joint (plus one from the head joint to the top of the
head), rigidly skinned to the parent joint, and 6890 vertices as in SMPL, the nose, eyes and
ears at smplx's SMPL vertex ids. Each joint is regressed as the centre of the tube ring around
it, so that ``J_regressor @ vertices`` is the joint position at rest and, with this rigid
skinning, in any pose too. Two shape directions (overall scale, width); no pose correctives.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

NUM_VERTICES = 6890
RINGS, RING_SIZE = 10, 12
NUM_BETAS = 10

# SMPL-H kinematic tree: 22 body joints, then 15 joints per hand (index, middle, pinky, ring,
# thumb; three each) under the left (20) and right (21) wrists.
_BODY_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
PARENTS = np.array(
    _BODY_PARENTS
    + [
        w if i % 3 == 0 else 22 + 15 * side + i - 1
        for side, w in ((0, 20), (1, 21))
        for i in range(15)
    ]
)

# T-pose positions of the left side and the midline; the right side mirrors x.
_BODY_JOINTS = np.array(
    [
        [0.0, 0.0, 0.0],  # pelvis
        [0.08, -0.08, 0.0],  # left hip
        [-0.08, -0.08, 0.0],  # right hip
        [0.0, 0.11, -0.01],  # spine1
        [0.09, -0.48, 0.01],  # left knee
        [-0.09, -0.48, 0.01],
        [0.0, 0.24, 0.0],  # spine2
        [0.09, -0.88, -0.03],  # left ankle
        [-0.09, -0.88, -0.03],
        [0.0, 0.30, 0.01],  # spine3
        [0.10, -0.93, 0.10],  # left foot
        [-0.10, -0.93, 0.10],
        [0.0, 0.50, -0.01],  # neck
        [0.07, 0.42, 0.0],  # left collar
        [-0.07, 0.42, 0.0],
        [0.0, 0.58, 0.03],  # head
        [0.17, 0.44, -0.01],  # left shoulder
        [-0.17, 0.44, -0.01],
        [0.43, 0.44, -0.02],  # left elbow
        [-0.43, 0.44, -0.02],
        [0.68, 0.44, -0.01],  # left wrist
        [-0.68, 0.44, -0.01],
    ]
)
# Finger joints relative to the left wrist (index, middle, pinky, ring: three along +x; the
# thumb forward).
_FINGER_BASES = {"index": 0.03, "middle": 0.01, "pinky": -0.03, "ring": -0.01}
_LEFT_HAND = np.array(
    [[0.08 + 0.03 * k, 0.0, z] for z in _FINGER_BASES.values() for k in range(3)]
    + [[0.025 + 0.02 * k, -0.01, 0.035 + 0.015 * k] for k in range(3)]
)
JOINTS = np.concatenate(
    [
        _BODY_JOINTS,
        _BODY_JOINTS[20] + _LEFT_HAND,
        (_BODY_JOINTS[20] + _LEFT_HAND) * [-1.0, 1.0, 1.0],
    ]
)
HEAD_TOP = np.array([0.0, 0.80, 0.0])
# The face keypoints at smplx's SMPL vertex ids (smplx.vertex_ids["smplh"]).
FACE_VERTICES = {
    332: [0.0, 0.68, 0.10],  # nose
    2800: [0.033, 0.71, 0.085],  # left eye
    6260: [-0.033, 0.71, 0.085],  # right eye
    583: [0.085, 0.69, 0.0],  # left ear
    4071: [-0.085, 0.69, 0.0],  # right ear
}
# Tube radius of the bone ending at each body joint (hand bones: 1 cm), and of the head.
_RADII = [0.0, 0.09, 0.09, 0.13, 0.08, 0.08, 0.13, 0.055, 0.055, 0.13, 0.045, 0.045, 0.06]
_RADII += [0.06, 0.06, 0.06, 0.06, 0.06, 0.05, 0.05, 0.04, 0.04] + [0.01] * 30
HEAD_RADIUS = 0.09


def _ring_basis(direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``u, v`` with ``(u, v, direction)`` right-handed and orthonormal."""
    d = direction / np.linalg.norm(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _tube(start: np.ndarray, end: np.ndarray, radius: float) -> np.ndarray:
    """``[RINGS, RING_SIZE, 3]``: rings from ``start`` to ``end``, counter-clockwise about it."""
    u, v = _ring_basis(end - start)
    angles = np.linspace(0, 2 * np.pi, RING_SIZE, endpoint=False)
    circle = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    centres = start + np.linspace(0, 1, RINGS)[:, None] * (end - start)
    return centres[:, None] + circle


def _tube_faces(first: int) -> np.ndarray:
    """Outward triangles ``[2·(RINGS-1)·RING_SIZE, 3]`` of the tube whose vertices start at
    ``first`` (in tube order)."""
    ring = np.arange(RING_SIZE)
    a = first + np.arange(RINGS - 1)[:, None] * RING_SIZE + ring
    b = first + np.arange(RINGS - 1)[:, None] * RING_SIZE + (ring + 1) % RING_SIZE
    c, d = a + RING_SIZE, b + RING_SIZE
    return np.concatenate([np.stack([a, b, d], -1), np.stack([a, d, c], -1)]).reshape(-1, 3)


def smplh_model() -> dict[str, np.ndarray]:
    """The synthetic model's arrays, keyed as in the SMPL-H model files."""
    num_joints = len(JOINTS)
    bones = [(PARENTS[j], JOINTS[PARENTS[j]], JOINTS[j], _RADII[j]) for j in range(1, num_joints)]
    bones.append((15, JOINTS[15], HEAD_TOP, HEAD_RADIUS))
    tubes = np.stack([_tube(start, end, r) for _, start, end, r in bones])  # [N, R, K, 3]
    per_tube = RINGS * RING_SIZE
    # Tube vertices take the ids left free by the face keypoints; the rest sit at the pelvis.
    free = np.setdiff1d(np.arange(NUM_VERTICES), list(FACE_VERTICES))
    ids = free[: len(bones) * per_tube].reshape(len(bones), RINGS, RING_SIZE)

    vertices = np.zeros((NUM_VERTICES, 3))
    vertices[ids] = tubes
    vertices[list(FACE_VERTICES)] = list(FACE_VERTICES.values())
    parts = np.zeros(NUM_VERTICES, dtype=np.int64)
    parts[ids] = np.array([part for part, *_ in bones])[:, None, None]
    parts[list(FACE_VERTICES)] = 15
    faces = np.concatenate([_tube_faces(i * per_tube) for i in range(len(bones))])

    # Joint j: the centre of the last ring of its bone; the pelvis: of the first rings of its own.
    regressor = np.zeros((num_joints, NUM_VERTICES))
    for j in range(1, num_joints):
        regressor[j, ids[j - 1, -1]] = 1 / RING_SIZE
    children = np.flatnonzero(PARENTS == 0)
    regressor[0, ids[children - 1, 0]] = 1 / (RING_SIZE * len(children))

    shapedirs = np.zeros((NUM_VERTICES, 3, NUM_BETAS))
    shapedirs[:, :, 0] = 0.06 * vertices  # taller and wider
    shapedirs[:, 0, 1] = 0.08 * vertices[:, 0]  # wider
    hands = np.eye(45)
    return {
        "v_template": vertices,
        "f": ids.reshape(-1)[faces].astype(np.uint32),
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": np.eye(num_joints)[parts],
        "kintree_table": np.stack(
            [np.where(PARENTS < 0, 2**32 - 1, PARENTS), np.arange(num_joints)]
        ),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((NUM_VERTICES, 3, 9 * (num_joints - 1))),
        "hands_componentsl": hands,
        "hands_componentsr": hands,
        "hands_meanl": np.zeros(45),
        "hands_meanr": np.zeros(45),
    }


def write_smplh_model(folder: str | Path, gender: str = "neutral") -> Path:
    """Writes ``SMPLH_<GENDER>.pkl`` (the synthetic model) into ``folder``; returns its path."""
    path = Path(folder) / f"SMPLH_{gender.upper()}.pkl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(smplh_model(), f)
    return path
