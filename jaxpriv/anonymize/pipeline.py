"""Anonymization runs: samples → regions → method → drop-in copy and TFDS dataset.

A run over images (`readers.Sample`) or videos (`readers.Video`) writes into ``out_dir``:

* ``images/<key>``: the drop-in copy — the same relative paths and file names as the input,
  with anonymized pixels (videos re-encoded as MPEG-4 at the source frame rate), so any
  detector trains on it unchanged; each file is written under a temporary name and renamed;
* ``.shards/shard-NNNNN.npz``: per-shard records, written to a temporary name and renamed when
  complete. A rerun skips finished shards (resume after an interrupt) and refuses an
  ``out_dir`` started with other options. An image gives one record (``image`` resized to
  ``size×size``, label, the ``sensitive`` mask and the anonymized-``region`` mask); a video
  gives one ``video`` record per clip of ``clip_frames`` frames taken every ``frame_stride``
  frames (non-overlapping clips; a video shorter than one clip is skipped with a reason);
* ``tfds/``: the TFDS dataset (ArrayRecord) built from the shards once all are done. TFDS writes
  into an ``incomplete.*`` folder and renames it, so an unfinished dataset is never listed;
* ``summary.json``: counts, and the inputs skipped with ``on_error="skip"`` and why.

Videos without annotations get their faces from the detector, tracked across frames
(`tracking.track`); a face missed for up to ``max_gap`` frames between two detections is
covered by its interpolated box (`tracking.fill_gaps`). Annotated persons keep one track id.

The generative methods (``realistic``: diffusion inpainting; ``avatar``: a rendered body in the
person's pose, planned for a whole video at once) use models that each worker builds on first
use (`Models`).

Sensitivity policy (per pixel of each record): ``real`` — every pixel still derived from the
real image is sensitive; only pixels whose content depends on no real pixel (``maskout``
without histogram matching, and the fully covered pixels of ``avatar`` bodies, which depend
only on the annotated pose and box; their anti-aliased edge mixes in the background) are public — blurred, pixelated and inpainted pixels (classical or diffusion inpainting
reads the real surroundings) stay sensitive; ``none`` — nothing is sensitive (the
anonymized data is treated as public); ``all`` — everything is sensitive.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import torch
import tqdm

from jaxpriv.anonymize import detect, histogram, readers, regions, tracking, traditional
from jaxpriv.anonymize.tfds_writer import write_tfds
from jaxpriv.data import schema

SENSITIVITY_POLICIES = ("real", "none", "all")
HISTOGRAM_MODES = ("none", "equalize", "match", "latent")
GENERATIVE_METHODS = ("realistic", "avatar")  # need models: see `Models`
METHOD_NAMES = (*traditional.METHODS, *GENERATIVE_METHODS)
BODIES = ("anny", "smplh")


@dataclasses.dataclass(frozen=True)
class Options:
    """What a run does; saved with the shards so that a resume cannot mix settings."""

    region: str = "face"  # "face" | "body"
    method: str = "blur"  # a name in METHOD_NAMES
    detector: str = detect.DEFAULT_DETECTOR  # faces of samples without keypoints
    dilate: int = 0  # body: grow person masks by this many px
    expand_box: float = 0.0  # body: also cover the box enlarged by this fraction
    # Fit new content to its surroundings: "none" | "equalize" | "match" | "latent" (realistic:
    # optimise the diffusion's initial latent so the region's colour histograms match the ring's)
    histogram: str = "none"
    sensitivity: str = "real"  # see the module docstring
    size: int = 64  # TFDS records are resized (shorter side) and centre-cropped to size×size
    clip_frames: int = 8  # videos: frames per record
    frame_stride: int = 2  # videos: take every n-th frame
    max_gap: int = 2  # videos: cover a tracked face missed for up to this many frames
    max_clips: int = 0  # videos: at most this many clips per video, from its start (0: all)
    test_fraction: float = 0.1  # share of keys (by hash) in the test split
    seed: int = 0
    weights: str = ""  # diffusers inpainting weights folder: realistic (needed), avatar (optional)
    controlnet: str = ""  # realistic: a pose ControlNet folder (optional)
    diffusion_steps: int = 20  # realistic, avatar with weights: denoising steps
    body: str = "anny"  # avatar: body model, "anny" (offline) or "smplh" (needs body_model)
    body_model: str = ""  # avatar, smplh: the licensed SMPL-H model file or folder
    refine: float = 0.0  # avatar: img2img strength of the diffusion refinement (needs weights)

    def check(self) -> None:
        for name, value, choices in [
            ("region", self.region, regions.REGIONS),
            ("method", self.method, METHOD_NAMES),
            ("histogram", self.histogram, HISTOGRAM_MODES),
            ("sensitivity", self.sensitivity, SENSITIVITY_POLICIES),
            ("body", self.body, BODIES),
        ]:
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {sorted(choices)}")
        for name in ("size", "clip_frames", "frame_stride", "diffusion_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
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


def key_seed(seed: int, key: str) -> int:
    """A per-sample seed: the same key gets the same randomness in every run and worker."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def label_of(key: str) -> str:
    """The class of a sample: its first folder (ImageFolder / UCF-101 layout), else "none"."""
    parts = Path(key.split("#")[0]).parts
    return parts[0] if len(parts) > 1 else "none"


