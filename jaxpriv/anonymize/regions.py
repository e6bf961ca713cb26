"""Region masks of annotated persons: full body (instance mask or box) and face (from keypoints).

Masks are bool HxW. A pixel belongs to a box when its centre lies inside it (see `readers`).
"""

from __future__ import annotations

import cv2
import numpy as np

from jaxpriv.anonymize.readers import Box, Person
from jaxpriv.anonymize.settings import REGIONS

FACE_KEYPOINTS = 5  # COCO order: nose, left eye, right eye, left ear, right ear
# Typical distance between two face keypoints, as a fraction of the head width (frontal view).
FACE_PAIR_FRACTION = np.array(
    [
        [1.0, 0.3, 0.3, 0.5, 0.5],
        [0.3, 1.0, 0.45, 0.3, 0.7],
        [0.3, 0.45, 1.0, 0.7, 0.3],
        [0.5, 0.3, 0.7, 1.0, 1.0],
        [0.5, 0.7, 0.3, 1.0, 1.0],
    ]
)
HEAD_PER_BOX_SIDE = 0.3  # head width / shorter side of the person box, with one face keypoint
FACE_BOX_HEADS = 1.5  # side of the face box, in head widths


def _hw(shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of an image shape (H, W) or (H, W, C)."""
    return int(shape[0]), int(shape[1])


def scale_box(box: Box, factor: float) -> Box:
    """The box scaled by `factor` about its centre."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


def _pixel_range(lo: float, hi: float, size: int) -> slice:
    """The pixels whose centre lies in [lo, hi), clipped to [0, size)."""
    return slice(*(min(max(int(np.ceil(v - 0.5)), 0), size) for v in (lo, hi)))


def box_slices(box: Box, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Row and column slices of the pixels whose centre lies in the box, clipped to the image."""
    height, width = _hw(shape)
    x0, y0, x1, y1 = box
    return _pixel_range(y0, y1, height), _pixel_range(x0, x1, width)


def box_mask(box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """The pixels of a box as a bool HxW mask."""
    mask = np.zeros(_hw(shape), dtype=bool)
    mask[box_slices(box, shape)] = True
    return mask


def body_mask(
    person: Person, shape: tuple[int, ...], *, dilate: int = 0, expand_box: float = 0.0
) -> np.ndarray:
    """The person's instance mask (its box without one), grown for safety.

    dilate: pixels added around the mask (elliptical kernel). expand_box: when > 0, the mask is
    united with the box enlarged by this fraction of its width and height (0.2: 20% larger).
    """
    hw, mask = _hw(shape), person.mask  # read once: COCO masks decode on every access
    if mask is None:
        mask = box_mask(person.box, hw)
    elif mask.shape != hw:
        raise ValueError(
            f"mask of person {person.source_id!r} has shape {mask.shape}, image is {hw}"
        )
    else:
        mask = mask.astype(bool)
    if dilate > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    if expand_box > 0:
        mask |= box_mask(scale_box(person.box, 1.0 + expand_box), hw)
    return mask


def _head_width(points: np.ndarray, visible: np.ndarray) -> float:
    """Largest head width implied by the distances between visible face keypoints (0 if < 2)."""
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    return float((distances / FACE_PAIR_FRACTION[np.ix_(visible, visible)]).max())


def face_box(person: Person) -> Box | None:
    """A square box around the labelled face keypoints (visibility > 0), or None without any.

    Centred on the keypoints, FACE_BOX_HEADS head widths wide; the head width comes from the
    keypoint spread, or from the person box when the keypoints coincide (e.g. only one is labelled).
    """
    if person.keypoints is None:
        return None
    face = np.asarray(person.keypoints[:FACE_KEYPOINTS], dtype=np.float64)
    visible = face[:, 2] > 0
    if not visible.any():
        return None
    points = face[visible, :2]
    head = _head_width(points, visible)
    if head <= 0:
        x0, y0, x1, y1 = person.box
        head = HEAD_PER_BOX_SIDE * min(x1 - x0, y1 - y0)
    (cx, cy), half = points.mean(axis=0), FACE_BOX_HEADS * head / 2
    return cx - half, cy - half, cx + half, cy + half


def face_mask(person: Person, shape: tuple[int, ...], *, scale: float = 1.0) -> np.ndarray:
    """The ellipse inscribed in the person's face box scaled by `scale`; empty without a face."""
    mask = np.zeros(_hw(shape), dtype=bool)
    box = face_box(person)
    if box is None:
        return mask
    x0, y0, x1, y1 = box = scale_box(box, scale)
    rows, cols = box_slices(box, shape)
    y = (np.arange(rows.start, rows.stop)[:, None] + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2)
    x = (np.arange(cols.start, cols.stop)[None, :] + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2)
    mask[rows, cols] = x**2 + y**2 <= 1.0
    return mask


def region_mask(
    persons: list[Person], shape: tuple[int, ...], region: str, **options
) -> np.ndarray:
    """Union of the persons' `region` ("body" or "face") masks; crowds count for body only.

    options go to `body_mask` (dilate, expand_box) or `face_mask` (scale).
    """
    if region == "body":
        masks = (body_mask(p, shape, **options) for p in persons)
    elif region == "face":
        masks = (face_mask(p, shape, **options) for p in persons if not p.crowd)
    else:
        raise ValueError(f"unknown region {region!r}: expected one of {REGIONS}")
    union = np.zeros(_hw(shape), dtype=bool)
    for mask in masks:
        union |= mask
    return union


def rescale_person(person: Person, declared: tuple[int, int], shape: tuple[int, int]) -> Person:
    """The person's annotations made for an image of size ``declared`` (H, W), scaled to an image
    of size ``shape``: box and keypoints by the ratio of the sizes; a mask is resized so that
    every pixel it touches is covered (never smaller than the scaled person)."""
    (height, width), (new_height, new_width) = declared, _hw(shape)
    sx, sy = new_width / width, new_height / height
    x0, y0, x1, y1 = person.box
    keypoints = person.keypoints
    if keypoints is not None:
        keypoints = keypoints * np.array([sx, sy, 1.0], dtype=keypoints.dtype)
    mask = person.mask
    if mask is not None:
        shrinks = sx < 1 or sy < 1  # INTER_AREA averages every source pixel; linear may skip some
        interpolation = cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR
        mask = (
            cv2.resize(
                mask.astype(np.float32), (new_width, new_height), interpolation=interpolation
            )
            > 0
        )
    return Person(
        (x0 * sx, y0 * sy, x1 * sx, y1 * sy),
        mask,
        keypoints,
        crowd=person.crowd,
        track_id=person.track_id,
        source_id=person.source_id,
    )
