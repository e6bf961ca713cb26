"""Readers for annotated images and videos: COCO JSON, Cityscapes `gtFine`, image folders, videos.

Every reader returns `Sample`s: one image (or video frame) with the `Person`s annotated in it.
Pixel coordinates are continuous: pixel (row r, column c) covers [c, c+1) x [r, r+1), so a box
(x0, y0, x1, y1) = (0, 0, 2, 1) covers exactly two pixels. Annotation problems are collected and
raised once as an `AnnotationError` naming the files; unreadable images raise `CorruptImageError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

Box = tuple[float, float, float, float]
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png")
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

    box: (x0, y0, x1, y1) in pixel coordinates. mask: bool HxW or None. keypoints: float [17, 3]
    (x, y, visibility) in COCO order, or None. track_id: identity across video frames.
    """

    box: Box
    mask: np.ndarray | None = field(default=None, repr=False)
    keypoints: np.ndarray | None = field(default=None, repr=False)
    crowd: bool = False
    track_id: int | None = None
    source_id: str = ""


@dataclass
class Sample:
    """One image or video frame: `key` is its unique relative name, `path` the absolute file."""

    key: str
    path: Path
    persons: list[Person] = field(default_factory=list)
    frame_index: int | None = None
    pixels: np.ndarray | None = field(default=None, repr=False)  # decoded video frame

    @property
    def image(self) -> np.ndarray:
        """The uint8 HxWx3 RGB pixels: the video frame, or the file decoded now (not cached)."""
        image = self.pixels if self.pixels is not None else load_image(self.path)
        self._check_mask_shapes(image.shape[:2])
        return image

    def _check_mask_shapes(self, shape: tuple[int, int]) -> None:
        problems = [
            f"{self.key}: image is {shape[0]}x{shape[1]} but the mask of person "
            f"{person.source_id!r} is {person.mask.shape[0]}x{person.mask.shape[1]}"
            for person in self.persons
            if person.mask is not None and person.mask.shape != shape
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


def rle_to_mask(counts: list[int], height: int, width: int) -> np.ndarray:
    """Run lengths (alternating 0s and 1s, column-major, starting with 0s) to a bool HxW mask."""
    counts = np.asarray(counts, dtype=np.int64)
    if (counts < 0).any():
        raise ValueError("RLE has negative run lengths")
    if counts.sum() != height * width:
        raise ValueError(
            f"RLE runs cover {counts.sum()} pixels, expected {height}x{width} = {height * width}"
        )
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape((height, width), order="F")


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Union of COCO polygons [x0, y0, x1, y1, ...]: the pixels whose centre lies inside (even-odd)."""
    mask = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(
                f"polygon with {len(polygon)} coordinates: expected an even number >= 6"
            )
        mask |= _polygon_mask(np.asarray(polygon, dtype=np.float64).reshape(-1, 2), height, width)
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


def _segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as a bool HxW mask."""
    if isinstance(segmentation, list):
        return polygons_to_mask(segmentation, height, width)
    if not isinstance(segmentation, dict):
        raise ValueError(f"unsupported segmentation of type {type(segmentation).__name__}")
    size = [int(v) for v in segmentation["size"]]
    if size != [height, width]:
        raise ValueError(
            f"RLE mask size {size} does not match the image size [{height}, {width}] (height, width)"
        )
    counts = segmentation["counts"]
    if isinstance(counts, str):
        counts = rle_string_to_counts(counts)
    return rle_to_mask(counts, height, width)


def _coco_keypoints(values: list[float]) -> np.ndarray:
    if len(values) != 3 * NUM_KEYPOINTS:
        raise ValueError(f"{len(values)} keypoint values, expected {3 * NUM_KEYPOINTS}")
    return np.asarray(values, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)


def _coco_person(annotation: dict, height: int, width: int) -> Person:
    x, y, w, h = (float(v) for v in annotation["bbox"])
    segmentation = annotation.get("segmentation")
    keypoints = annotation.get("keypoints")
    return Person(
        box=(x, y, x + w, y + h),
        mask=_segmentation_mask(segmentation, height, width) if segmentation else None,
        keypoints=None if keypoints is None else _coco_keypoints(keypoints),
        crowd=bool(annotation.get("iscrowd", 0)),
        source_id=str(annotation["id"]),
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


def _person_category_ids(data: dict, source: Path) -> set:
    ids = {c.get("id") for c in data.get("categories", []) if c.get("name") == "person"}
    if not ids:
        raise AnnotationError(source, ["no category named 'person' in 'categories'"])
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


def read_coco(annotation_json: str | Path, image_root: str | Path) -> list[Sample]:
    """Persons of a COCO instances / person-keypoints JSON, one `Sample` per listed image.

    Only the category named "person" is read. Images without persons are samples without persons.
    Raises `AnnotationError` listing every missing image, unknown image id and malformed annotation.
    """
    annotation_json, image_root = Path(annotation_json), Path(image_root)
    data = _load_json(annotation_json)
    person_ids = _person_category_ids(data, annotation_json)
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


def _cityscapes_persons(instance_ids: np.ndarray) -> list[Person]:
    """Persons and riders of an instanceIds map; a bare class id (< 1000) marks a crowd region."""
    persons = []
    for value in np.unique(instance_ids).tolist():
        class_id = value // 1000 if value >= 1000 else value
        if class_id in CITYSCAPES_PERSON_CLASSES:
            mask = instance_ids == value
            persons.append(Person(mask_box(mask), mask, crowd=value < 1000, source_id=str(value)))
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
            persons = _cityscapes_persons(_read_instance_ids(instance_path))
        except FileNotFoundError:
            problems.append(f"{key}: instance map not found at '{instance_path}'")
        except CorruptImageError as error:
            problems.append(f"{key}: {error}")
        else:
            samples.append(Sample(key, path.absolute(), persons))
    if problems:
        raise AnnotationError(root / "gtFine" / split, problems)
    return samples


# --- folders and videos -----------------------------------------------------------------------


def read_folder(root: str | Path) -> list[Sample]:
    """Every image under `root` (recursive, sorted by relative path), without persons."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: '{root}'")
    paths = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under '{root}'")
    keys = sorted(p.relative_to(root).as_posix() for p in paths)
    return [Sample(key, (root / key).absolute()) for key in keys]


def read_video(path: str | Path, root: str | Path | None = None) -> Iterator[Sample]:
    """The frames of a video (PyAV) as samples keyed `<relpath>#<frame:06d>`, decoded lazily.

    `relpath` is the path relative to `root`, or the file name when no root is given. A missing
    file raises here; an undecodable one raises `CorruptImageError` here or on the bad frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: '{path}'")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise CorruptImageError(f"cannot decode video '{path}': {error}") from error
    if not container.streams.video:
        container.close()
        raise CorruptImageError(f"cannot decode video '{path}': it has no video stream")
    relpath = path.name if root is None else path.relative_to(root).as_posix()
    return _video_frames(container, path, relpath)


def _video_frames(container, path: Path, relpath: str) -> Iterator[Sample]:
    with container:
        try:
            for index, frame in enumerate(container.decode(video=0)):
                pixels = frame.to_ndarray(format="rgb24")
                yield Sample(
                    f"{relpath}#{index:06d}", path.absolute(), frame_index=index, pixels=pixels
                )
        except av.FFmpegError as error:
            raise CorruptImageError(f"cannot decode video '{path}': {error}") from error
