"""Readers for annotated images and videos: COCO JSON, Cityscapes `gtFine`, image folders, videos.

Every reader returns `Sample`s: one image (or video frame) with the `Person`s annotated in it.
Pixel coordinates are continuous: pixel (row r, column c) covers [c, c+1) x [r, r+1), so a box
(x0, y0, x1, y1) = (0, 0, 2, 1) covers exactly two pixels. Annotation problems are collected and
raised once as an `AnnotationError` naming the files; unreadable images raise `CorruptImageError`.
COCO masks stay in their compact JSON form (checked when read) and are decoded on access.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from jaxpriv.data import schema, synthetic

Box = tuple[float, float, float, float]
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png")
VIDEO_SUFFIXES = (".avi", ".mkv", ".mov", ".mp4", ".webm")
GENERATED_FRAME_RATE = 8  # frames per second of the drop-in copies of generated clips
CITYSCAPES_PERSON_CLASSES = (24, 25)  # person, rider
NUM_KEYPOINTS = 17  # COCO person keypoints
MAX_PROBLEMS_SHOWN = 10


class CorruptImageError(ValueError):
    """An image or video file exists but cannot be decoded."""


class AnnotationError(ValueError):
    """Annotations that are missing, malformed or do not match their images; `problems` lists all."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:MAX_PROBLEMS_SHOWN])
        hidden = len(self.problems) - MAX_PROBLEMS_SHOWN
        more = f"\n  ... and {hidden} more" if hidden > 0 else ""
        super().__init__(f"{source}: {len(self.problems)} annotation problem(s):\n  {shown}{more}")


@dataclass
class Person:
    """One annotated person (or crowd region) in one image.

    box: (x0, y0, x1, y1) in pixel coordinates. mask: bool HxW or None; it may be given as a
    `CocoSegmentation`, which is kept compact and decoded each time `mask` is read.
    keypoints: float [17, 3] (x, y, visibility) in COCO order, or None. track_id: identity
    across video frames.
    """

    box: Box
    mask: np.ndarray | None = field(default=None, repr=False)
    keypoints: np.ndarray | None = field(default=None, repr=False)
    crowd: bool = False
    track_id: int | None = None
    source_id: str = ""

    @property
    def mask_shape(self) -> tuple[int, ...] | None:
        """The shape of `mask` (None without one), without decoding it."""
        return None if self._mask is None else self._mask.shape


class _DecodedMask:
    """`Person.mask`: stores an array, None or a lazy mask (`CocoSegmentation`, `InstanceMask`)
    in `_mask`; reads decode the lazy ones."""

    def __get__(self, person: Person | None, owner: type | None = None) -> np.ndarray | None:
        if person is None:
            return None  # the class attribute: the dataclass default
        stored = person._mask
        return stored.decode() if isinstance(stored, (CocoSegmentation, InstanceMask)) else stored

    def __set__(self, person: Person, value) -> None:
        person._mask = value


Person.mask = _DecodedMask()  # replaces the default that @dataclass left; __init__ sets through it


@dataclass
class Sample:
    """One image: `key` is its unique relative name, `path` the absolute file. `label`: its
    class, or None (then its first folder)."""

    key: str
    path: Path
    persons: list[Person] = field(default_factory=list)
    label: str | None = None

    @property
    def image(self) -> np.ndarray:
        """The uint8 HxWx3 RGB pixels, decoded now (not cached); mask sizes are checked."""
        image = load_image(self.path)
        self._check_mask_shapes(image.shape[:2])
        return image

    def _check_mask_shapes(self, shape: tuple[int, int]) -> None:
        problems = [
            f"{self.key}: image is {shape[0]}x{shape[1]} but the mask of person "
            f"{person.source_id!r} is {person.mask_shape[0]}x{person.mask_shape[1]}"
            for person in self.persons
            if person.mask_shape not in (None, shape)
        ]
        if problems:
            raise AnnotationError(self.path, problems)


