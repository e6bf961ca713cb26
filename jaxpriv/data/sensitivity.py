"""Which pixels of an example are sensitive: one rule for the anonymized and the synthetic data.

A pixel is **public** when its value depends on no real pixel: content removed and filled with a
constant, or a synthetic body drawn from public inputs. Every other pixel — real, or computed
from real pixels (blurred, pixelated, inpainted) — is **sensitive** and protected by MaskDP's
noise. A dataset's ``sensitive`` mask follows one of three policies:

* ``"real"``: exactly the pixels that are not public are sensitive (the default);
* ``"all"``: every pixel is sensitive (MaskDP then equals DP-SGD on the same data);
* ``"none"``: nothing is sensitive (the data is treated as public).

Records are resized, and a resized pixel mixes several source pixels: it is public only if every
source pixel mixed into it with a nonzero weight is public (`resize_public`), exactly.
"""

from __future__ import annotations

import cv2
import numpy as np

POLICIES = ("real", "all", "none")


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"unknown sensitivity policy {policy!r}; choose one of {POLICIES}")


def sensitive_mask(public: np.ndarray, policy: str) -> np.ndarray:
    """The uint8 ``sensitive`` mask (1 = protected by DP) of pixels with public mask ``public``."""
    check_policy(policy)
    if policy == "real":
        return (~public).astype(np.uint8)
    return np.full(public.shape, policy == "all", dtype=np.uint8)


def square_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """A record's geometry for an ``height×width`` image: (resized width, resized height, left,
    top) — the shorter side resized to ``size``, then the ``size×size`` centre crop at (left,
    top)."""
    scale = size / min(height, width)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    return new_width, new_height, (new_width - size) // 2, (new_height - size) // 2


def resize_square(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """``array`` in a record's geometry (`square_geometry`)."""
    new_width, new_height, left, top = square_geometry(*array.shape[:2], size)
    resized = cv2.resize(array, (new_width, new_height), interpolation=interpolation)
    return resized[top : top + size, left : left + size]


def resize_public(public: np.ndarray, size: int) -> np.ndarray:
    """The public mask at record size (``resize_square`` with ``INTER_AREA``, as the pixels).

    The indicator of the sensitive pixels goes through the same resize; its weights are
    nonnegative, so a resized pixel is exactly 0 where no sensitive pixel is mixed in and
    positive (a sum of positive products) wherever one is.
    """
    sensitive = resize_square((~public).astype(np.float32), size, cv2.INTER_AREA)
    return sensitive == 0
