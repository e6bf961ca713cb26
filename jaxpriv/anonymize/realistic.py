"""Realistic anonymization: the persons are repainted by Stable Diffusion inpainting.

:class:`Inpainter` takes a uint8 RGB ``[H, W, 3]`` numpy image and a bool ``[H, W]`` region (one
connected component per person) and returns a new uint8 image. Each person gets a square crop
around its component, enlarged by a margin of context and resized to the model's resolution;
the crops are inpainted in batches, with seeded initial latents (same seed, same output), and
pasted back with a soft edge. Pixels farther than ``feather`` px from the region are returned
bit-identical. With a pose ControlNet the persons' COCO keypoints, drawn as an OpenPose
skeleton (:func:`pose_image`), condition the generation.

Colour fit (``histogram="latent"``): each crop's initial latent is optimised until the
saturation and value histograms of the generated region match those of a ring of original
pixels around it (:func:`match_latents`). That needs gradients through the whole
sampler: :func:`denoise` is the inpainting pipeline's own computation (checked against it in
the tests), written out with activation checkpointing per denoising step.

Weights are read from local diffusers folders that the user names (:func:`load_pipeline`):
nothing is ever downloaded.

Privacy: the generated region never reads the region's own pixels (except
:meth:`Inpainter.refine`, which starts from them), but it depends on the real pixels around it
(the crop's context and, with ``"latent"``, the ring's histograms), so the pipeline keeps it
*sensitive* under MaskDP.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from jaxpriv.anonymize.traditional import blend, dilate

HISTOGRAM_MODES = ("none", "latent")  # equalization is the pipeline's, as for every method
PROMPT = "a photo of a person, natural skin, detailed"
NEGATIVE_PROMPT = "deformed, disfigured, blurry, cartoon, drawing, text, watermark"

# OpenPose's 18 body joints as indices into the 17 COCO keypoints; joint 1, the neck, is the
# shoulders' midpoint (its entry here is a placeholder).
OPENPOSE_FROM_COCO = (0, 0, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
POSE_WIDTH = 4  # px of limbs and joint radius at 512 px, as in the OpenPose training images


def _folder(path: str | Path, marker: str) -> Path:
    """``path`` as a Path, checked to be a local folder holding ``marker``."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"weights folder {str(path)!r} does not exist (weights are read from a local "
            "diffusers folder, never downloaded)"
        )
    if not (folder / marker).is_file():
        raise ValueError(f"{str(path)!r} is not a diffusers folder: it has no {marker}")
    return folder


def load_pipeline(
    weights: str | Path, *, controlnet: str | Path | None = None, device: str | None = None
):
    """A Stable Diffusion inpainting pipeline from the local diffusers folder ``weights``.

    With ``controlnet`` (a local ``ControlNetModel`` folder, e.g. an OpenPose one) it is a
    ``StableDiffusionControlNetInpaintPipeline``. fp16 on CUDA, fp32 on CPU; no safety checker;
    a deterministic DDIM scheduler; no progress bar. ``device``: default cuda if available.
    """
    from diffusers import (  # optional dependency: only this method needs it
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetInpaintPipeline,
        StableDiffusionInpaintPipeline,
    )

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    options = {
        "dtype": torch.float16 if device.type == "cuda" else torch.float32,
        "local_files_only": True,
    }
    cls, parts = StableDiffusionInpaintPipeline, {}
    if controlnet is not None:
        cls = StableDiffusionControlNetInpaintPipeline
        parts["controlnet"] = ControlNetModel.from_pretrained(
            _folder(controlnet, "config.json"), **options
        )
    pipe = cls.from_pretrained(
        _folder(weights, "model_index.json"),
        safety_checker=None,
        requires_safety_checker=False,
        **parts,
        **options,
    )
    if pipe.unet.config.in_channels != 9:
        raise ValueError(
            f"{str(weights)!r} is not an inpainting model: its UNet takes "
            f"{pipe.unet.config.in_channels} input channels, not 9"
        )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def resolution(pipe) -> int:
    """Side of the square images that ``pipe``'s UNet was made for, in px."""
    return pipe.vae_scale_factor * pipe.unet.config.sample_size


