"""Traditional anonymization: what changes inside the region, and that nothing changes outside."""

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from jaxpriv.anonymize import traditional
from jaxpriv.anonymize.traditional import METHODS, anonymize, blend, dilate, mask_out, soft_mask

H, W = 96, 128


def scene(seed=0, high=256):
    """Random uint8 images [3, H, W, 3] and masks: two boxes, one box, and an empty mask."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, high, (3, H, W, 3), dtype=torch.uint8, generator=generator)
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[0, 10:60, 8:40] = True
    masks[0, 30:90, 70:110] = True
    masks[1, 20:70, 50:90] = True
    return images, masks


def square_masks(size, sides):
    """[len(sides), size, size] masks, each a centred square of the given side."""
    masks = torch.zeros(len(sides), size, size, dtype=torch.bool)
    for i, side in enumerate(sides):
        start = (size - side) // 2
        masks[i, start : start + side, start : start + side] = True
    return masks


def test_mask_out_constant_replaces_every_region_pixel_and_nothing_else():
    images, masks = scene(high=200)  # the fill colour occurs nowhere in the images
    out = mask_out(images, masks, value=(250, 251, 252))
    assert out.shape == images.shape and out.dtype == torch.uint8
    fill = torch.tensor([250, 251, 252], dtype=torch.uint8)
    assert torch.all(out[masks] == fill)
    assert torch.equal(out[~masks], images[~masks])


def test_mask_out_noise_is_seeded_and_independent_of_the_original():
    images, masks = scene(seed=0)
    other, _ = scene(seed=1)

    def noise(x, seed):
        return mask_out(x, masks, fill="noise", generator=torch.Generator().manual_seed(seed))

    assert torch.equal(noise(images, 3), noise(images, 3))
    torch.manual_seed(5)  # without a generator, torch's default generator decides
    first = mask_out(images, masks, fill="noise")
    torch.manual_seed(5)
    assert torch.equal(first, mask_out(images, masks, fill="noise"))
    assert not torch.equal(noise(images, 3)[masks], noise(images, 4)[masks])
    # Same seed, different images: the region's content does not depend on the original at all.
    assert torch.equal(noise(images, 3)[masks], noise(other, 3)[masks])
    assert torch.equal(noise(images, 3)[~masks], images[~masks])
    # Uniform noise matches an original channel value with probability 1/256 (~30 of ~7,700
    # values here, std ~5.5); 3/256 is more than 10 standard deviations away.
    same = (noise(images, 3)[masks] == images[masks]).float().mean()
    assert same < 3 / 256


@pytest.mark.parametrize("method", ["blur", "pixelate"])
def test_blur_and_pixelate_change_the_region_and_nothing_outside(method):
    images, masks = scene()
    out = anonymize(images, masks, method)
    change = (out.float() - images.float()).abs()
    for i in range(2):
        assert change[i][masks[i]].mean() > 30  # uniform noise: mean |x - E x| is 64
    assert torch.equal(out[~masks], images[~masks])
    assert torch.equal(out[2], images[2])  # empty mask


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_is_deterministic_and_keeps_shape(method):
    images, masks = scene()
    out = anonymize(images, masks, method)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, anonymize(images, masks, method))
    assert torch.equal(out[~masks], images[~masks])


def test_blur_strength_grows_with_region_size():
    size = 192
    images = torch.randint(
        0, 256, (1, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    ).expand(2, -1, -1, -1)
    masks = square_masks(size, [24, 160])
    out = traditional.blur(images, masks, strength=0.1).float()
    centre = slice(size // 2 - 6, size // 2 + 6)
    small, large = (out[i, centre, centre].var() for i in range(2))
    # sigma 2.4 vs 16: white-noise variance falls like 1/sigma².
    assert large < small / 10


@pytest.mark.parametrize("sigma", [1.5, 3.0, 7.0, 20.0])
def test_blur_is_close_to_an_exact_gaussian(sigma):
    photo = skimage.data.astronaut()  # 512×512 RGB
    everywhere = torch.ones(1, *photo.shape[:2], dtype=torch.bool)
    out = traditional.blur(torch.from_numpy(photo)[None], everywhere, strength=0, min_sigma=sigma)
    out = out[0].numpy().astype(float)
    exact = cv2.GaussianBlur(photo, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    assert np.abs(out - exact).mean() < 1.0  # grey levels, even where blurred on a 1/8 copy


def test_pixelate_fills_whole_cells_with_their_mean():
    images, masks = scene()
    out = traditional.pixelate(images, masks, block=8)
    # Cell rows 16:24 × cols 8:16 … lie inside image 0's first box (rows 10:60, cols 8:40).
    for y, x in [(16, 8), (24, 16), (48, 32)]:
        cell = out[0, y : y + 8, x : x + 8].reshape(-1, 3)
        assert (cell == cell[0]).all()
        expected = images[0, y : y + 8, x : x + 8].reshape(-1, 3).float().mean(0).round()
        assert torch.equal(cell[0].float(), expected)
    assert torch.equal(out[~masks], images[~masks])


def test_pixelate_block_grows_with_region_size():
    images = torch.randint(
        0, 256, (3, H, H, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    masks = square_masks(H, [16, 80, 0])
    out = traditional.pixelate(images, masks, strength=0.1)
    centre = H // 2
    for i, side in enumerate([4, 8]):  # max(4, round(0.1·16)) and round(0.1·80)
        start = centre - centre % side
        cell = out[i, start : start + side, start : start + side].reshape(-1, 3)
        assert (cell == cell[0]).all()


@pytest.mark.parametrize("method", ["telea", "ns"])
def test_inpaint_fills_the_region_with_its_surroundings(method):
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    background = torch.stack([x * 1.5, y * 2.0, 100 + 0 * x], -1).to(torch.uint8)[None]
    masks = torch.zeros(1, H, W, dtype=torch.bool)
    masks[0, 30:60, 40:80] = True
    images = background.clone()
    images[masks] = torch.tensor([255, 0, 255], dtype=torch.uint8)  # a magenta "person"
    out = traditional.inpaint(images, masks, method=method)
    error = (out[masks].float() - background[masks].float()).abs().mean()
    assert error < 10  # the magenta person differs from the background by ~150 on average
    assert torch.equal(out[~masks], images[~masks])


def test_soft_mask_ramps_over_the_band():
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, 15:25, 15:25] = True
    alpha = soft_mask(masks, 3)
    assert torch.all(alpha[masks] == 1)
    assert [alpha[0, 20, 25 + d].item() for d in range(5)] == [0.75, 0.5, 0.25, 0.0, 0.0]
    assert torch.equal(alpha > 0, dilate(masks, 3))


def test_blend_changes_only_the_region_and_its_band():
    images, masks = scene(high=200)
    out = mask_out(images, masks, value=255, feather=3)
    band = dilate(masks, 3) & ~masks
    assert torch.all(out[masks] == 255)
    assert torch.equal(out[~dilate(masks, 3)], images[~dilate(masks, 3)])
    assert torch.all(out[band] > images[band])  # partly mixed towards the fill
    assert torch.all(out[band] < 255)
    assert torch.equal(blend(images, out, masks, 0)[~masks], images[~masks])


@pytest.mark.parametrize("radius", [0, 1, 2, 5, 16, 200])
def test_dilate_matches_max_pooling(radius):
    masks = torch.rand(2, 37, 53, generator=torch.Generator().manual_seed(radius)) > 0.97
    pooled = F.max_pool2d(masks[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    expected = pooled[:, 0] > 0
    assert torch.equal(dilate(masks, radius), expected)


def test_only_mask_out_is_data_independent():
    """Inpainting reads the real surroundings: its pixels must stay sensitive under MaskDP."""
    assert {name for name, method in METHODS.items() if method.data_independent} == {"maskout"}


def test_unknown_method_or_option_raises_with_the_known_names():
    images, masks = scene()
    with pytest.raises(ValueError, match=r"'blur'.*'inpaint'.*'maskout'.*'pixelate'"):
        anonymize(images, masks, "smudge")
    with pytest.raises(ValueError, match="noise"):
        mask_out(images, masks, fill="sparkles")
    with pytest.raises(ValueError, match="telea"):
        traditional.inpaint(images, masks, method="magic")