def split_of(key: str, test_fraction: float) -> str:
    return "test" if key_seed(0, key) / 2**32 < test_fraction else "train"


def find_region(
    persons: list[readers.Person], image: np.ndarray, options: Options, detector
) -> np.ndarray:
    """Bool HxW mask of what to anonymize: annotations, or the face detector for faces."""
    annotated = [p for p in persons if p.keypoints is not None or options.region == "body"]
    if options.region == "face" and not annotated:
        return detect.detections_to_mask(detector(image), image.shape[:2])
    extra = {"dilate": options.dilate, "expand_box": options.expand_box}
    return regions.region_mask(
        annotated, image.shape, options.region, **(extra if options.region == "body" else {})
    )


def is_public_content(options: Options) -> bool:
    """Whether the new content depends on no real pixel (then it is public under MaskDP).

    Mask-out fills the region with data-independent content; an avatar's pixels depend only on
    the annotated pose and box, which MaskDP treats as public like the mask itself. Histogram
    matching copies the statistics of the real surroundings into the region, and so does a
    refinement or an equalization of the avatar together with its inpainted background; blur,
    pixelation and (classical or diffusion) inpainting read the real pixels.
    """
    if options.method == "avatar":
        return options.histogram == "none" and options.refine == 0
    method = traditional.METHODS.get(options.method)  # None: realistic
    return method is not None and method.data_independent and options.histogram != "match"


class Models:
    """The models of the generative methods, built on first use (once per worker process)."""

    def __init__(self, options: Options):
        self.options = options

    @functools.cached_property
    def inpainter(self):
        from jaxpriv.anonymize import realistic

        pipe = realistic.load_pipeline(
            self.options.weights, controlnet=self.options.controlnet or None
        )
        histogram = "latent" if self.options.histogram == "latent" else "none"
        return realistic.Inpainter(pipe, steps=self.options.diffusion_steps, histogram=histogram)

    @functools.cached_property
    def avatars(self):
        from jaxpriv.anonymize.avatar import anonymizer, body

        options = self.options
        model = body.make_body(options.body, options.body_model or None)
        with_weights = {}
        if options.weights:
            with_weights["background"] = self.inpainter
            if options.refine:
                with_weights["refine"] = functools.partial(
                    self.inpainter.refine, strength=options.refine
                )
        return anonymizer.Avatars(model, seed=options.seed, **with_weights)

    def prepare(self) -> None:
        """Builds, in this process, what the workers would otherwise all build at once: the
        avatars' body model (its first use builds a cache for minutes)."""
        if self.options.method == "avatar":
            _ = self.avatars


