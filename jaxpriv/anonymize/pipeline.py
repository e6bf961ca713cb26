"""One input's anonymization: its regions, the method, the drop-in file and its records.

`process_sample` (an image, `readers.Sample`) and `process_video` (`readers.Video`) each write
the input's drop-in file under ``out_dir/images/<key>`` — the same relative path as the input,
with anonymized pixels (videos re-encoded as MPEG-4 at the source frame rate) — and return its
TFDS records and a report of what was found. `jaxpriv.anonymize.runner` runs them over a
dataset. An image gives one record (``image`` resized to ``size×size``, label, the
``sensitive`` mask and the anonymized-``region`` mask); a video gives one ``video`` record per
clip of ``clip_frames`` frames taken every ``frame_stride`` frames.

Fail closed: an input is written only when its people were handled. Annotations that declare
another image size than the file (``size_mismatch``), masks of the wrong size, undecodable or
truncated files raise, and so does an input where the face detector found no one (unless
``if_none="keep"``); nothing is written for an input that raises. Where the detector finds
nothing upright it also tries the image turned by 90°, 180° and 270° (``search_rotations``).

Videos without annotations get their faces from the detector, tracked across frames
(`tracking.track`); a face missed for up to ``max_gap`` frames between two detections is
covered by its interpolated box (`tracking.fill_gaps`). Annotated persons keep one track id.

The generative methods (``realistic``: diffusion inpainting; ``avatar``: a rendered body in the
person's pose, planned for a whole video at once) use models that each worker builds on first
use (`Models`). Which pixels become public is `is_public_content` with the rule of
`jaxpriv.data.sensitivity`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from jaxpriv.anonymize import detect, encode, histogram, readers, regions, tracking, traditional
from jaxpriv.anonymize.settings import GENERATIVE_METHODS, Options
from jaxpriv.data import schema, sensitivity

PLATE_FRAMES = 16  # frames a video's background is gathered from (see `video_plate`)


def key_seed(seed: int, key: str) -> int:
    """A per-sample seed: the same key gets the same randomness in every run and worker."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def label_of(key: str) -> str:
    """The class of a sample: its first folder (ImageFolder / UCF-101 layout), else "none"."""
    parts = Path(key.split("#")[0]).parts
    return parts[0] if len(parts) > 1 else "none"


def split_of(key: str, test_fraction: float) -> str:
    return "test" if key_seed(0, key) / 2**32 < test_fraction else "train"


class NothingFoundError(ValueError):
    """The face detector or the person model found no one in an input (``Options.if_none``)."""


FOUND_BY_MODELS = ("detector", "person model")  # sources of regions that may miss someone


def uses_person_model(options: Options, annotated: bool) -> bool:
    """Whether the people of an input come from the person model: body regions of inputs
    without annotations (``people="auto"``), or of every input (``people="model"``)."""
    if options.region != "body":
        return False
    return options.people == "model" or (options.people == "auto" and not annotated)


def model_people(image: np.ndarray, people) -> tuple[list[readers.Person], dict]:
    """(the people that ``people`` (a `person_model.PersonModel`) finds in ``image``, as
    persons with mask, box, COCO keypoints — visible where MediaPipe's visibility is at
    least 0.5 — and world keypoints, what was found)."""
    found = people(image)
    persons = []
    for person in found:
        keypoints = person.keypoints.copy()
        keypoints[:, 2] = np.where(keypoints[:, 2] >= 0.5, 2.0, 0.0)
        box = tuple(float(v) for v in person.box)
        persons.append(
            readers.Person(box, person.mask, keypoints, world_keypoints=person.world_keypoints)
        )
    report = {"source": "person model", "regions": len(found)}
    report["confidence"] = [round(float(person.score), 4) for person in found]
    return persons, report


