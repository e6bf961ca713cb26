"""The pinhole camera shared by pose fitting and rendering.

OpenCV convention: the camera sits at the origin and looks along +z, x points right and y down
in the image. A point (x, y, z) with z > 0 projects to the continuous pixel coordinates
``u = focal · x / z + cx``, ``v = focal · y / z + cy``, where pixel (row i, column j) covers
``[j, j + 1) × [i, i + 1)`` (its centre is at ``(j + 0.5, i + 0.5)``), the convention of COCO
keypoints.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Camera:
    focal: float  # px
    cx: float  # px
    cy: float  # px

    @classmethod
    def for_image(cls, height: int, width: int, fov_degrees: float = 40.0) -> Camera:
        """A camera centred on an ``height×width`` image with the given vertical field of view."""
        focal = height / 2 / torch.tan(torch.deg2rad(torch.tensor(fov_degrees / 2))).item()
        return cls(focal, width / 2, height / 2)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates ``[..., 2]`` of camera-frame points ``[..., 3]`` (z > 0)."""
        z = points[..., 2:3].clamp(min=1e-6)
        return points[..., :2] / z * self.focal + points.new_tensor([self.cx, self.cy])