def _read_with_cv2(path: str | Path, flags: int) -> np.ndarray:
    """cv2.imread with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: '{path}'")
    pixels = cv2.imread(str(path), flags)
    if pixels is None:
        raise CorruptImageError(
            f"cannot decode image '{path}': not a supported image format, or corrupt data"
        )
    return pixels


def load_image(path: str | Path) -> np.ndarray:
    """Decodes an image file to uint8 HxWx3 RGB."""
    return cv2.cvtColor(_read_with_cv2(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# --- COCO -------------------------------------------------------------------------------------


def rle_string_to_counts(encoded: str) -> list[int]:
    """Decodes COCO's compressed RLE string (pycocotools `rleFrString`) to run lengths."""
    counts: list[int] = []
    pos = 0
    while pos < len(encoded):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(encoded):
                raise ValueError("compressed RLE string ends in the middle of a count")
            chunk = ord(encoded[pos]) - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and chunk & 0x10:
                value |= -1 << shift  # sign extension
        if len(counts) > 2:
            value += counts[-2]  # counts after the second are stored as differences
        counts.append(value)
    return counts


def _checked_counts(counts, height: int, width: int) -> np.ndarray:
    """Run lengths as int64, checked to be non-negative and to cover exactly HxW pixels."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1:
        raise ValueError("RLE counts must be a string or a list of integers")
    if (counts < 0).any():
        raise ValueError("RLE has negative run lengths")
    if counts.sum() != height * width:
        raise ValueError(
            f"RLE runs cover {counts.sum()} pixels, expected {height}x{width} = {height * width}"
        )
    return counts


def rle_to_mask(counts: list[int], height: int, width: int) -> np.ndarray:
    """Run lengths (alternating 0s and 1s, column-major, starting with 0s) to a bool HxW mask."""
    counts = _checked_counts(counts, height, width)
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape((height, width), order="F")


def _polygon_points(polygon) -> np.ndarray:
    """A COCO polygon [x0, y0, x1, y1, ...] as checked float [N, 2] points."""
    points = np.asarray(polygon, dtype=np.float64)
    if points.ndim != 1 or len(points) < 6 or len(points) % 2:
        raise ValueError(f"polygon with {points.size} coordinates: expected an even number >= 6")
    if not np.isfinite(points).all():
        raise ValueError("polygon coordinates must be finite numbers")
    return points.reshape(-1, 2)


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Union of COCO polygons [x0, y0, x1, y1, ...]: the pixels whose centre lies inside (even-odd)."""
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        mask |= _polygon_mask(_polygon_points(polygon), height, width)
    return mask