def generate(
    image: np.ndarray,
    region: np.ndarray,
    models: Models,
    seed: int,
    persons: Sequence[readers.Person],
    key: str,
    planned=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The realistic or avatar method on one image: (uint8 HxWx3, bool HxW new public pixels).

    ``planned``: a video frame's avatars from ``Avatars.plan_video`` (else fitted here).
    """
    if models.options.method == "realistic":
        keypoints = [p.keypoints for p in persons if p.keypoints is not None and not p.crowd]
        inpainted = models.inpainter(image, region, keypoints=keypoints, seed=seed)
        return inpainted, np.zeros_like(region)
    avatars = models.avatars
    if planned is None:
        planned = avatars.plan(image.shape, persons, key)
    return avatars.paint(image, region, planned, seed)


def anonymize_image(
    image: np.ndarray,
    region: np.ndarray,
    options: Options,
    seed: int,
    *,
    persons: Sequence[readers.Person] = (),
    key: str = "",
    models: Models | None = None,
    planned=None,
):
    """(anonymized uint8 HxWx3, public bool HxW): the method, then the histogram fit.

    The public pixels are the new content that depends on no real pixel (see
    `is_public_content`); for an avatar they may lie outside ``region``. ``models``: those of
    the generative methods (needed for them only).
    """
    if options.method in GENERATIVE_METHODS:
        content, new = generate(image, region, models, seed, persons, key, planned)
        out = torch.from_numpy(content)[None]
    else:
        random = traditional.METHODS[options.method].random
        extra = {"generator": torch.Generator().manual_seed(seed)} if random else {}
        masks = torch.from_numpy(region)[None]
        out = traditional.anonymize(torch.from_numpy(image)[None], masks, options.method, **extra)
        new = region
    changed = torch.from_numpy(region | new)[None]
    if options.histogram == "equalize":
        out = histogram.equalize(out, changed)
    elif options.histogram == "match":
        out = histogram.match_histograms(out, changed)
    public = new if is_public_content(options) else np.zeros_like(region)
    return out[0].numpy(), public


def sensitivity_mask(public: np.ndarray, policy: str) -> np.ndarray:
    if policy == "real":
        return ~public
    return np.full(public.shape, policy == "all")


def resize_square(array: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    """Resizes the shorter side to ``size`` and centre-crops to ``size×size``."""
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
    """The public mask at record size: a resized pixel is public only if every source pixel that
    it mixes with a nonzero weight is public.

    The indicator of the sensitive pixels goes through the image's resize (``INTER_AREA``; the
    uint8 image has the same weights, or some rounded to 0). They are nonnegative, so a resized
    pixel is exactly 0 where no sensitive pixel is mixed in and positive (a sum of positive
    products) wherever one is.
    """
    sensitive = resize_square((~public).astype(np.float32), size, cv2.INTER_AREA)
    return sensitive == 0


def write_image_atomically(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial{path.suffix}")
    if not cv2.imwrite(str(temporary), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")
    os.replace(temporary, path)


class VideoWriter:
    """Encodes frames into ``path`` (MPEG-4 Part 2 at ``rate``) under a temporary name; the file
    appears at ``path`` only when the context exits without an error."""

    def __init__(self, path: Path, rate):
        self.path, self.rate = path, rate
        self.temporary = path.with_name(f".{path.name}.partial{path.suffix}")
        self.container = self.stream = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.temporary), "w")
        return self

    def write(self, frame: np.ndarray) -> None:
        if self.stream is None:
            self.stream = self.container.add_stream("mpeg4", rate=self.rate)
            self.stream.height, self.stream.width = frame.shape[:2]
            self.stream.pix_fmt, self.stream.options = "yuv420p", {"qscale": "2"}
        self.container.mux(self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def __exit__(self, error_type, error, traceback):
        if error_type is None and self.stream is not None:
            self.container.mux(self.stream.encode())
        self.container.close()
        if error_type is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)


def record_masks(region: np.ndarray, public: np.ndarray, options: Options) -> dict:
    """The record-size ``sensitive`` and ``region`` masks of one anonymized image or frame; the
    anonymized region includes the new public pixels (an avatar may reach beyond the person)."""
    return {
        "sensitive": sensitivity_mask(
            resize_public(public, options.size), options.sensitivity
        ).astype(np.uint8),
        "region": resize_square(
            (region | public).astype(np.uint8), options.size, cv2.INTER_NEAREST
        ),
    }


def process_sample(
    sample: readers.Sample, options: Options, detector, out_dir: Path, models: Models | None = None
) -> list:
    """Anonymizes one image, writes its drop-in file, returns its TFDS record (in a list)."""
    image = sample.image
    region = find_region(sample.persons, image, options, detector)
    seed = key_seed(options.seed, sample.key)
    anonymized, public = anonymize_image(
        image, region, options, seed, persons=sample.persons, key=sample.key, models=models
    )
    write_image_atomically(out_dir / "images" / sample.key, anonymized)
    record = {
        "key": sample.key,
        schema.IMAGE: resize_square(anonymized, options.size, cv2.INTER_AREA),
        **record_masks(region, public, options),
        "label": sample.label or label_of(sample.key),
        "split": split_of(sample.key, options.test_fraction),
    }
    return [record]


def tracked_faces(video: readers.Video, options: Options, detector) -> list[list[readers.Person]]:
    """Per frame, the detected faces as persons (box only), tracked and with short gaps filled."""
    faces = [[readers.Person(d.box) for d in detector(frame)] for frame in video.decode()]
    tracking.track(faces, max_gap=options.max_gap)
    tracking.fill_gaps(faces, options.max_gap)
    return faces


def process_video(
    video: readers.Video, options: Options, detector, out_dir: Path, models: Models | None = None
) -> list:
    """Anonymizes a video frame by frame, writes its drop-in copy, returns its clip records.

    Avatars are planned for the whole video first (one identity per track, smoothed poses).
    """
    faces = plan = None
    if video.persons is None:  # two passes: detect and track, then anonymize
        if options.method == "avatar":
            raise ValueError("no person annotations: an avatar needs the person's mask or box")
        faces = tracked_faces(video, options, detector)
    else:
        tracking.track(video.persons)
    kept = {name: [] for name in (schema.VIDEO, "sensitive", "region")}
    with VideoWriter(out_dir / "images" / video.key, video.frame_rate) as writer:
        for index, frame in enumerate(video.decode()):
            if options.method == "avatar" and plan is None:  # all frames' avatars, at once
                plan = models.avatars.plan_video(video.persons, frame.shape, video.key)
            if faces is None:
                region = find_region(video.persons[index], frame, options, detector)
            else:
                boxes = [detect.Detection(face.box, 1.0) for face in faces[index]]
                region = detect.detections_to_mask(boxes, frame.shape)
            seed = key_seed(options.seed, f"{video.key}#{index}")
            anonymized, public = anonymize_image(
                frame,
                region,
                options,
                seed,
                persons=[] if faces is not None else video.persons[index],
                key=f"{video.key}#{index}",
                models=models,
                planned=None if plan is None else plan[index],
            )
            writer.write(anonymized)
            if index % options.frame_stride == 0:
                kept[schema.VIDEO].append(resize_square(anonymized, options.size, cv2.INTER_AREA))
                for name, mask in record_masks(region, public, options).items():
                    kept[name].append(mask)
    clips = len(kept[schema.VIDEO]) // options.clip_frames
    if not clips:
        raise ValueError(
            f"too short: {len(kept[schema.VIDEO])} frames kept (every {options.frame_stride}), "
            f"fewer than one clip of {options.clip_frames}; lower --clip-frames or --frame-stride"
        )
    if options.max_clips:
        clips = min(clips, options.max_clips)
    split = split_of(video.key, options.test_fraction)  # all clips of a video in one split
    label = video.label or label_of(video.key)
    length = options.clip_frames
    return [
        {
            "key": f"{video.key}#{clip:04d}",
            **{
                name: np.stack(frames[clip * length : (clip + 1) * length])
                for name, frames in kept.items()
            },
            "label": label,
            "split": split,
        }
        for clip in range(clips)
    ]


# --- Shards: the unit of parallel work, resume and atomic writes -------------------------------

_WORKER: dict = {}
RECORD_ERRORS = (ValueError, OSError)  # corrupt images, bad annotations, unreadable files


def _init_worker(options: Options, out_dir: Path, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(options=options, out_dir=out_dir, detector=None, models=Models(options))


def _detect_faces(image: np.ndarray) -> list[detect.Detection]:
    """The worker's face detector, built on first use (most annotated runs never need it)."""
    if _WORKER["detector"] is None:
        _WORKER["detector"] = detect.make_detector(_WORKER["options"].detector)
    return _WORKER["detector"](image)


def shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / ".shards" / f"shard-{index:05d}.npz"


Unit = readers.Sample | readers.Video  # what a shard holds: images, or whole videos


def _run_shard(job: tuple[int, list[Unit], str]) -> tuple[int, int, list[dict]]:
    """Processes one shard and writes it atomically; returns (index, records, skipped)."""
    index, units, on_error = job
    options, out_dir = _WORKER["options"], _WORKER["out_dir"]
    records, skipped = [], []
    for unit in units:
        process = process_video if isinstance(unit, readers.Video) else process_sample
        try:
            records += process(unit, options, _detect_faces, out_dir, _WORKER["models"])
        except RECORD_ERRORS as error:
            if on_error == "fail":
                raise type(error)(f"{unit.key}: {error}") from error
            skipped.append({"key": unit.key, "error": f"{type(error).__name__}: {error}"})
    path = shard_path(out_dir, index)
    temporary = path.with_name(f".{path.name}.partial")
    stacked = {name: np.stack([r[name] for r in records]) for name in records[0]} if records else {}
    with open(temporary, "wb") as f:
        np.savez(f, skipped=json.dumps(skipped), **stacked)
    os.replace(temporary, path)
    return index, len(records), skipped


def _claim(out_dir: Path, options: Options, keys: Sequence[str]) -> None:
    """Records the run's options and inputs in ``out_dir``; refuses a different earlier run."""
    run = {
        "options": dataclasses.asdict(options),
        "inputs": hashlib.sha256("\n".join(keys).encode()).hexdigest(),
    }
    path = out_dir / ".shards" / "run.json"
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier != run:
            raise ValueError(
                f"{out_dir} holds an unfinished run with other options or inputs "
                f"({earlier['options']}); use another output folder or delete it"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1))


