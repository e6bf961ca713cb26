"""Offscreen rendering of posed avatar meshes with pyrender, in the pixel grid of :class:`Camera`.

A mesh is ``(vertices, faces, color)``: camera-frame vertices float ``[V, 3]`` (metres, OpenCV
frame as in :mod:`.camera`), triangles int ``[F, 3]``, and a colour ``(r, g, b)`` in 0..1 or one
per vertex ``[V, 3]``. Normals follow the winding: counter-clockwise on screen is the front
(outward for SMPL). Both sides of every triangle are drawn, so the silhouette does not depend on
the winding.

Two passes share one scene: a shaded pass (4× multisampled: anti-aliased colour and coverage) and
an id pass (single-sampled at pixel centres: the mask, ``ids`` and depth). The GL depth test
keeps the nearest surface in both, so overlapping avatars hide each other correctly.

Geometry: pyrender's camera looks along -z with y up, so the scene keeps the OpenCV frame and the
camera node gets the pose ``diag(1, -1, -1)``. ``IntrinsicsCamera`` maps ``u`` to the window
coordinate ``x = u`` (``y = H - v``, flipped back on read-out) and OpenGL samples pixel (i, j) at
``(j + 0.5, i + 0.5)``: the convention of :mod:`.camera`, so the mask is the set of pixels whose
centre lies in the projection of a triangle.

The OpenGL platform is ``PYOPENGL_PLATFORM`` (``egl`` unless set before this module is imported;
``osmesa`` works too). It must be chosen before PyOpenGL is first imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from jaxpriv.anonymize.avatar.camera import Camera

_PLATFORM = os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
_NO_GL = (
    f"no offscreen OpenGL with PYOPENGL_PLATFORM={_PLATFORM!r}: 'egl' needs libEGL and a GL driver "
    "(Mesa's llvmpipe renders on CPU: apt install libegl1 libgl1-mesa-dri), 'osmesa' needs "
    "libOSMesa; set PYOPENGL_PLATFORM before anything imports PyOpenGL"
)
try:
    import pyrender
except Exception as error:  # no GL library: ImportError, OSError or AttributeError in PyOpenGL
    raise ImportError(_NO_GL) from error

Mesh = tuple[np.ndarray, np.ndarray, Sequence[float] | np.ndarray]  # (vertices, faces, color)

_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # camera pose: y down, z forward -> y up, z back
_AMBIENT = 0.2  # with the light, a surface facing the camera shows about its own colour
_LIGHT = 2.5  # directional light from the camera (pyrender's PBR: diffuse = colour/pi · light)
_MIN_ZNEAR = 0.01  # m
_MATERIAL = pyrender.MetallicRoughnessMaterial(metallicFactor=0.0, roughnessFactor=1.0)


class Rendering(NamedTuple):
    """What the camera sees of the meshes; ``H×W`` images."""

    color: np.ndarray  # uint8 [H, W, 3], anti-aliased over black (premultiplied by alpha)
    depth: np.ndarray  # float32 [H, W], camera z (m) of the nearest surface, 0 where none
    mask: np.ndarray  # bool [H, W], True where a mesh covers the pixel centre
    ids: np.ndarray  # int32 [H, W], index of the mesh seen at the pixel centre, -1 for none
    alpha: np.ndarray  # float32 [H, W], fraction of the pixel the meshes cover (0..1)


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normals ``[V, 3]``: the area-weighted mean of the adjacent faces' normals."""
    corners = vertices[faces]  # [F, 3, 3]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _primitive(vertices: np.ndarray, faces: np.ndarray, color) -> pyrender.Primitive:
    """A two-sided shaded primitive: both windings of every triangle (pyrender culls back faces
    in its id pass whatever the material says), colours made linear (its shader outputs
    ``linear^(1/2.2)``)."""
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    linear = np.broadcast_to(np.asarray(color, np.float32) ** 2.2, vertices.shape)
    return pyrender.Primitive(
        positions=vertices,
        normals=_vertex_normals(vertices, faces),
        indices=np.concatenate([faces, faces[:, ::-1]]),
        color_0=linear,
        material=_MATERIAL,
    )


