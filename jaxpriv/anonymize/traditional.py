"""Traditional anonymization: blur, pixelation, mask-out and classical inpainting.

Conventions shared by every function here:

* ``images``: torch uint8 ``[B, H, W, 3]`` (RGB); ``masks``: torch bool ``[B, H, W]``, True where
  a person is to be anonymized. Results are uint8 ``[B, H, W, 3]`` on the images' device.
* Pixels outside ``masks`` are returned bit-identical, except inside the *blend band* when a
  method is called with ``feather > 0``: the pixels within ``feather`` px (Chebyshev distance)
  outside the region are mixed with the anonymized content by :func:`blend`. Pixels farther
  away are never touched.
* Everything is batched torch code that runs on the images' device, except :func:`inpaint`,
  which calls OpenCV on CPU one image at a time.
* Randomness (``mask_out(fill="noise")``) comes from a ``torch.Generator``: same generator
  state, same output.

:data:`METHODS` maps a method name to its function and to whether its output in the region is
*data-independent* (mask-out: a constant or seeded noise) — only such pixels may be marked public
under MaskDP. Blur and pixelation derive the region from the real pixels inside it, classical
inpainting from the real pixels around it, so the pipeline keeps those pixels sensitive. The
generative methods (``realistic``, ``avatar``) register there too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def _region_scale(masks: torch.Tensor, strength: float, floor: float) -> torch.Tensor:
    """``max(floor, strength · sqrt(region area))`` per image, float ``[B]``.

    The area counts every masked pixel of the image (all persons together).
    """
    area = masks.flatten(1).count_nonzero(1).float()
    return torch.clamp(strength * area.sqrt(), min=floor)


def _dilate_along(masks: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """ORs bool ``masks`` over offsets ``-radius..radius`` along ``dim``, with O(log radius)
    shifted ORs (each one at most doubles the covered window; far cheaper than max-pooling)."""
    n = masks.shape[dim]
    radius = min(radius, n - 1)
    covered = 0  # masks holds the OR over offsets -covered..covered
    while covered < radius:
        shift = min(covered + 1, radius - covered)
        grown = masks.clone()
        grown.narrow(dim, shift, n - shift).bitwise_or_(masks.narrow(dim, 0, n - shift))
        grown.narrow(dim, 0, n - shift).bitwise_or_(masks.narrow(dim, shift, n - shift))
        masks, covered = grown, covered + shift
    return masks


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool ``[B, H, W]`` masks grown by ``radius`` px (Chebyshev distance, a square window)."""
    return _dilate_along(_dilate_along(masks, radius, 1), radius, 2)


def soft_mask(masks: torch.Tensor, feather: int) -> torch.Tensor:
    """Float ``[B, H, W]``: 1 inside ``masks``, ``1 - d/(feather+1)`` at Chebyshev distance
    ``d ≤ feather`` outside them (the blend band), exactly 0 farther away."""
    grown = masks
    total = masks.float()
    for _ in range(feather):
        grown = dilate(grown, 1)
        total += grown
    return total / (feather + 1)


def blend(
    original: torch.Tensor, anonymized: torch.Tensor, masks: torch.Tensor, feather: int
) -> torch.Tensor:
    """Mixes uint8 ``[B, H, W, 3]`` images with :func:`soft_mask` as the weight of ``anonymized``.

    The result is ``anonymized`` inside ``masks``, a linear mix in the ``feather``-px blend band
    around them, and bit-identical to ``original`` everywhere else (``feather=0``: a hard cut).
    """
    if feather == 0:  # bitwise select: much faster than torch.where's channel broadcast on CPU
        select = masks.to(torch.uint8).neg_()[..., None]  # 255 inside, 0 outside
        return original ^ ((original ^ anonymized) & select)
    alpha = soft_mask(masks, feather)[..., None]
    base = original.float()
    mixed = base + alpha * (anonymized.float() - base)
    return mixed.round_().clamp_(0, 255).to(torch.uint8)