def check_region_source(units: Sequence[Unit], options: Options) -> None:
    """Refuses body anonymization of inputs without person annotations (nothing would be hidden)."""
    unannotated = [u.key for u in units if isinstance(u, readers.Video) and u.persons is None]
    unannotated += [u.key for u in units if isinstance(u, readers.Sample) and not u.persons]
    if options.region == "body" and len(unannotated) == len(units):
        raise ValueError(
            "--region body needs person annotations (coco, cityscapes, synthetic), but none of "
            f"the {len(units)} inputs has any; for plain folders of images or videos use "
            "--region face (the face detector)"
        )


def run(
    units: Sequence[Unit],
    out_dir: str | os.PathLike,
    options: Options = Options(),
    *,
    workers: int = 2,
    shard_size: int | None = None,
    on_error: str = "skip",
    progress: bool = True,
) -> dict:
    """Anonymizes images or videos into ``out_dir`` (see the module docstring); returns the
    summary. ``shard_size``: inputs per shard (default 64 images or 1 video)."""
    options.check()
    if options.detector == "auto":  # record the backend, so a resume cannot switch it
        options = dataclasses.replace(options, detector=detect.auto_backend())
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
    if not units:
        raise ValueError("nothing to anonymize: no input images or videos")
    check_region_source(units, options)
    out_dir = Path(out_dir)
    units = sorted(units, key=lambda unit: unit.key)
    if shard_size is None:
        shard_size = 1 if isinstance(units[0], readers.Video) else 64
    _claim(out_dir, options, [unit.key for unit in units])
    shards = [units[i : i + shard_size] for i in range(0, len(units), shard_size)]
    todo = [i for i in range(len(shards)) if not shard_path(out_dir, i).exists()]
    jobs = [(i, shards[i], on_error) for i in todo]
    done = len(units) - sum(len(shards[i]) for i in todo)
    unit_name = "video" if isinstance(units[0], readers.Video) else "img"
    with tqdm.tqdm(
        total=len(units), initial=done, unit=unit_name, desc="anonymize", disable=not progress
    ) as bar:
        for index in _run_shards(jobs, workers, options, out_dir):
            bar.update(len(shards[index]))
    return _finish(out_dir, options, len(shards))


def _run_shards(jobs: list, workers: int, options: Options, out_dir: Path) -> Iterator[int]:
    """Runs the jobs on ``workers`` processes, this one included, yielding finished shards.

    This process works too (it has its imports already, while spawned workers need seconds to
    import torch) and keeps each of the ``workers - 1`` others fed with up to two jobs.
    """
    threads = torch.get_num_threads()
    _init_worker(options, out_dir, 1 if workers > 1 else threads)
    _WORKER["models"].prepare()
    pending = collections.deque(jobs)
    try:
        if workers == 1 or len(jobs) == 1:
            while pending:
                yield _run_shard(pending.popleft())[0]
            return
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers - 1, _init_worker, (options, out_dir, 1)) as pool:
            running: collections.deque = collections.deque()
            while pending or running:
                while pending and len(running) < 2 * (workers - 1):
                    running.append(pool.apply_async(_run_shard, (pending.popleft(),)))
                if pending:
                    yield _run_shard(pending.popleft())[0]
                else:
                    running[0].wait()
                while running and running[0].ready():
                    yield running.popleft().get()[0]  # re-raises a worker's error
    finally:
        torch.set_num_threads(threads)


def _finish(out_dir: Path, options: Options, num_shards: int) -> dict:
    skipped, counts, labels, pixels = [], {"train": 0, "test": 0}, set(), None
    for index in range(num_shards):
        with np.load(shard_path(out_dir, index)) as shard:
            skipped += json.loads(str(shard["skipped"]))
            if "key" not in shard.files:  # every input of the shard was skipped
                continue
            pixels = schema.VIDEO if schema.VIDEO in shard.files else schema.IMAGE
            shape = shard[pixels].shape[1:]
            labels.update(shard["label"].tolist())
            for split in counts:
                counts[split] += int(np.sum(shard["split"] == split))
    if not counts["train"]:
        raise ValueError(
            f"nothing could be anonymized into a train split ({len(skipped)} inputs "
            f"skipped, see {out_dir / '.shards'}); check the input and --on-error"
        )
    splits = tuple(split for split, count in counts.items() if count)
    dataset_dir = write_tfds(out_dir, pixels, shape, sorted(labels), num_shards, splits)
    summary = {
        "records": counts,
        "skipped": skipped,
        "dataset": str(dataset_dir),
        "images": str(out_dir / "images"),
        "options": dataclasses.asdict(options),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
