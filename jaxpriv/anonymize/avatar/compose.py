"""Replacing the real persons of an image by their rendered avatars.

Per image, uint8 ``[H, W, 3]`` numpy arrays and bool ``[H, W]`` masks::

    background = remove_person(image, person_mask)  # the real persons inpainted away
    rendering = renderer.render(meshes, camera, H, W)
    image, public = merge(background, rendering)

Every pixel of ``person_mask`` then holds either the avatar or filled-in background, never the
original. In a video shot by a still camera, the background behind a person is mostly seen in
other frames: :func:`clean_plate` gathers it, and ``remove_person(..., plate=)`` fills the hole
from it, inpainting only what no frame shows. An optional diffusion refinement (the img2img
wrapper, ``img2img(image, strength, seed) -> image``) may follow; it alters every pixel, so
paste its output back inside the changed region only (the grown person mask and
``rendering.mask``) to keep the rest bit-identical.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch

from jaxpriv.anonymize.traditional import dilate

if TYPE_CHECKING:
    from jaxpriv.anonymize.avatar.render import Rendering

Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, bool mask) -> image

_INPAINT_RADIUS = 3  # px, the neighbourhood Telea's method averages over
# Holes larger than this (px) are filled at a resolution reduced by an integer factor that brings
# them under it: Telea's cost grows with the hole's area (80 ms for a 512×512 portrait's person at
# full resolution, 22 ms at half), and a hole this large is smooth fill in its interior anyway.
_FULL_RESOLUTION_HOLE = 65536
# A frame takes its background from a clean plate only if, where both show the background, they
# differ by at most this mean absolute difference (levels of 255): the camera held still and the
# light held. Compression noise stays well under it; a pan of a pixel or two across texture, or
# a change of exposure, goes over.
PLATE_TOLERANCE = 6.0
_PLATE_ROWS = 64  # rows of the frames' stack whose median is taken at once (bounds the memory)


@dataclasses.dataclass(frozen=True)
class Plate:
    """The background of a still-camera video: per pixel, the median over sampled frames of
    those whose holes do not cover it."""

    pixels: np.ndarray  # uint8 [H, W, 3]; 0 where unknown
    known: np.ndarray  # bool [H, W]: some sampled frame shows the pixel


def clean_plate(frames: Sequence[np.ndarray], holes: Sequence[np.ndarray]) -> Plate:
    """The :class:`Plate` of ``frames`` (uint8 ``[H, W, 3]`` each) whose ``holes`` (bool
    ``[H, W]``, the grown person masks) must not be read."""
    stack, covered = np.stack(frames), np.stack(holes)
    known = ~covered.all(0)
    pixels = np.zeros(stack.shape[1:], np.uint8)
    for top in range(0, stack.shape[1], _PLATE_ROWS):
        rows = slice(top, top + _PLATE_ROWS)
        values = np.where(covered[:, rows, :, None], np.nan, stack[:, rows].astype(np.float32))
        inside = known[rows]
        pixels[rows][inside] = np.rint(np.nanmedian(values[:, inside], axis=0)).astype(np.uint8)
    return Plate(pixels, known)


def fill_from_plate(
    image: np.ndarray, holes: np.ndarray, plate: Plate
) -> tuple[np.ndarray, np.ndarray]:
    """(``image`` with the ``holes`` that the plate shows filled from it, the holes left). The
    image is returned unchanged, every hole left, unless it matches the plate where both show
    the background (:data:`PLATE_TOLERANCE`)."""
    both = plate.known & ~holes
    if not both.any():
        return image, holes
    difference = np.abs(image[both].astype(np.int16) - plate.pixels[both]).mean()
    if difference > PLATE_TOLERANCE:
        return image, holes
    filled = holes & plate.known
    return np.where(filled[..., None], plate.pixels, image), holes & ~plate.known


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
    plate: Plate | None = None,
) -> np.ndarray:
    """``image`` with the persons of ``mask`` replaced by background, uint8 ``[H, W, 3]``.

    The mask is first grown by ``dilate`` px: a detector's mask stops at or inside the person's
    outline, and the ring just outside it (soft edges, hair, motion blur, compression halo) still
    shows the person; growing removes it, and the inpainting then reads only pixels beyond it.
    ``method``: ``"opencv"`` (``cv2.inpaint``, Telea) or any ``inpaint(image, mask) -> image``
    (e.g. a diffusion inpainter), given the grown mask. ``plate``: a video's :func:`clean_plate`;
    the holes it shows are filled from it first (:func:`fill_from_plate`), and the inpainter
    gets only the rest. Pixels outside the grown mask are kept bit-identical whatever the
    inpainter does to them.
    """
    if method != "opencv" and not callable(method):
        raise ValueError(f"unknown inpainting method {method!r}; expected 'opencv' or a callable")
    inpaint = telea if method == "opencv" else method
    holes = grow(mask, dilate)
    known, left = (image, holes) if plate is None else fill_from_plate(image, holes, plate)
    filled = inpaint(known, left) if left.any() else known
    return np.where(holes[..., None], filled, image)


def telea(image: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """``image`` with ``holes`` filled by OpenCV's Telea inpainting, uint8 ``[H, W, 3]``; a hole
    of over :data:`_FULL_RESOLUTION_HOLE` px is filled on the image shrunk by the smallest
    integer factor that brings it under, and upsampled (its pixels only: the rest is kept)."""
    factor = math.ceil(math.sqrt(holes.sum() / _FULL_RESOLUTION_HOLE))
    if factor <= 1:
        return cv2.inpaint(image, holes.astype(np.uint8), _INPAINT_RADIUS, cv2.INPAINT_TELEA)
    height, width = holes.shape
    size = (max(width // factor, 1), max(height // factor, 1))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # A small pixel is a hole where any of its pixels is one: no hole pixel is ever read.
    small_holes = cv2.resize(holes.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
    filled = cv2.inpaint(small, small_holes.astype(np.uint8), _INPAINT_RADIUS, cv2.INPAINT_TELEA)
    filled = cv2.resize(filled, (width, height), interpolation=cv2.INTER_LINEAR)
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