def _per_group(
    images: torch.Tensor,
    masks: torch.Tensor,
    keys: torch.Tensor,
    fn: Callable[[torch.Tensor, float], torch.Tensor],
) -> torch.Tensor:
    """Runs ``fn(indices, key) -> uint8 [n, H, W, 3]`` once per distinct ``keys`` value ``[B]``
    (``indices``: an index tensor, or ``slice(None)`` when every image is in one group).

    Only images with a non-empty mask are processed; the others keep their pixels. Returns the
    new content, uint8 ``[B, H, W, 3]``.
    """
    todo = masks.flatten(1).any(1)
    groups = keys[todo].unique().tolist()
    if len(groups) == 1 and bool(todo.all()):  # one group: no gather and scatter copies
        return fn(slice(None), groups[0])
    content = images.clone()
    for key in groups:
        indices = torch.nonzero(todo & (keys == key))[:, 0]
        content[indices] = fn(indices, key)
    return content


def _resize(planes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of uint8 ``[B, C, h, w]`` to ``size``, antialiased when shrinking.

    On CPU torch has vectorised uint8 kernels (several times faster than float for
    channels-last input); other devices go through float.
    """
    if planes.device.type == "cpu":
        return F.interpolate(planes, size=size, mode="bilinear", antialias=True)
    resized = F.interpolate(planes.float(), size=size, mode="bilinear", antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _gaussian_blur(planes: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of uint8 ``[B, C, H, W]`` with one ``sigma`` per image ``[B]``.

    Returns channels-last memory so that ``permute(0, 2, 3, 1)`` is contiguous (and the uint8
    resize takes its vectorised path).
    """
    b, c, h, w = planes.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, device=planes.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B·C, 2r+1]
    x = planes.float().reshape(1, b * c, h, w)
    x = F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=b * c
    )
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c
    )
    x = x.reshape(b, c, h, w).round_().clamp_(0, 255).to(torch.uint8)
    return x.contiguous(memory_format=torch.channels_last)  # [B, H, W, C] in memory


def _downscaled_blur(images: torch.Tensor, sigma: torch.Tensor, factor: int) -> torch.Tensor:
    """Gaussian blur of uint8 ``[B, H, W, 3]`` with per-image ``sigma`` ``[B]``, computed at
    ``1/factor`` of the resolution.

    The copy is blurred with ``sigma_low = sqrt((sigma/factor)² - 1/3)``: the antialiased
    bilinear downscale and the bilinear upscale each add about ``factor²/6`` of variance.
    """
    _, h, w, _ = images.shape
    planes = images.permute(0, 3, 1, 2)  # channels-last view
    if factor == 1:
        return _gaussian_blur(planes, sigma).permute(0, 2, 3, 1)
    small = _resize(planes, (math.ceil(h / factor), math.ceil(w / factor)))
    small = _gaussian_blur(small, torch.sqrt((sigma / factor) ** 2 - 1 / 3))
    return _resize(small, (h, w)).permute(0, 2, 3, 1)


def blur(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    strength: float = 0.1,
    min_sigma: float = 2.0,
    feather: int = 0,
) -> torch.Tensor:
    """Gaussian blur of the region, ``sigma = max(min_sigma, strength · sqrt(region area))``.

    Per image, the area being the number of masked pixels: a larger person is blurred more.
    Images are grouped by a power-of-two factor ``f ≤ sigma/2`` and blurred at ``1/f`` of the
    resolution (kernels of at most ~25 taps whatever sigma is; within ~1 grey level of an exact
    Gaussian on photographs). Images with an empty mask are returned unchanged.
    """
    sigma = _region_scale(masks, strength, min_sigma)
    factor = 2 ** torch.floor(torch.log2(torch.clamp(sigma / 2, min=1)))
    content = _per_group(
        images,
        masks,
        factor,
        lambda indices, f: _downscaled_blur(images[indices], sigma[indices], int(f)),
    )
    return blend(images, content, masks, feather)


def _block_means(images: torch.Tensor, block: int) -> torch.Tensor:
    """Each pixel of uint8 ``[B, H, W, 3]`` replaced by the mean of its ``block``² grid cell.

    The grid is anchored at pixel (0, 0); cells cut by the image border average what is inside.
    """
    _, h, w, _ = images.shape
    means = F.avg_pool2d(images.permute(0, 3, 1, 2).float(), block, ceil_mode=True)
    means = means.round_().to(torch.uint8).permute(0, 2, 3, 1)
    return means.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]


