"""Histogram equalization and matching: the region's histogram moves, far pixels do not."""

import pytest
import torch

from jaxpriv.anonymize.histogram import equalize, match_histograms
from jaxpriv.anonymize.traditional import dilate

SIZE = 128


def scene(region_mean, region_std, around_mean, around_std, seed=0):
    """One image [1, SIZE, SIZE, 3] of Gaussian noise, with other statistics in a central box."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    masks[0, 40:90, 40:90] = True
    pixels = torch.randn(1, SIZE, SIZE, 3, generator=generator) * around_std + around_mean
    region = torch.randn(1, SIZE, SIZE, 3, generator=generator) * region_std + region_mean
    pixels = torch.where(masks[..., None], region, pixels)
    return pixels.round().clamp(0, 255).to(torch.uint8), masks


@pytest.mark.parametrize("feather", [0, 4])
def test_equalize_spreads_the_region_and_leaves_far_pixels(feather):
    images, masks = scene(120, 5, 60, 20)
    out = equalize(images, masks, feather=feather)
    value_before, value_after = images.amax(-1)[masks], out.amax(-1)[masks]
    assert value_before.max() - value_before.min() < 60
    assert value_after.min() == 0 and value_after.max() == 255
    far = ~dilate(masks, feather)
    assert torch.equal(out[far], images[far])
    assert torch.equal(out, equalize(images, masks, feather=feather))


def test_equalize_keeps_grey_pixels_grey_and_single_level_regions_unchanged():
    images, masks = scene(120, 5, 60, 20)
    grey = images[..., :1].expand(-1, -1, -1, 3).contiguous()
    out = equalize(grey, masks)
    assert torch.equal(out[..., 0], out[..., 1]) and torch.equal(out[..., 0], out[..., 2])
    flat = images.clone()
    flat[masks] = 77
    assert torch.equal(equalize(flat, masks), flat)


def test_match_histograms_moves_the_region_to_the_ring_statistics():
    images, masks = scene(50, 10, 180, 30)
    out = match_histograms(images, masks, ring=16, feather=0)
    ring = dilate(masks, 16) & ~masks
    target_mean, target_std = images[ring].float().mean(0), images[ring].float().std(0)
    after = out[masks].float()
    assert torch.all((after.mean(0) - target_mean).abs() < 2)  # was 130 away
    assert torch.all((after.std(0) / target_std - 1).abs() < 0.05)  # was 1/3
    assert torch.equal(out[~masks], images[~masks])


def test_match_histograms_leaves_far_pixels_and_empty_masks_alone():
    images, masks = scene(50, 10, 180, 30)
    out = match_histograms(images, masks, feather=3)
    far = ~dilate(masks, 3)
    assert torch.equal(out[far], images[far])
    empty = torch.zeros_like(masks)
    assert torch.equal(match_histograms(images, empty), images)
    assert torch.equal(equalize(images, empty), images)