def _polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scanline fill of one polygon: edge crossings per row centre, filled between pairs."""
    (x0, y0), (x1, y1) = points.T, np.roll(points, -1, axis=0).T
    rows = np.arange(height)[:, None] + 0.5
    crosses = (rows >= np.minimum(y0, y1)) & (rows < np.maximum(y0, y1))  # half-open: even count
    slope = (x1 - x0) / np.where(y1 == y0, 1.0, y1 - y0)
    xs = np.sort(np.where(crosses, x0 + (rows - y0) * slope, np.inf), axis=1)
    starts, stops = xs[:, :-1:2], xs[:, 1::2]  # an odd last column is all inf
    inside = np.isfinite(starts)
    row_index = np.broadcast_to(np.arange(height)[:, None], starts.shape)[inside]
    first = np.clip(np.ceil(starts[inside] - 0.5), 0, width).astype(np.int64)
    last = np.clip(np.ceil(stops[inside] - 0.5), 0, width).astype(np.int64)
    edges = np.zeros((height, width + 1), dtype=np.int64)
    np.add.at(edges, (row_index, first), 1)
    np.add.at(edges, (row_index, last), -1)
    return np.cumsum(edges, axis=1)[:, :width] > 0


def _rle_counts(rle: dict, height: int, width: int) -> np.ndarray:
    """The checked run lengths of a COCO RLE dict (uncompressed or compressed counts)."""
    size = [int(v) for v in rle["size"]]
    if size != [height, width]:
        raise ValueError(
            f"RLE mask size {size} does not match the image size [{height}, {width}] (height, width)"
        )
    counts = rle["counts"]
    return _checked_counts(
        rle_string_to_counts(counts) if isinstance(counts, str) else counts, height, width
    )


@dataclass(frozen=True, eq=False)
class CocoSegmentation:
    """A COCO segmentation as in the JSON (polygons, uncompressed or compressed RLE), decoded to
    a bool HxW mask only by `decode`. Construction checks it: sizes, types and run lengths."""

    segmentation: list | dict
    height: int
    width: int
    annotation_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.segmentation, list):
            for polygon in self.segmentation:
                _polygon_points(polygon)
        elif isinstance(self.segmentation, dict):
            _rle_counts(self.segmentation, self.height, self.width)
        else:
            raise ValueError(f"unsupported segmentation of type {type(self.segmentation).__name__}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def decode(self) -> np.ndarray:
        """The bool HxW mask; raises ValueError naming the annotation if it cannot be decoded."""
        try:
            if isinstance(self.segmentation, list):
                return polygons_to_mask(self.segmentation, self.height, self.width)
            counts = _rle_counts(self.segmentation, self.height, self.width)
            return rle_to_mask(counts, self.height, self.width)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"annotation {self.annotation_id}: cannot decode its segmentation: "
                f"{_describe(error)}"
            ) from error


def _coco_keypoints(values: list[float]) -> np.ndarray:
    if len(values) != 3 * NUM_KEYPOINTS:
        raise ValueError(f"{len(values)} keypoint values, expected {3 * NUM_KEYPOINTS}")
    return np.asarray(values, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)


def _coco_person(annotation: dict, height: int, width: int) -> Person:
    x, y, w, h = (float(v) for v in annotation["bbox"])
    segmentation = annotation.get("segmentation")
    keypoints = annotation.get("keypoints")
    annotation_id = str(annotation["id"])
    return Person(
        box=(x, y, x + w, y + h),
        mask=CocoSegmentation(segmentation, height, width, annotation_id) if segmentation else None,
        keypoints=None if keypoints is None else _coco_keypoints(keypoints),
        crowd=bool(annotation.get("iscrowd", 0)),
        source_id=annotation_id,
    )


def _describe(error: Exception) -> str:
    return f"missing field {error}" if isinstance(error, KeyError) else str(error)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: '{path}'")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationError(path, [f"not valid JSON: {error}"]) from error


def _person_category_ids(data: dict, source: Path, names: tuple[str, ...]) -> set:
    ids = {c.get("id") for c in data.get("categories", []) if c.get("name") in names}
    if not ids:
        raise AnnotationError(
            source, [f"no category named {' or '.join(map(repr, names))} in 'categories'"]
        )
    return ids


def _coco_images(data: dict, image_root: Path, problems: list[str]) -> dict:
    """image id -> (file_name, height, width) for the well-formed, existing, unique images."""
    images, seen = {}, set()
    for number, image in enumerate(data.get("images", [])):
        try:
            name, height, width = image["file_name"], int(image["height"]), int(image["width"])
            image_id = image["id"]
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"images[{number}] ({image.get('file_name')}): {_describe(error)}")
            continue
        if name in seen:
            problems.append(f"{name}: listed twice in 'images'")
        elif not (image_root / name).is_file():
            problems.append(f"{name}: image file not found at '{image_root / name}'")
        seen.add(name)
        images[image_id] = (name, height, width)
    return images


def read_coco(
    annotation_json: str | Path,
    image_root: str | Path,
    person_categories: tuple[str, ...] = ("person",),
) -> list[Sample]:
    """Persons of a COCO instances / person-keypoints JSON, one `Sample` per listed image.

    Only the categories named in `person_categories` are read (BDD100K: pedestrian, rider).
    Images without persons are samples without persons.
    Masks are `CocoSegmentation`s, decoded each time a `Person.mask` is read.
    Raises `AnnotationError` listing every missing image, unknown image id and malformed annotation.
    """
    annotation_json, image_root = Path(annotation_json), Path(image_root)
    data = _load_json(annotation_json)
    person_ids = _person_category_ids(data, annotation_json, tuple(person_categories))
    problems: list[str] = []
    images = _coco_images(data, image_root, problems)
    persons: dict = {image_id: [] for image_id in images}
    for annotation in data.get("annotations", []):
        if annotation.get("category_id") not in person_ids:
            continue
        image = images.get(annotation.get("image_id"))
        if image is None:
            problems.append(
                f"annotation {annotation.get('id')}: unknown image_id {annotation.get('image_id')}"
            )
            continue
        try:
            persons[annotation["image_id"]].append(_coco_person(annotation, *image[1:]))
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{image[0]}: annotation {annotation.get('id')}: {_describe(error)}")
    if problems:
        raise AnnotationError(annotation_json, problems)
    return [
        Sample(name, (image_root / name).absolute(), persons[image_id])
        for image_id, (name, _, _) in images.items()
    ]


# --- Cityscapes -------------------------------------------------------------------------------


def mask_box(mask: np.ndarray) -> Box:
    """The tightest box around the True pixels of a non-empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