def find_region(
    persons: list[readers.Person], image: np.ndarray, options: Options, detector
) -> tuple[np.ndarray, dict]:
    """(bool HxW mask of what to anonymize, what was found): the annotated persons, or for
    faces of images without keypoints the detector (also on turned copies where it finds
    nothing upright, with ``search_rotations``)."""
    annotated = [p for p in persons if p.keypoints is not None or options.region == "body"]
    if options.region == "face" and not annotated:
        faces, turns = find_faces(image, options, detector)
        found = {"source": "detector", "regions": len(faces), "turns": turns}
        found["confidence"] = [round(face.score, 4) for face in faces]
        return detect.detections_to_mask(faces, image.shape[:2]), found
    extra = {"dilate": options.dilate, "expand_box": options.expand_box}
    mask = regions.region_mask(
        annotated, image.shape, options.region, **(extra if options.region == "body" else {})
    )
    return mask, {"source": "annotations", "regions": len(annotated)}


def find_faces(image: np.ndarray, options: Options, detector) -> tuple[list, int]:
    """(detected faces, quarter turns of the image they were found at)."""
    if options.search_rotations:
        return detect.detect_any_orientation(detector, image)
    return detector(image), 0


def nothing_found(found: dict) -> bool:
    """Whether a model (the face detector, the person model) looked and found no one."""
    return found["source"] in FOUND_BY_MODELS and not found["regions"]


def check_found(key: str, found: dict, options: Options) -> None:
    """Raises `NothingFoundError` for an input where the face detector or the person model
    found no one, unless ``if_none`` is "keep" (then it is written unchanged, and listed)."""
    if nothing_found(found) and options.if_none != "keep":
        if found["source"] == "person model":
            what = "the person model found no one"
        else:
            turned = " upright or turned" if options.search_rotations else ""
            what = f"the {options.detector} face detector found no face{turned}"
        raise NothingFoundError(f"{key}: {what}; --if-none keep would write it unchanged")