def _openpose_joints(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO keypoints ``[17, 3]`` as OpenPose joints: (x, y) ``[18, 2]``, labelled ``[18]``."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    joints = keypoints[list(OPENPOSE_FROM_COCO)]
    shoulders = keypoints[[5, 6]]
    joints[1] = [*shoulders[:, :2].mean(0), shoulders[:, 2].min()]
    return joints[:, :2], joints[:, 2] > 0


def pose_image(
    keypoints: Sequence[np.ndarray] | None, crop_box: tuple[int, int, int, int], size: int
) -> np.ndarray:
    """OpenPose-style skeletons, uint8 RGB ``[size, size, 3]``, of the persons' COCO keypoints
    (each float ``[17, 3]``: x, y, visibility in image px) as seen in ``crop_box``.

    ``crop_box`` ``(x0, y0, x1, y1)`` is mapped onto the ``size``-px square; keypoints with
    visibility 0 are skipped. Limbs are lines in 0.6 × their colour, joints filled circles on
    top; both ``POSE_WIDTH`` px at 512 px, scaled with ``size``. No keypoints: a black image.
    """
    x0, y0, x1, y1 = crop_box
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    width = max(1, round(POSE_WIDTH * size / 512))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    for person in () if keypoints is None else keypoints:
        xy, labelled = _openpose_joints(person)
        points = [tuple(p) for p in np.floor((xy - (x0, y0)) * scale).astype(int).tolist()]
        for (a, b), colour in zip(LIMBS, COLOURS):
            if labelled[a] and labelled[b]:
                limb = tuple(round(0.6 * c) for c in colour)
                cv2.line(canvas, points[a], points[b], limb, width)
        for point, is_labelled, colour in zip(points, labelled, COLOURS):
            if is_labelled:
                cv2.circle(canvas, point, width, colour, -1)
    return canvas


def kde_histogram(
    values: torch.Tensor, where: torch.Tensor, bins: torch.Tensor, bandwidth: float
) -> torch.Tensor:
    """Differentiable histogram: a Gaussian kernel density of ``values`` ``[..., N]`` at the
    bool ``where`` ``[..., N]``, sampled at the bin centres ``bins`` ``[K]`` and normalised to
    sum to 1 over them; ``[..., K]`` (all zeros where nothing is selected)."""
    kernel = torch.exp(-0.5 * ((values[..., None] - bins) / bandwidth) ** 2)
    density = (kernel * where[..., None]).sum(-2)
    return density / density.sum(-1, keepdim=True).clamp(min=1e-12)


def wasserstein_1d(p: torch.Tensor, q: torch.Tensor, bin_width: float) -> torch.Tensor:
    """Wasserstein-1 distance of histograms ``[..., K]`` on equally spaced bins: the L1
    distance of their CDFs times the bin width; ``[...]``."""
    return (p.cumsum(-1) - q.cumsum(-1)).abs().sum(-1) * bin_width


def _saturation_value(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HSV saturation and value ``[B, H, W]`` of float RGB ``[B, 3, H, W]`` in [0, 1]."""
    high, low = rgb.amax(1), rgb.amin(1)
    return (high - low) / high.clamp(min=1e-3), high


def histogram_distance(
    generated: torch.Tensor,
    region: torch.Tensor,
    reference: torch.Tensor,
    ring: torch.Tensor,
    *,
    bins: int = 64,
    bandwidth: float = 0.02,
) -> torch.Tensor:
    """Colour distance of ``generated`` in ``region`` to ``reference`` in ``ring``, ``[B]``.

    ``generated``, ``reference``: float RGB ``[B, 3, H, W]`` in [0, 1]; ``region``, ``ring``:
    bool ``[B, H, W]``. The sum of the Wasserstein-1 distances of the :func:`kde_histogram` of
    HSV saturation and of value, on ``bins`` bins spanning [0, 1]. Differentiable in
    ``generated``; 0 for an image whose region or ring is empty.
    """
    grid = torch.linspace(0, 1, bins, device=generated.device)
    total = torch.zeros(generated.shape[0], device=generated.device)
    for ours, theirs in zip(_saturation_value(generated), _saturation_value(reference)):
        p = kde_histogram(ours.flatten(1), region.flatten(1), grid, bandwidth)
        q = kde_histogram(theirs.flatten(1), ring.flatten(1), grid, bandwidth)
        total = total + wasserstein_1d(p, q, 1 / (bins - 1))
    return total * (region.flatten(1).any(1) & ring.flatten(1).any(1))


class Conditioning(NamedTuple):
    """What :func:`denoise` needs besides the initial latents, for a batch of ``B`` crops.

    With classifier-free guidance every tensor holds the unconditional half first: ``2B``.
    """

    embeds: torch.Tensor  # prompt embeddings [2B, L, D]
    mask: torch.Tensor  # inpainting mask at the latents' resolution [2B, 1, h, w]
    masked: torch.Tensor  # latents of the image with the mask blacked out [2B, C, h, w]
    image: torch.Tensor | None  # latents of the whole image [B, C, h, w] (for strength < 1)
    control: torch.Tensor | None  # ControlNet pipelines: pose images [2B, 3, H, W] in [0, 1]
    control_scale: float  # weight of the ControlNet's residuals


@torch.no_grad()
def condition(
    pipe,
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    prompt: str = PROMPT,
    negative_prompt: str = NEGATIVE_PROMPT,
    guidance: float = 7.5,
    generators: list[torch.Generator] | None = None,
    poses: torch.Tensor | None = None,
    control_scale: float = 0.5,
    encode_image: bool = False,
) -> Conditioning:
    """Prepares float RGB ``images`` ``[B, 3, H, W]`` in [0, 1] and float ``masks``
    ``[B, 1, H, W]`` (1: repaint) as the pipeline's ``__call__`` does with its own methods.

    ``generators`` (one per image) sample the VAE's latent distributions, as ``__call__``'s
    ``generator``. ``poses``: the ControlNet's images ``[B, 3, H, W]`` in [0, 1], its residuals
    weighted by ``control_scale`` (the pipeline's ``controlnet_conditioning_scale``).
    ``encode_image``: also encode the whole images (for :func:`denoise` with ``strength < 1``).
    """
    b, _, height, width = images.shape
    device, dtype, guided = pipe.device, pipe.unet.dtype, guidance > 1
    positive, negative = pipe.encode_prompt(prompt, device, b, guided, negative_prompt)
    image = pipe.image_processor.preprocess(images, height=height, width=width).float()
    mask = pipe.mask_processor.preprocess(masks, height=height, width=width)
    mask, masked = pipe.prepare_mask_latents(
        mask, image * (mask < 0.5), b, height, width, dtype, device, generators, guided
    )
    latents = pipe._encode_vae_image(image.to(device, dtype), generators) if encode_image else None
    control = None
    if poses is not None:
        control = pipe.prepare_control_image(
            poses, width, height, b, 1, device, pipe.controlnet.dtype, None, "default", guided
        )
    embeds = torch.cat([negative, positive]) if guided else positive
    return Conditioning(embeds, mask, masked, latents, control, control_scale)


def _step(pipe, cond: Conditioning, guidance: float, x: torch.Tensor, t: torch.Tensor):
    """One denoising step of the (ControlNet) inpainting pipeline: ``x_t -> x_{t-1}``."""
    guided = guidance > 1
    model_input = pipe.scheduler.scale_model_input(torch.cat([x] * 2) if guided else x, t)
    residuals = {}
    if cond.control is not None:
        down, mid = pipe.controlnet(
            model_input,
            t,
            encoder_hidden_states=cond.embeds,
            controlnet_cond=cond.control,
            conditioning_scale=cond.control_scale,
            return_dict=False,
        )
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    noise = pipe.unet(
        torch.cat([model_input, cond.mask, cond.masked], 1),
        t,
        encoder_hidden_states=cond.embeds,
        return_dict=False,
        **residuals,
    )[0]
    if guided:
        unconditional, conditional = noise.chunk(2)
        noise = unconditional + guidance * (conditional - unconditional)
    return pipe.scheduler.step(noise, t, x, return_dict=False)[0]


def denoise(
    pipe,
    latents: torch.Tensor,
    cond: Conditioning,
    *,
    steps: int = 20,
    guidance: float = 7.5,
    strength: float = 1.0,
) -> torch.Tensor:
    """The inpainting pipeline's sampler, differentiable in the initial ``latents``
    ``[B, C, h, w]`` (noise): the images, float RGB ``[B, 3, H, W]`` in [0, 1].

    Equal to ``pipe(..., latents=latents, output_type="pt")`` on the inputs of
    :func:`condition`. ``strength < 1`` starts from ``cond.image`` noised to the matching
    timestep and runs the last ``int(steps · strength)`` steps (as the pipeline does when it
    draws the noise itself). With gradients enabled each step is checkpointed: memory holds one
    UNet's activations at a time, for one more forward pass per step.
    """
    if int(steps * strength) < 1:
        raise ValueError(f"strength {strength} leaves no denoising step out of {steps}")
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=latents.device)
    timesteps = scheduler.timesteps[steps - int(steps * strength) :]
    noise = latents.to(pipe.unet.dtype)
    if strength < 1:
        x = scheduler.add_noise(cond.image, noise, timesteps[:1])
    else:
        x = noise * scheduler.init_noise_sigma
    step = functools.partial(_step, pipe, cond, guidance)
    for t in timesteps:
        x = checkpoint(step, x, t, use_reentrant=False) if torch.is_grad_enabled() else step(x, t)
    images = pipe.vae.decode(x / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return (images.float() / 2 + 0.5).clamp(0, 1)


@dataclasses.dataclass(frozen=True)
class Matching:
    """Settings of :func:`match_latents`."""

    ring: int = 16  # px (in the image) of original pixels around the region: the reference
    threshold: float = 0.02  # stop once every crop's histogram distance is below this
    max_steps: int = 10  # Adam steps at most
    lr: float = 0.05  # Adam's learning rate (latents are standard normal)
    bins: int = 64
    bandwidth: float = 0.02


class Matched(NamedTuple):
    latents: torch.Tensor  # per crop, the initial latents with the lowest distance [B, C, h, w]
    images: torch.Tensor  # their images [B, 3, H, W] in [0, 1]
    distances: torch.Tensor  # distance at each evaluation [T, B]: T - 1 Adam steps were taken


def _where(better: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(better.view(-1, *[1] * (new.dim() - 1)), new, old)


def match_latents(
    pipe,
    latents: torch.Tensor,
    cond: Conditioning,
    reference: torch.Tensor,
    region: torch.Tensor,
    ring: torch.Tensor,
    *,
    steps: int = 20,
    guidance: float = 7.5,
    strength: float = 1.0,
    matching: Matching = Matching(),
) -> Matched:
    """Optimises the initial ``latents`` with Adam so that the generated ``region`` matches
    ``reference`` in ``ring`` (:func:`histogram_distance`; ``region``, ``ring``: bool
    ``[B, H, W]``, ``reference``: float ``[B, 3, H, W]`` in [0, 1]).

    Stops as soon as every distance is below ``matching.threshold``, or after
    ``matching.max_steps`` steps; returns each crop's best latents and image.
    """
    x = latents.detach().float().clone().requires_grad_()
    adam = torch.optim.Adam([x], lr=matching.lr)
    history = []
    for step in range(matching.max_steps + 1):
        images = denoise(pipe, x, cond, steps=steps, guidance=guidance, strength=strength)
        distance = histogram_distance(
            images, region, reference, ring, bins=matching.bins, bandwidth=matching.bandwidth
        )
        current = (x.detach().clone(), images.detach(), distance.detach())
        if step == 0:
            best = current
        else:
            better = current[2] < best[2]
            best = tuple(_where(better, new, old) for new, old in zip(current, best))
        history.append(current[2])
        if bool((current[2] < matching.threshold).all()) or step == matching.max_steps:
            break
        (x.grad,) = torch.autograd.grad(distance.sum(), x)
        adam.step()
    return Matched(best[0], best[1], torch.stack(history))


def _components(region: np.ndarray) -> list[np.ndarray]:
    """The connected components (8-connectivity) of bool ``region`` ``[H, W]``: the persons."""
    count, labels = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, count)]


def _span(lo: int, hi: int, side: int, n: int) -> tuple[int, int]:
    """``side`` px centred on ``[lo, hi)``, shifted into ``[0, n)`` (all of it if too long)."""
    if side >= n:
        return 0, n
    start = min(max((lo + hi - side) // 2, 0), n - side)
    return start, start + side


def crop_box(person: np.ndarray, margin: float, pad: int = 0) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: a square around the bool ``[H, W]`` mask's bounding box, grown by
    ``margin`` × its longer side (at least ``pad`` px) on each side, moved into the image.

    Clipped to the image (then not square) where it is larger than the image.
    """
    ys, xs = np.nonzero(person)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    longer = max(x1 - x0, y1 - y0)
    side = int(longer + 2 * max(round(margin * longer), pad))
    (x0, x1), (y0, y1) = _span(x0, x1, side, person.shape[1]), _span(y0, y1, side, person.shape[0])
    return int(x0), int(y0), int(x1), int(y1)


def _resize(planes: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Float ``[B, C, h, w]`` resized to ``size``²; ``"area"`` for masks (a coverage fraction)."""
    if mode == "area":
        return F.interpolate(planes, size=(size, size), mode="area")
    return F.interpolate(planes, size=(size, size), mode="bilinear", antialias=True)


def _cells(mask: torch.Tensor, cell: int) -> torch.Tensor:
    """Bool ``[B, 1, H, W]`` grown to whole ``cell``² blocks (a latent pixel each), as float."""
    blocks = F.max_pool2d(mask.float(), cell)
    return F.interpolate(blocks, scale_factor=cell, mode="nearest")


def _crop(pixels: torch.Tensor, region: np.ndarray, person: np.ndarray, box, size: int, ring: int):
    """One person's model inputs at ``size``² px: the crop ``box`` of float ``pixels``
    ``[3, H, W]`` and bool ``[S, S]`` masks of the px touched by ``region``, of those mostly in
    ``person``, and of those mostly in its ``ring``-px ring of original pixels (none touched)."""
    x0, y0, x1, y1 = box
    region = torch.from_numpy(region[y0:y1, x0:x1])
    person = torch.from_numpy(person[y0:y1, x0:x1])
    near = dilate(person[None], ring)[0] & ~region

    def fraction(mask: torch.Tensor) -> torch.Tensor:
        return _resize(mask[None, None].float(), size, "area")[0, 0]

    covered = fraction(region) > 0
    crop = _resize(pixels[None, :, y0:y1, x0:x1], size)[0]
    return crop, covered, fraction(person) > 0.5, (fraction(near) > 0.5) & ~covered


def _noise(pipe, generators: list[torch.Generator]) -> torch.Tensor:
    """Standard normal initial latents ``[B, C, h, w]``, one draw per generator (on the CPU,
    the same on every device), on ``pipe``'s device."""
    side = pipe.unet.config.sample_size
    shape = (1, pipe.vae.config.latent_channels, side, side)
    return torch.cat([torch.randn(shape, generator=g) for g in generators]).to(pipe.device)


@dataclasses.dataclass
class Inpainter:
    """Realistic anonymization with the (ControlNet) inpainting pipeline ``pipe``.

    ``inpainter(image, region, keypoints=None, seed=0)``: see the module docstring.
    """

    pipe: Any
    steps: int = 20
    guidance: float = 7.5
    prompt: str = PROMPT
    negative_prompt: str = NEGATIVE_PROMPT
    margin: float = 0.5  # context on each side of a person, as a fraction of its longer side
    feather: int = 8  # px of the soft paste band around the region
    batch_size: int = 4  # crops per diffusion batch
    control_scale: float = 0.5  # pose ControlNet: weight of its residuals (the pipeline's default)
    histogram: str = "none"  # see HISTOGRAM_MODES
    matching: Matching = Matching()  # histogram "latent"

    def __post_init__(self):
        if self.histogram not in HISTOGRAM_MODES:
            raise ValueError(f"unknown histogram {self.histogram!r}; expected {HISTOGRAM_MODES}")

    def __call__(
        self,
        image: np.ndarray,
        region: np.ndarray,
        keypoints: Sequence[np.ndarray] | None = None,
        seed: int = 0,
        strength: float = 1.0,
    ) -> np.ndarray:
        """uint8 ``[H, W, 3]`` with the persons of bool ``region`` ``[H, W]`` repainted.

        Person ``k`` (in ``cv2.connectedComponents`` order) draws its latents from seed
        ``seed + k``. ``keypoints``: COCO ``[17, 3]`` arrays, drawn for a pose ControlNet
        (every skeleton that falls in a crop). The region's own pixels are never read, except
        with ``strength < 1``, which repaints from them noised part of the way (see
        :func:`denoise`).
        """
        region = np.asarray(region, dtype=bool)
        persons = _components(region)
        boxes = [crop_box(person, self.margin, self.feather) for person in persons]
        out = torch.from_numpy(image).clone()
        for start in range(0, len(persons), self.batch_size):
            batch = range(start, min(start + self.batch_size, len(persons)))
            generated = self._generate(
                image, region, [persons[k] for k in batch], [boxes[k] for k in batch],
                keypoints, [seed + k for k in batch], strength,
            )  # fmt: skip
            for k, crop in zip(batch, generated):
                self._paste(out, crop, boxes[k], persons[k])
        return out.numpy()

    def refine(
        self, image: np.ndarray, region: np.ndarray, *, seed: int = 0, strength: float = 0.3
    ) -> np.ndarray:
        """A low-``strength`` repainting of ``region`` that keeps its layout (e.g. avatars)."""
        return self(image, region, seed=seed, strength=strength)

    def _generate(self, image, region, persons, boxes, keypoints, seeds, strength):
        """The crops ``boxes`` inpainted: float ``[B, 3, S, S]`` in [0, 1] on the CPU."""
        pipe, size = self.pipe, resolution(self.pipe)
        pixels = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        if strength == 1:  # the region is repainted from its surroundings only: never read it
            pixels = pixels * torch.from_numpy(~region)
        parts = [
            _crop(pixels, region, p, box, size, self.matching.ring)
            for p, box in zip(persons, boxes)
        ]
        crops, covered, inside, ring = (torch.stack(part) for part in zip(*parts))
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        latents = _noise(pipe, generators)
        cond = condition(
            pipe, crops, _cells(covered[:, None], pipe.vae_scale_factor),
            prompt=self.prompt, negative_prompt=self.negative_prompt, guidance=self.guidance,
            generators=generators, poses=self._poses(keypoints, boxes, size),
            control_scale=self.control_scale, encode_image=strength < 1,
        )  # fmt: skip
        options = {"steps": self.steps, "guidance": self.guidance, "strength": strength}
        if self.histogram != "latent":
            with torch.no_grad():
                return denoise(pipe, latents, cond, **options).cpu()
        targets = (target.to(pipe.device) for target in (crops, inside, ring))
        matched = match_latents(pipe, latents, cond, *targets, matching=self.matching, **options)
        return matched.images.cpu()

    def _poses(self, keypoints, boxes, size: int) -> torch.Tensor | None:
        """The ControlNet's pose images of the crops, float ``[B, 3, S, S]`` (None without)."""
        if getattr(self.pipe, "controlnet", None) is None:
            return None
        poses = np.stack([pose_image(keypoints, box, size) for box in boxes])
        return torch.from_numpy(poses).permute(0, 3, 1, 2).float() / 255

    def _paste(self, out: torch.Tensor, generated, box, person: np.ndarray) -> None:
        """Blends the crop ``generated`` ``[3, S, S]`` into ``out`` ``[H, W, 3]`` in place:
        ``person``'s pixels, a ``feather``-px soft band around them, nothing else."""
        x0, y0, x1, y1 = box
        content = F.interpolate(
            generated[None], size=(y1 - y0, x1 - x0), mode="bilinear", antialias=True
        )
        content = (content[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8)
        mask = torch.from_numpy(person[y0:y1, x0:x1])[None]
        out[y0:y1, x0:x1] = blend(out[None, y0:y1, x0:x1], content[None], mask, self.feather)[0]