@dataclass(frozen=True)
class InstanceMask:
    """One instance of an instance-id map file, decoded to a bool HxW mask only by `decode`
    (a whole dataset's full-resolution masks would not fit in memory)."""

    path: Path
    value: int
    shape: tuple[int, int]

    def decode(self) -> np.ndarray:
        return _read_instance_ids(self.path) == self.value


def _cityscapes_persons(instance_ids: np.ndarray, path: Path) -> list[Person]:
    """Persons and riders of the instanceIds map read from `path`; a bare class id (< 1000)
    marks a crowd region. Masks stay lazy (`InstanceMask`)."""
    persons = []
    for value in np.unique(instance_ids).tolist():
        class_id = value // 1000 if value >= 1000 else value
        if class_id in CITYSCAPES_PERSON_CLASSES:
            box = mask_box(instance_ids == value)
            mask = InstanceMask(path, value, instance_ids.shape)
            persons.append(Person(box, mask, crowd=value < 1000, source_id=str(value)))
    return persons


def _read_instance_ids(path: Path) -> np.ndarray:
    ids = _read_with_cv2(path, cv2.IMREAD_UNCHANGED)
    if ids.ndim != 2:
        raise CorruptImageError(
            f"instance map '{path}' has shape {ids.shape}: expected one channel"
        )
    return ids


def read_cityscapes(root: str | Path, split: str = "train") -> list[Sample]:
    """Persons and riders of `root/leftImg8bit/<split>` from `root/gtFine/<split>` instanceIds maps.

    Raises `AnnotationError` listing every image whose instance map is missing or unreadable.
    """
    root = Path(root)
    image_dir = root / "leftImg8bit" / split
    paths = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not paths:
        raise FileNotFoundError(f"no Cityscapes images '<city>/*_leftImg8bit.png' in '{image_dir}'")
    samples, problems = [], []
    for path in paths:
        key = path.relative_to(root).as_posix()
        name = path.name.replace("_leftImg8bit.png", "_gtFine_instanceIds.png")
        instance_path = root / "gtFine" / split / path.parent.name / name
        try:
            persons = _cityscapes_persons(_read_instance_ids(instance_path), instance_path)
        except FileNotFoundError:
            problems.append(f"{key}: instance map not found at '{instance_path}'")
        except CorruptImageError as error:
            problems.append(f"{key}: {error}")
        else:
            samples.append(Sample(key, path.absolute(), persons))
    if problems:
        raise AnnotationError(root / "gtFine" / split, problems)
    return samples