def fit_annotations(
    sample: readers.Sample, shape: tuple[int, int], options: Options
) -> list[readers.Person]:
    """The sample's persons checked against its decoded image size ``shape`` (H, W).

    Annotations that declare another image size than the file has are refused (they would land
    at the wrong pixels), or scaled to the file with ``size_mismatch="rescale"``; masks of
    another size than the image, and the sample's own annotation problems, are refused.
    """
    declared, persons = sample.declared_shape, sample.persons
    if declared is None or tuple(declared) == tuple(shape):
        sample.check_annotations(shape)
        return persons
    sample.check_annotations()
    if options.size_mismatch != "rescale":
        raise readers.AnnotationError(
            sample.path,
            [
                f"{sample.key}: the annotations declare {declared[0]}x{declared[1]} but the "
                f"image is {shape[0]}x{shape[1]}; --size-mismatch rescale scales them"
            ],
        )
    return [regions.rescale_person(person, declared, shape) for person in persons]


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
    """The models of the generative methods, built on first use (once per worker process).

    ``slot``: the worker's number; with ``options.device == "cuda"`` the diffusion models go to
    the GPU ``slot`` modulo the visible ones."""

    def __init__(self, options: Options, slot: int = 0):
        self.options = options
        self.slot = slot

    @property
    def device(self) -> str:
        if self.options.device == "cuda":
            return f"cuda:{self.slot % torch.cuda.device_count()}"
        return "cpu"

    @functools.cached_property
    def inpainter(self):
        from jaxpriv.anonymize import realistic

        pipe = realistic.load_pipeline(
            self.options.weights, controlnet=self.options.controlnet or None, device=self.device
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
    plate=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The realistic or avatar method on one image: (uint8 HxWx3, bool HxW new public pixels).

    ``planned``, ``plate``: a video frame's avatars from ``Avatars.plan_video`` (else fitted
    here) and its video's background from ``Avatars.plate`` (else inpainted).
    """
    if models.options.method == "realistic":
        keypoints = [p.keypoints for p in persons if p.keypoints is not None and not p.crowd]
        inpainted = models.inpainter(image, region, keypoints=keypoints, seed=seed)
        return inpainted, np.zeros_like(region)
    avatars = models.avatars
    if planned is None:
        planned = avatars.plan(image.shape, persons, key)
    return avatars.paint(image, region, planned, seed, plate)


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
    plate=None,
):
    """(anonymized uint8 HxWx3, public bool HxW): the method, then the histogram fit.

    The public pixels are the new content that depends on no real pixel (see
    `is_public_content`); for an avatar they may lie outside ``region``. ``models``: those of
    the generative methods (needed for them only).
    """
    if options.method in GENERATIVE_METHODS:
        content, new = generate(image, region, models, seed, persons, key, planned, plate)
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


def record_masks(region: np.ndarray, public: np.ndarray, options: Options) -> dict:
    """The record-size ``sensitive`` and ``region`` masks of one anonymized image or frame; the
    anonymized region includes the new public pixels (an avatar may reach beyond the person)."""
    return {
        "sensitive": sensitivity.sensitive_mask(
            sensitivity.resize_public(public, options.size), options.sensitivity
        ),
        "region": sensitivity.resize_square(
            (region | public).astype(np.uint8), options.size, cv2.INTER_NEAREST
        ),
    }


def process_sample(
    sample: readers.Sample,
    options: Options,
    detector,
    out_dir: Path,
    models: Models | None = None,
    people=None,
) -> tuple[list, dict]:
    """Anonymizes one image and writes its drop-in file — the original file's pixel format
    (depth, grey, alpha) with only the anonymized pixels replaced: (its TFDS record in a list,
    what was found). ``people``: the person model (`uses_person_model`). Nothing is written for
    an input that raises."""
    original = readers.load_original(sample.path)
    image = readers.to_rgb8(original)
    persons = fit_annotations(sample, image.shape[:2], options)
    if uses_person_model(options, sample.annotated):
        persons, found = model_people(image, people)
        region, _ = find_region(persons, image, options, detector)
    else:
        region, found = find_region(persons, image, options, detector)
    check_found(sample.key, found, options)
    seed = key_seed(options.seed, sample.key)
    anonymized, public = anonymize_image(
        image, region, options, seed, persons=persons, key=sample.key, models=models
    )
    copy = readers.restore(original, anonymized, region | public)
    encode.write_image_atomically(out_dir / "images" / sample.key, copy)
    record = {
        "key": sample.key,
        schema.IMAGE: sensitivity.resize_square(anonymized, options.size, cv2.INTER_AREA),
        **record_masks(region, public, options),
        "label": sample.label or label_of(sample.key),
        "split": split_of(sample.key, options.test_fraction),
    }
    return [record], found


def tracked(
    video: readers.Video, options: Options, find, source: str
) -> tuple[list[list[readers.Person]], dict]:
    """(per frame, the persons that ``find(frame) -> (persons, scores, quarter turns)`` gives,
    tracked — one id per person — with misses of up to ``max_gap`` frames covered by
    interpolated boxes; what was found, the regions from ``source``)."""
    frames, scores, turns = [], [], set()
    for frame in video.decode():
        persons, frame_scores, turn = find(frame)
        frames.append(persons)
        scores += frame_scores
        if persons:
            turns.add(turn)
    tracking.track(frames, max_gap=options.max_gap)
    frames_with_regions = sum(bool(persons) for persons in frames)
    tracking.fill_gaps(frames, options.max_gap)
    found = {
        "source": source,
        "regions": len({p.track_id for persons in frames for p in persons}),
        "frames": len(frames),
        "frames_with_regions": frames_with_regions,
        "confidence": [round(min(scores), 4), round(max(scores), 4)] if scores else [],
    }
    if source == "detector":
        found["turns"] = sorted(turns)
    return frames, found


def tracked_faces(
    video: readers.Video, options: Options, detector
) -> tuple[list[list[readers.Person]], dict]:
    """`tracked` faces of the detector, as persons with a box only."""

    def find(frame):
        faces, turn = find_faces(frame, options, detector)
        return [readers.Person(face.box) for face in faces], [face.score for face in faces], turn

    return tracked(video, options, find, "detector")


def tracked_people(
    video: readers.Video, options: Options, people
) -> tuple[list[list[readers.Person]], dict]:
    """`tracked` people of the person model."""

    def find(frame):
        persons, found = model_people(frame, people)
        return persons, found["confidence"], 0

    return tracked(video, options, find, "person model")


def video_plate(video: readers.Video, persons, options: Options, detector, avatars):
    """The video's background for its avatars (``Avatars.plate``): each pixel's median over up to
    :data:`PLATE_FRAMES` evenly spaced frames that do not cover it with a person's region."""
    count = len(persons)
    chosen = set(np.linspace(0, count - 1, min(count, PLATE_FRAMES)).round().astype(int).tolist())
    frames, regions = [], []
    for index, frame in enumerate(video.decode()):
        if index in chosen:
            frames.append(frame)
            regions.append(find_region(persons[index], frame, options, detector)[0])
        if index == max(chosen):
            break
    return avatars.plate(frames, regions)


