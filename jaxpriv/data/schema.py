"""Feature names of one example and a validator for them.

An example holds exactly one pixel feature, `image` (uint8 HxWx3) or `video`
(uint8 TxHxWx3), a `sensitive` mask (bool or uint8 0/1, the pixel shape
without the channel axis; 1 = real pixel protected by DP) and a `label`
(non-negative integer class id).
"""

from __future__ import annotations

import numpy as np

IMAGE = "image"
VIDEO = "video"
LABEL = "label"
SENSITIVE = "sensitive"
PIXEL_LAYOUTS = {IMAGE: "HxWx3", VIDEO: "TxHxWx3"}
PUBLIC_FILL = (
    128  # the value of removed (sensitive) pixels in a public view; the models map it to 0
)


def pixel_feature(example: dict) -> str:
    """Returns the name of the example's pixel feature, `image` or `video`."""
    present = [name for name in PIXEL_LAYOUTS if name in example]
    if len(present) != 1:
        raise ValueError(
            f"example must have exactly one of {tuple(PIXEL_LAYOUTS)}, got features {sorted(example)}"
        )
    return present[0]


def _check_pixels(name: str, pixels: np.ndarray) -> None:
    layout = PIXEL_LAYOUTS[name]
    if pixels.dtype != np.uint8:
        raise ValueError(f"{name} has dtype {pixels.dtype}: expected uint8")
    if pixels.ndim != len(layout.split("x")) or pixels.shape[-1] != 3:
        raise ValueError(f"{name} has shape {pixels.shape}: expected {layout}")


def _check_sensitive(name: str, pixels: np.ndarray, mask: np.ndarray) -> None:
    expected = pixels.shape[:-1]
    if mask.shape != expected:
        raise ValueError(
            f"sensitive mask has shape {mask.shape} but {name} is {pixels.shape}: expected {expected}"
        )
    if mask.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"sensitive mask has dtype {mask.dtype}: expected bool or uint8")
    if mask.max(initial=0) > 1:
        raise ValueError(f"sensitive mask has value {mask.max()}: expected only 0 and 1")


def _check_label(label) -> None:
    value = np.asarray(label)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer) or value < 0:
        raise ValueError(
            f"label is {value} ({value.dtype}, shape {value.shape}): expected a non-negative integer"
        )


def validate_example(example: dict) -> None:
    """Raises ValueError naming the feature, expected and actual shape/dtype."""
    name = pixel_feature(example)
    for feature in (LABEL, SENSITIVE):
        if feature not in example:
            raise ValueError(f"example has no {feature!r} feature (features: {sorted(example)})")
    pixels = np.asarray(example[name])
    _check_pixels(name, pixels)
    _check_sensitive(name, pixels, np.asarray(example[SENSITIVE]))
    _check_label(example[LABEL])