def _scene(meshes: Sequence[Mesh], camera: Camera) -> tuple[pyrender.Scene, list[pyrender.Node]]:
    """The meshes (one node each, in order), the camera and a light from it.

    The clipping range spans the vertices' depths with a 10 % margin (at least ``_MIN_ZNEAR``).
    """
    z = np.concatenate([np.asarray(vertices)[:, 2] for vertices, _, _ in meshes])
    znear = max(0.9 * float(z.min()), _MIN_ZNEAR)
    zfar = max(1.1 * float(z.max()), 2 * znear)
    scene = pyrender.Scene(bg_color=np.zeros(4), ambient_light=np.full(3, _AMBIENT))
    lens = pyrender.IntrinsicsCamera(camera.focal, camera.focal, camera.cx, camera.cy, znear, zfar)
    scene.add(lens, pose=_GL_FROM_CV)
    scene.add(pyrender.DirectionalLight(intensity=_LIGHT), pose=_GL_FROM_CV)
    return scene, [scene.add(pyrender.Mesh([_primitive(*mesh)])) for mesh in meshes]


def _id_colors(nodes: list[pyrender.Node]) -> dict[pyrender.Node, tuple[int, int, int]]:
    """Node k drawn in the colour encoding ``k + 1`` in base 256 (black: no mesh)."""
    return {
        node: ((k + 1) & 255, (k + 1) >> 8 & 255, (k + 1) >> 16) for k, node in enumerate(nodes)
    }


def _empty(height: int, width: int) -> Rendering:
    """The rendering of no mesh at all."""
    return Rendering(
        color=np.zeros((height, width, 3), np.uint8),
        depth=np.zeros((height, width), np.float32),
        mask=np.zeros((height, width), bool),
        ids=np.full((height, width), -1, np.int32),
        alpha=np.zeros((height, width), np.float32),
    )


def _window(
    meshes: Sequence[Mesh], camera: Camera, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)``: the pixels that the meshes' vertices project into, a pixel of
    margin around, within the image (None where none is); sizes rounded up to a multiple of
    32 px so that the framebuffer keeps its size from one image to the next."""
    vertices = np.concatenate([np.asarray(vertices, np.float64) for vertices, _, _ in meshes])
    u, v = camera.project(torch.from_numpy(vertices)).numpy().T
    x0, y0 = max(int(np.floor(u.min())) - 1, 0), max(int(np.floor(v.min())) - 1, 0)
    x1, y1 = min(int(np.ceil(u.max())) + 1, width), min(int(np.ceil(v.max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    x1, y1 = min(x0 + -(-(x1 - x0) // 32) * 32, width), min(y0 + -(-(y1 - y0) // 32) * 32, height)
    return x0, y0, x1, y1


class Renderer:
    """One offscreen OpenGL context, reused by every call and resized when the image size
    changes (with Mesa's llvmpipe: ~50 ms to create, ~100 ms more for the first render, which
    compiles the shaders).

    Not thread-safe. Worker processes must be spawned, not forked: a process forked after this
    one rendered hangs in OpenGL, even with a renderer of its own (Mesa's llvmpipe). Free it with
    :meth:`close` or by using it as a context manager.
    """

    def __init__(self) -> None:
        try:
            self._gl = pyrender.OffscreenRenderer(1, 1)
        except Exception as error:  # e.g. no EGL device, or OSMesa missing
            raise RuntimeError(_NO_GL) from error

    def render(self, meshes: Sequence[Mesh], camera: Camera, height: int, width: int) -> Rendering:
        """The ``height×width`` image of ``meshes`` (the k-th has id k) seen by ``camera``.

        Only the window around the meshes' projection (a pixel of margin) is drawn, through
        the same camera shifted by the window's corner, then placed in the full image: a
        whole-pixel shift keeps the pixel grid, so mask, ids and alpha are those of the full
        render exactly (colour within one level and depth within float rounding), and llvmpipe's
        time grows with the pixels drawn.
        """
        window = _window(meshes, camera, height, width) if meshes else None
        if window is None:
            return _empty(height, width)
        x0, y0, x1, y1 = window
        shifted = Camera(camera.focal, camera.cx - x0, camera.cy - y0)
        scene, nodes = _scene(meshes, shifted)
        self._gl.viewport_width, self._gl.viewport_height = x1 - x0, y1 - y0
        rgba, _ = self._gl.render(scene, flags=pyrender.RenderFlags.RGBA)
        seg, depth = self._gl.render(
            scene, flags=pyrender.RenderFlags.SEG, seg_node_map=_id_colors(nodes)
        )
        ids = seg.astype(np.int32) @ np.array([1, 256, 65536], np.int32) - 1
        full = _empty(height, width)
        inside = np.s_[y0:y1, x0:x1]
        full.color[inside] = rgba[..., :3]
        full.depth[inside] = depth
        full.ids[inside] = ids
        full.mask[inside] = ids >= 0
        full.alpha[inside] = rgba[..., 3] / np.float32(255)
        return full

    def close(self) -> None:
        """Frees the OpenGL context (idempotent)."""
        if self._gl is not None:
            self._gl.delete()
            self._gl = None

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