def clip_tracks(frames: Sequence[Sequence[readers.Person]], options: Options) -> list[list]:
    """Per frame of a video's first clip (source frames 0, ``frame_stride``, …), the
    ``[track id, x0, y0, x1, y1]`` (source pixels) of each tracked person or face (crowds have
    no id): what the preview draws (`jaxpriv.anonymize.preview`); one clip only, as it lands in
    the report."""
    shown = frames[: options.clip_frames * options.frame_stride : options.frame_stride]
    return [
        [[p.track_id, *(round(float(v), 1) for v in p.box)] for p in persons if not p.crowd]
        for persons in shown
    ]


def process_video(
    video: readers.Video,
    options: Options,
    detector,
    out_dir: Path,
    models: Models | None = None,
    people=None,
) -> tuple[list, dict]:
    """Anonymizes a video frame by frame and writes its drop-in copy: (its clip records, what
    was found). ``people``: the person model (`uses_person_model`). Nothing is written for a
    video that raises (the copy appears only once every frame decoded and enough of them for a
    clip).

    Avatars are planned for the whole video first (one identity per track, smoothed poses),
    and the background behind the people gathered from the frames (`video_plate`).
    """
    faces = plan = None
    persons = video.persons
    if uses_person_model(options, persons is not None):  # two passes: find and track, then
        persons, found = tracked_people(video, options, people)  # anonymize
        check_found(video.key, found, options)
    elif persons is None:
        if options.method == "avatar":
            raise ValueError("no person annotations: an avatar needs the person's mask or box")
        faces, found = tracked_faces(video, options, detector)
        check_found(video.key, found, options)
    else:
        tracking.track(persons)
        tracks = {p.track_id for frame in persons for p in frame}
        found = {"source": "annotations", "regions": len(tracks), "frames": len(persons)}
        found["frames_with_regions"] = sum(bool(frame) for frame in persons)
    found["tracks"] = clip_tracks(persons if faces is None else faces, options)
    kept = {name: [] for name in (schema.VIDEO, "sensitive", "region")}
    plate = None
    if options.method == "avatar":
        plate = video_plate(video, persons, options, detector, models.avatars)
    with encode.VideoWriter(out_dir / "images" / video.key, video.frame_rate) as writer:
        for index, frame in enumerate(video.decode()):
            if options.method == "avatar" and plan is None:  # all frames' avatars, at once
                plan = models.avatars.plan_video(persons, frame.shape, video.key)
            if faces is None:
                region, _ = find_region(persons[index], frame, options, detector)
            else:
                boxes = [detect.Detection(face.box, 1.0) for face in faces[index]]
                region = detect.detections_to_mask(boxes, frame.shape)
            seed = key_seed(options.seed, f"{video.key}#{index}")
            anonymized, public = anonymize_image(
                frame,
                region,
                options,
                seed,
                persons=[] if faces is not None else persons[index],
                key=f"{video.key}#{index}",
                models=models,
                planned=None if plan is None else plan[index],
                plate=plate,
            )
            writer.write(anonymized)
            if index % options.frame_stride == 0:
                pixels = sensitivity.resize_square(anonymized, options.size, cv2.INTER_AREA)
                kept[schema.VIDEO].append(pixels)
                for name, mask in record_masks(region, public, options).items():
                    kept[name].append(mask)
        clips = len(kept[schema.VIDEO]) // options.clip_frames
        if not clips:  # raised inside the writer: no copy of a skipped video
            raise ValueError(
                f"too short: {len(kept[schema.VIDEO])} frames kept (every "
                f"{options.frame_stride}), fewer than one clip of {options.clip_frames}; "
                "lower --clip-frames or --frame-stride"
            )
    if options.max_clips:
        clips = min(clips, options.max_clips)
    split = split_of(video.key, options.test_fraction)  # all clips of a video in one split
    label = video.label or label_of(video.key)
    length = options.clip_frames
    records = [
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
    return records, found
