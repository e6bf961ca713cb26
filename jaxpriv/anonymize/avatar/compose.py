"""Replacing the real persons of an image by their rendered avatars.

Per image, uint8 ``[H, W, 3]`` numpy arrays and bool ``[H, W]`` masks::

    background = remove_person(image, person_mask)  # the real persons inpainted away
    rendering = renderer.render(meshes, camera, H, W)
    image, public = merge(background, rendering)

Every pixel of ``person_mask`` then holds either the avatar or inpainted background, never the
original. An optional diffusion refinement (the img2img wrapper, ``img2img(image, strength,
seed) -> image``) may follow; it alters every pixel, so paste its output back inside the
changed region only (the grown person mask and ``rendering.mask``) to keep the rest
bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch

from jaxpriv.anonymize.traditional import dilate

if TYPE_CHECKING:
    from jaxpriv.anonymize.avatar.render import Rendering

Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, bool mask) -> image

_INPAINT_RADIUS = 3  # px, the neighbourhood Telea's method averages over


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Bool ``[H, W]`` mask grown by ``radius`` px (:func:`traditional.dilate`: Chebyshev
    distance, a square window)."""
    return dilate(torch.from_numpy(mask)[None], radius)[0].numpy()


def remove_person(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    dilate: int = 4,
    method: Literal["opencv"] | Inpainter = "opencv",
) -> np.ndarray:
    """``image`` with the persons of ``mask`` replaced by inpainted background, uint8 ``[H, W, 3]``.

    The mask is first grown by ``dilate`` px: a detector's mask stops at or inside the person's
    outline, and the ring just outside it (soft edges, hair, motion blur, compression halo) still
    shows the person; growing removes it, and the inpainting then reads only pixels beyond it.
    ``method``: ``"opencv"`` (``cv2.inpaint``, Telea) or any ``inpaint(image, mask) -> image``
    (e.g. a diffusion inpainter), given the grown mask. Pixels outside the grown mask are kept
    bit-identical whatever the inpainter does to them.
    """
    holes = grow(mask, dilate)
    if method == "opencv":
        filled = cv2.inpaint(image, holes.astype(np.uint8), _INPAINT_RADIUS, cv2.INPAINT_TELEA)
    elif callable(method):
        filled = method(image, holes)
    else:
        raise ValueError(f"unknown inpainting method {method!r}; expected 'opencv' or a callable")
    return np.where(holes[..., None], filled, image)


def merge(background: np.ndarray, rendering: Rendering) -> tuple[np.ndarray, np.ndarray]:
    """The avatars of ``rendering`` over ``background``: (uint8 ``[H, W, 3]``, public mask).

    Inside the rendered mask the anti-aliased colour is composited over the background by its
    coverage (``color + (1 - alpha) · background``); outside it the background is returned
    bit-identical. Where avatars overlap the renderer already kept the nearest. The public mask
    is the avatar pixels whose value does not depend on the background: those fully covered
    (``alpha == 1``); the edge pixels mix it in.
    """
    inside = rendering.mask
    alpha = rendering.alpha[inside][:, None]
    mixed = rendering.color[inside] + (1 - alpha) * background[inside]
    image = background.copy()
    image[inside] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return image, inside & (rendering.alpha == 1)