# --- folders, videos and generated clips ------------------------------------------------------


def _files_under(root: str | Path, suffixes: tuple[str, ...], what: str) -> list[tuple[str, Path]]:
    """(relative key, absolute path) of every file under `root` with one of `suffixes`, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: '{root}'")
    paths = [p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()]
    if not paths:
        raise FileNotFoundError(f"no {what}s ({', '.join(suffixes)}) under '{root}'")
    keys = sorted(p.relative_to(root).as_posix() for p in paths)
    return [(key, (root / key).absolute()) for key in keys]


def read_folder(root: str | Path) -> list[Sample]:
    """Every image under `root` (recursive, sorted by relative path), without persons."""
    return [Sample(key, path) for key, path in _files_under(root, IMAGE_SUFFIXES, "image")]


@dataclass
class Video:
    """One video: a file decoded frame by frame, or frames held in memory (generated data).

    `key` is its unique relative name. `persons`: the annotated persons of each frame, or None
    (faces then come from a detector). `label`: its class, or None (then its first folder).
    """

    key: str
    path: Path | None = None
    frames: np.ndarray | None = field(default=None, repr=False)  # uint8 [T, H, W, 3]
    persons: list[list[Person]] | None = field(default=None, repr=False)
    label: str | None = None

    def decode(self) -> Iterator[np.ndarray]:
        """The uint8 HxWx3 RGB frames, in order."""
        return iter(self.frames) if self.frames is not None else decode_video(self.path)

    @property
    def frame_rate(self) -> Fraction:
        if self.frames is not None:
            return Fraction(GENERATED_FRAME_RATE)
        with _open_video(self.path) as container:
            return container.streams.video[0].average_rate or Fraction(GENERATED_FRAME_RATE)


def read_videos(root: str | Path) -> list[Video]:
    """Every video file under `root` (recursive, sorted by relative path); decoded later."""
    return [Video(key, path) for key, path in _files_under(root, VIDEO_SUFFIXES, "video")]


def _open_video(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: '{path}'")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise CorruptImageError(f"cannot decode video '{path}': {error}") from error
    if not container.streams.video:
        container.close()
        raise CorruptImageError(f"cannot decode video '{path}': it has no video stream")
    return container


def decode_video(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video file (PyAV) as uint8 HxWx3 RGB arrays, decoded lazily.

    A missing file raises here; an undecodable one raises `CorruptImageError` here or on the bad
    frame.
    """
    path = Path(path)
    return _frames(_open_video(path), path)


def _frames(container, path: Path) -> Iterator[np.ndarray]:
    with container:
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as error:
            raise CorruptImageError(f"cannot decode video '{path}': {error}") from error


def read_synthetic(num_clips: int, *, seed: int, frames: int, size: int) -> list[Video]:
    """The embedded synthetic clips (`jaxpriv.data.synthetic`) with each figure as a person.

    Keys are `<class>/<index>.mp4`; the person of each frame is the figure's mask with its COCO
    keypoints (`synthetic.keypoints`: the nose at the head's centre, so the face region is the
    head; the limbs at the figure's arms and legs).
    """
    data = synthetic.generate(num_clips, seed=seed, frames=frames, size=size)
    figures = data[schema.SENSITIVE] == 0  # sensitivity "background": the figure is not sensitive
    points = synthetic.keypoints(num_clips, seed=seed, frames=frames, size=size)
    videos = []
    for index, (clip, label, masks) in enumerate(
        zip(data[schema.VIDEO], data[schema.LABEL], figures)
    ):
        name = synthetic.CLASS_NAMES[label]
        persons = [
            [Person(mask_box(mask), mask, frame_points, track_id=0)]
            for mask, frame_points in zip(masks, points[index])
        ]
        videos.append(Video(f"{name}/{index:06d}.mp4", None, clip, persons, name))
    return videos
