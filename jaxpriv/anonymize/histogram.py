"""Histogram equalization and matching of anonymized regions, blended into their surroundings.

Same conventions as :mod:`jaxpriv.anonymize.traditional`: uint8 ``[B, H, W, 3]`` RGB images,
bool ``[B, H, W]`` region masks, batched torch on the images' device. Each function computes a
per-image look-up table from the region's histogram, applies it, and mixes the result in with
:func:`traditional.blend`: the region gets the new content, the ``feather``-px blend band
around it a linear mix, and every pixel farther away is returned bit-identical.
"""

from __future__ import annotations

import torch

from jaxpriv.anonymize.traditional import blend, dilate

LEVELS = 256


def _histograms(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel counts of uint8 ``values`` ``[B, H, W, C]`` at the pixels
    ``where`` ``[B, H, W]`` is True: float64 ``[B, C, 256]``."""
    b, _, _, c = values.shape
    batch = torch.arange(b, device=values.device).view(b, 1, 1).expand_as(where)[where]  # [N]
    channel = torch.arange(c, device=values.device)
    bins = (batch[:, None] * c + channel) * LEVELS + values[where].long()  # [N, C]
    counts = torch.bincount(bins.flatten(), minlength=b * c * LEVELS)
    return counts.view(b, c, LEVELS).double()


def _apply_lut(values: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``lut[b, c, values[b, y, x, c]]`` for uint8 ``values`` ``[B, H, W, C]`` and a uint8
    ``lut`` ``[B, C, 256]``."""
    b, h, w, c = values.shape
    index = values.reshape(b, h * w, c).long()
    return lut.transpose(1, 2).gather(1, index).view(b, h, w, c)


def _identity_where(valid: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``lut`` float ``[B, C, 256]`` where ``valid`` ``[B, C, 1]``, else the identity; as uint8."""
    identity = torch.arange(LEVELS, device=lut.device, dtype=lut.dtype)
    return torch.where(valid, lut, identity).round().clamp(0, LEVELS - 1).to(torch.uint8)


def equalize(images: torch.Tensor, masks: torch.Tensor, *, feather: int = 4) -> torch.Tensor:
    """Histogram equalization of the region on the HSV *value* channel ``V = max(R, G, B)``.

    ``V`` is remapped by the region's CDF to span 0–255 (classical equalization, lowest
    occupied level → 0) and RGB is scaled by ``V'/V``, which keeps hue and saturation. A region
    with a single level (or an empty mask) is left unchanged.
    """
    value = images.amax(-1, keepdim=True)  # [B, H, W, 1]
    counts = _histograms(value, masks)  # [B, 1, 256]
    cdf = counts.cumsum(-1)
    total = cdf[..., -1:]
    lowest = torch.where(counts > 0, cdf, torch.inf).amin(-1, keepdim=True)
    spread = (cdf - lowest) / (total - lowest).clamp(min=1) * (LEVELS - 1)
    lut = _identity_where(total > lowest, spread.clamp(min=0))
    scale = _apply_lut(value, lut).float() / value.clamp(min=1).float()
    content = (images.float() * scale).round_().clamp_(0, LEVELS - 1).to(torch.uint8)
    return blend(images, content, masks, feather)


def match_histograms(
    images: torch.Tensor, masks: torch.Tensor, *, ring: int = 16, feather: int = 4
) -> torch.Tensor:
    """Matches each channel's histogram in the region to that of the ring around it.

    The ring is the original pixels within ``ring`` px (Chebyshev distance) outside the mask.
    Each source level maps to the lowest reference level whose CDF reaches the source level's
    mid-bin quantile. Images whose region or ring is empty are left unchanged.
    """
    source = _histograms(images, masks)  # [B, 3, 256]
    reference = _histograms(images, dilate(masks, ring) & ~masks)
    n_source, n_reference = source.sum(-1, keepdim=True), reference.sum(-1, keepdim=True)
    quantile = (source.cumsum(-1) - source / 2) / n_source.clamp(min=1)
    reference_cdf = reference.cumsum(-1) / n_reference.clamp(min=1)
    lut = torch.searchsorted(reference_cdf, quantile).double()
    lut = _identity_where((n_source > 0) & (n_reference > 0), lut)
    return blend(images, _apply_lut(images, lut), masks, feather)
