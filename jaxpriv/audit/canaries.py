"""Canaries for the one-run audit: tiny random images, each trained on with probability 1/2.

A canary has an IN version (what the training set holds when it is included) and an OUT version
(what it holds otherwise). Every canary has its own random pixels everywhere, so that its public
content alone tells it apart from the others (an audit must be able to see who was sampled
whenever a mechanism shows it). Placements:

* ``"example"`` (DP-SGD): a whole example of random pixels and a random label. OUT: the example is
  not in the training set at all.
* ``"sensitive"`` (MaskDP): the canary content is a fixed sensitive region (``sensitive`` = the
  region); the rest of the image is public. OUT: the same example with that region absent —
  exactly MaskDP's neighbouring dataset (adjacency in ``jaxpriv.dp.mechanism``).
* ``"public"`` (MaskDP self-test): the canary region is declared public (``sensitive`` = 0 there,
  the rest sensitive). OUT: the region absent. MaskDP does not protect public pixels, so an
  audit must detect these canaries.
"""

from typing import NamedTuple

import numpy as np

from jaxpriv.data.schema import PUBLIC_FILL

PLACEMENTS = ("example", "sensitive", "public")


class Canaries(NamedTuple):
    """IN and OUT versions of m canaries as batches of arrays [m, ...].

    Keys: ``image`` uint8 [m, H, W, 3], ``label`` int32, ``sensitive`` and ``absent`` bool [m, H, W],
    ``weight`` float32. ``outside`` is None when OUT means the example is not in the dataset.
    """

    inside: dict[str, np.ndarray]
    outside: dict[str, np.ndarray] | None


def canary_region(size: int) -> np.ndarray:
    """The fixed canary region of ``size``×``size`` images: the left half (whole tokens for any
    patch size dividing ``size // 2``)."""
    region = np.zeros((size, size), bool)
    region[:, : size // 2] = True
    return region


def make_canaries(
    placement: str, count: int, *, size: int = 16, num_classes: int = 4, seed: int = 0
) -> Canaries:
    """``count`` canaries of the given placement (see the module docstring), drawn from ``seed``."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if count < 2 or size < 2 or num_classes < 2:
        raise ValueError(
            f"need count ≥ 2, size ≥ 2 and num_classes ≥ 2, got {count}, {size}, {num_classes}"
        )
    rng = np.random.default_rng([seed, 0])
    image = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, count).astype(np.int32)
    nowhere = np.zeros((count, size, size), bool)
    if placement == "example":
        return Canaries(_batch(image, labels, ~nowhere, nowhere), None)
    region = np.broadcast_to(canary_region(size), nowhere.shape)
    sensitive = region if placement == "sensitive" else ~region
    return Canaries(
        _batch(image, labels, sensitive, nowhere),
        _batch(np.where(region[..., None], PUBLIC_FILL, image), labels, sensitive, region),
    )


def _batch(image, label, sensitive, absent) -> dict[str, np.ndarray]:
    return {
        "image": np.asarray(image, np.uint8),
        "label": label,
        "sensitive": np.array(sensitive),
        "absent": np.array(absent),
        "weight": np.ones(len(label), np.float32),
    }


def draw_membership(count: int, seed: int) -> np.ndarray:
    """Which canaries are IN: independent fair coins [count] bool."""
    return np.random.default_rng([seed, 1]).random(count) < 0.5


def training_set(canaries: Canaries, included: np.ndarray) -> dict[str, np.ndarray]:
    """The training set, one row per canary in canary order: the IN version of each included
    canary and the OUT version of the others. Where OUT means "not in the dataset", an OUT
    canary's row has weight 0: sampled or not, it contributes exactly nothing, so Poisson
    sampling over the m rows is Poisson sampling over the included canaries."""
    if canaries.outside is None:
        return canaries.inside | {"weight": included.astype(np.float32)}
    return {
        name: np.where(included.reshape(-1, *[1] * (x.ndim - 1)), x, canaries.outside[name])
        for name, x in canaries.inside.items()
    }
