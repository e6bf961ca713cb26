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


def resize_square(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """A record's geometry: the shorter side resized to ``size``, centre-cropped to ``size×size``."""
    height, width = array.shape[:2]
    scale = size / min(height, width)
    resized = cv2.resize(
        array,
        (max(size, round(width * scale)), max(size, round(height * scale))),
        interpolation=interpolation,
    )
    top, left = (resized.shape[0] - size) // 2, (resized.shape[1] - size) // 2
    return resized[top : top + size, left : left + size]


def resize_public(public: np.ndarray, size: int) -> np.ndarray:
    """The public mask at record size (``resize_square`` with ``INTER_AREA``, as the pixels).

    The indicator of the sensitive pixels goes through the same resize; its weights are
    nonnegative, so a resized pixel is exactly 0 where no sensitive pixel is mixed in and
    positive (a sum of positive products) wherever one is.
    """
    sensitive = resize_square((~public).astype(np.float32), size, cv2.INTER_AREA)
    return sensitive == 0