def pixelate(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    block: int | None = None,
    strength: float = 0.1,
    min_block: int = 4,
    feather: int = 0,
) -> torch.Tensor:
    """Replaces the region by the means of square cells on a grid anchored at pixel (0, 0).

    Cell side: ``block`` if given, else ``max(min_block, round(strength · sqrt(region area)))``
    per image. Cells that straddle the region's border average pixels on both sides; only the
    region's pixels are replaced. Images are processed in groups of equal cell side.
    """
    if block is None:
        sides = _region_scale(masks, strength, min_block).round()
    else:
        sides = torch.full((images.shape[0],), float(block), device=images.device)
    content = _per_group(
        images, masks, sides, lambda indices, side: _block_means(images[indices], int(side))
    )
    return blend(images, content, masks, feather)


def mask_out(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    fill: str = "constant",
    value: int | tuple[int, int, int] = 0,
    generator: torch.Generator | None = None,
    feather: int = 0,
) -> torch.Tensor:
    """Fills the region with a constant colour ``value`` or with uniform uint8 noise.

    ``fill="noise"`` draws from ``generator`` (on the images' device; the pipeline seeds one per
    file); ``None`` uses torch's default generator.
    """
    if fill == "constant":
        colour = torch.as_tensor(value, dtype=torch.uint8, device=images.device)
        content = colour.expand(images.shape)
    elif fill == "noise":
        content = torch.randint(
            0, 256, images.shape, generator=generator, dtype=torch.uint8, device=images.device
        )
    else:
        raise ValueError(f"unknown fill {fill!r}; expected 'constant' or 'noise'")
    return blend(images, content, masks, feather)


def keep(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """No anonymization: the original images, for reference runs of the same pipeline."""
    return images


def inpaint(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    radius: int = 3,
    method: str = "telea",
    feather: int = 0,
) -> torch.Tensor:
    """Classical inpainting (``cv2.inpaint``, Telea or Navier-Stokes) of the region.

    Not batched and not on the GPU: each image goes through OpenCV on CPU and comes back to the
    images' device. The region's new content depends only on pixels outside it (with
    ``feather > 0``: outside the region grown by ``feather``).
    """
    import cv2  # only this method needs OpenCV

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"unknown inpainting method {method!r}; expected one of {list(flags)}")
    holes = dilate(masks, feather).to(torch.uint8).cpu().contiguous().numpy()
    pixels = images.cpu().contiguous().numpy()
    content = torch.stack(
        [
            torch.from_numpy(cv2.inpaint(image, hole, radius, flags[method]))
            for image, hole in zip(pixels, holes)
        ]
    ).to(images.device)
    return blend(images, content, masks, feather)


class Method(NamedTuple):
    """An anonymization method: ``fn(images, masks, **options) -> images`` (shapes as above)."""

    fn: Callable[..., torch.Tensor]
    # True when the region's output depends on no real pixel at all (inside or around it): only
    # then may the pipeline mark it public. Inpainting reads the real surroundings, so it is not.
    data_independent: bool
    random: bool = False  # takes a ``generator=`` option (torch.Generator)


METHODS: dict[str, Method] = {
    "none": Method(keep, data_independent=False),
    "blur": Method(blur, data_independent=False),
    "pixelate": Method(pixelate, data_independent=False),
    "maskout": Method(mask_out, data_independent=True, random=True),
    "inpaint": Method(inpaint, data_independent=False),
    # "realistic" (diffusers) and "avatar" (body model + renderer) come with their modules.
}


def anonymize(images: torch.Tensor, masks: torch.Tensor, method: str, **options) -> torch.Tensor:
    """Applies ``METHODS[method]`` to uint8 ``[B, H, W, 3]`` images and bool ``[B, H, W]`` masks."""
    if method not in METHODS:
        raise ValueError(f"unknown anonymization method {method!r}; known: {sorted(METHODS)}")
    return METHODS[method].fn(images, masks, **options)
