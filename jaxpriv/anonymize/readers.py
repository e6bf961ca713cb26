"""Readers for annotated images and videos: COCO JSON, Cityscapes `gtFine`, image folders, videos.

Every reader returns `Sample`s: one image (or video frame) with the `Person`s annotated in it.
Pixel coordinates are continuous: pixel (row r, column c) covers [c, c+1) x [r, r+1), so a box
(x0, y0, x1, y1) = (0, 0, 2, 1) covers exactly two pixels. Annotation problems are collected and
raised once as an `AnnotationError` naming the files; unreadable images raise `CorruptImageError`.
COCO masks stay in their compact JSON form (checked when read) and are decoded on access.

Decoding is strict: truncated or corrupt images and videos, FFmpeg warnings and videos with fewer
frames than their container declares raise `CorruptImageError`. Pixels are RGB (cv2 uses BGR).
`load_original` keeps an image's own format (16-bit, gray, alpha); `to_rgb8` is the uint8 RGB
view the anonymizers work on and `restore` puts their result back into the original's format.
`ignored_files` lists what `read_folder` / `read_videos` do not read.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxpriv.anonymize import native_logs
from jaxpriv.data import schema, synthetic

Box = tuple[float, float, float, float]
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
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
    across video frames. world_keypoints: float [17, 3], the same keypoints in 3-D (metres,
    camera axes, origin between the hips) where a person model estimated them, else None.
    """

    box: Box
    mask: np.ndarray | None = field(default=None, repr=False)
    keypoints: np.ndarray | None = field(default=None, repr=False)
    crowd: bool = False
    track_id: int | None = None
    source_id: str = ""
    world_keypoints: np.ndarray | None = field(default=None, repr=False)

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
    class, or None (then its first folder). `declared_shape`: the (H, W) its annotations were
    made for (COCO's image size), or None. `problems`: what is wrong with its annotations (read
    with ``strict=False``); such a sample must not be anonymized (`check_annotations` raises)."""

    key: str
    path: Path
    persons: list[Person] = field(default_factory=list)
    label: str | None = None
    declared_shape: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)
    annotated: bool = False  # its persons come from annotations (none annotated: no one there)

    @property
    def image(self) -> np.ndarray:
        """The uint8 HxWx3 RGB pixels, decoded now (not cached); mask sizes are checked."""
        image = load_image(self.path)
        self.check_annotations(image.shape[:2])
        return image

    def check_annotations(self, shape: tuple[int, int] | None = None) -> None:
        """Raises `AnnotationError` for the sample's `problems` and, given the image's (H, W)
        ``shape``, for masks of another size."""
        problems = list(self.problems)
        if shape is not None:
            problems += [
                f"{self.key}: image is {shape[0]}x{shape[1]} but the mask of person "
                f"{person.source_id!r} is {person.mask_shape[0]}x{person.mask_shape[1]}"
                for person in self.persons
                if person.mask_shape not in (None, tuple(shape))
            ]
        if problems:
            raise AnnotationError(self.path, problems)


# --- images: strict decoding, the original pixels and their 8-bit RGB view -------------------

PILLOW_FORMATS = ("BMP", "JPEG", "PNG", "TIFF", "WEBP")  # a JPEG may open as MPO (camera extras)
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS = {  # EXIF orientation -> the stored pixels turned as displayed (as cv2 does)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: a.swapaxes(0, 1)[::-1],
}
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # the marker after entropy-coded data


class _Undecodable(Exception):
    """Why the bytes of an image cannot be decoded; the caller names the file."""


def load_original(path: str | Path) -> np.ndarray:
    """Decodes an image file strictly, in its own pixel format, turned upright as displayed.

    Returns uint8 or uint16 pixels in RGB channel order (cv2's are BGR): HxW gray, HxWx3 RGB or
    HxWx4 RGBA. Gray with alpha comes as RGBA, a palette as RGB (RGBA with a transparent entry),
    CMYK as RGB (a CMYK TIFF as opaque RGBA). The EXIF orientation is applied, as cv2.imread
    did, so `to_rgb8(load_original(path))` is what `load_image` returned before.

    cv2 decodes the pixels; Pillow reads only the header (format, frame count, orientation).
    Truncated or corrupt data raises `CorruptImageError` naming the file and the reason: a JPEG
    must hold whole segments and scans up to its EOI marker, a PNG must end in its IEND chunk, a
    WebP must hold the bytes its RIFF header declares, and cv2 must decode the rest. So do
    animated or multi-page files and other pixel formats (float), and data that libjpeg or libpng
    decode only with a warning (corrupt data papered over; caught on the process's stderr). A
    missing file raises FileNotFoundError.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: '{path}'")
    try:
        return _decode_image(path.read_bytes())
    except _Undecodable as error:
        raise CorruptImageError(f"cannot decode image '{path}': {error}") from error


def to_rgb8(original: np.ndarray) -> np.ndarray:
    """The uint8 HxWx3 RGB view of `load_original`'s pixels that the anonymizers work on (a new
    array): 16-bit keeps its high byte (as cv2.imread did for PNG), gray is replicated, alpha is
    dropped. Alpha is never composited: what a transparent pixel holds is seen and anonymized."""
    view = _rgb8(original)
    return view.copy() if view is original else view


def restore(original: np.ndarray, anonymized_rgb8: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """A copy of `original` with the anonymized pixels put back in its own format.

    Replaced are the `changed` pixels (bool HxW: the whole region the anonymizer was responsible
    for) and every pixel whose `anonymized_rgb8` value differs from `to_rgb8(original)`, so that
    nothing the anonymizer altered is lost. Pass the whole region, not only the differing pixels:
    a 16-bit original holds detail below its 8-bit view that an unchanged 8-bit value would keep.
    Replaced pixels are converted back: 16-bit as value x 257 (0 -> 0, 255 -> 65535), gray as
    the luminance (cv2 RGB2GRAY), and RGBA becomes fully opaque there: the anonymizers saw the
    opaque view (alpha dropped) and the copy shows what they made of it. Every other pixel,
    alpha included, is bit-identical to `original`.
    """
    view = _rgb8(original)
    anonymized_rgb8 = np.asarray(anonymized_rgb8)
    changed = np.asarray(changed)
    if anonymized_rgb8.shape != view.shape or anonymized_rgb8.dtype != np.uint8:
        raise ValueError(
            f"anonymized pixels are {anonymized_rgb8.dtype} {anonymized_rgb8.shape}: expected "
            f"uint8 {view.shape}, the to_rgb8 view of the original"
        )
    if changed.shape != original.shape[:2] or changed.dtype != bool:
        raise ValueError(
            f"changed is {changed.dtype} {changed.shape}: expected bool {view.shape[:2]}"
        )
    replaced = changed | (anonymized_rgb8 != view).any(axis=-1)
    content = anonymized_rgb8
    if original.ndim == 2:
        content = cv2.cvtColor(content, cv2.COLOR_RGB2GRAY)
    if original.dtype == np.uint16:
        content = content.astype(np.uint16) * np.uint16(257)
    if original.ndim == 3 and original.shape[2] == 4:
        opaque = np.full(content.shape[:2] + (1,), np.iinfo(original.dtype).max, original.dtype)
        content = np.concatenate([content, opaque], axis=-1)
    restored = original.copy()
    restored[replaced] = content[replaced]
    return restored


def load_image(path: str | Path) -> np.ndarray:
    """Decodes an image file strictly to uint8 HxWx3 RGB: `to_rgb8(load_original(path))`."""
    return _rgb8(load_original(path))


def _rgb8(original: np.ndarray) -> np.ndarray:
    """`to_rgb8`, sharing memory with `original` when it already is uint8 RGB."""
    if original.dtype not in (np.uint8, np.uint16) or not (
        original.ndim == 2 or (original.ndim == 3 and original.shape[2] in (3, 4))
    ):
        raise ValueError(
            f"pixels of {original.dtype} {original.shape}: expected uint8 or uint16 HxW, HxWx3 "
            "or HxWx4"
        )
    pixels = (original >> 8).astype(np.uint8) if original.dtype == np.uint16 else original
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    return pixels if pixels.shape[2] == 3 else np.ascontiguousarray(pixels[..., :3])


_DECODER_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG", "libpng warning", "libpng error")


def _is_decoder_warning(line: str) -> bool:
    """A warning of libjpeg or libpng: corrupt data that the decoder papered over."""
    return line.startswith(_DECODER_WARNINGS)


def _decode_image(data: bytes) -> np.ndarray:
    _check_complete(data)
    kind, orientation = _image_header(data)
    with native_logs.captured_stderr(keep=_is_decoder_warning) as warned:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if warned:
        raise _Undecodable(f"{kind} data is corrupt: the decoder warned {warned[0]!r}")
    if pixels is None:
        raise _Undecodable(f"{kind} data is truncated or corrupt: cv2 cannot decode it")
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3):
        raise _Undecodable(f"unsupported {kind} pixel format: {pixels.dtype} {pixels.shape}")
    if pixels.ndim == 3:
        if pixels.shape[2] not in (3, 4):
            raise _Undecodable(f"unsupported {kind} pixel format: {pixels.shape[2]} channels")
        code = cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        pixels = cv2.cvtColor(pixels, code)
    turn = _ORIENTATIONS.get(orientation)
    return np.ascontiguousarray(turn(pixels)) if turn else pixels


def _image_header(data: bytes) -> tuple[str, int]:
    """(format, EXIF orientation) from the header alone (Pillow, nothing decoded); animated and
    multi-page files raise."""
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            kind = image.format or "image"
            frames = getattr(image, "n_frames", 1)
            # a PNG's eXIf chunk counts (for cv2 too) only before the pixel data, which is where
            # Pillow has read it without decoding (getexif would decode to look further)
            has_exif = kind != "PNG" or "exif" in image.info
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if has_exif else 1
    except Image.DecompressionBombError as error:
        raise _Undecodable(f"too large: {error}") from error
    except UnidentifiedImageError as error:
        raise _Undecodable(
            "not a JPEG, PNG, WebP, TIFF or BMP image, or its header is corrupt or truncated"
        ) from error
    except MemoryError:
        raise
    except Exception as error:  # Pillow reports bad headers as OSError, SyntaxError, ValueError
        raise _Undecodable(f"corrupt or truncated header: {error}") from error
    if frames > 1 and kind != "MPO":  # MPO: a JPEG followed by a camera's extra images
        raise _Undecodable(
            f"{kind} with {frames} frames (animated or multi-page): only still images are read"
        )
    return kind, orientation if isinstance(orientation, int) else 1


def _check_complete(data: bytes) -> None:
    """Raises if a JPEG, PNG or WebP ends early (or a JPEG is malformed where cv2 would only
    warn), with a clearer reason than the decoders give."""
    problem, kind = None, "image"
    if data.startswith(b"\xff\xd8\xff"):
        problem, kind = _jpeg_incomplete(data), "JPEG"
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        end = data.rfind(b"IEND")
        if end < 0 or len(data) < end + 8:
            problem, kind = "it does not end with an IEND chunk", "PNG"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = int.from_bytes(data[4:8], "little") + 8
        if len(data) < declared:
            problem = f"{len(data)} bytes of the {declared} its RIFF header declares"
            kind = "WEBP"
    if problem:
        raise _Undecodable(f"{kind} data is truncated or corrupt: {problem}")


def _jpeg_incomplete(data: bytes) -> str | None:
    """Walks a JPEG's markers from SOI to EOI: every header segment whole, every scan's
    entropy-coded data followed by a marker. (libjpeg only warns, and cv2 fills in grey.)"""
    position, size = 2, len(data)
    while position + 2 <= size:
        if data[position] != 0xFF:
            return f"no marker at byte {position} (extraneous or corrupt data)"
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:  # EOI
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no segment follows
            position += 2
            continue
        if position + 4 > size:
            break
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if length < 2:
            return f"a segment of length {length} at byte {position}"
        position += 2 + length
        if position > size:
            break
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            found = _JPEG_SCAN_END.search(data, position)
            if found is None:
                break
            position = found.start()
    return "premature end of JPEG data (no EOI marker)"


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


def _coco_images(data: dict, image_root: Path, problems: list[str], of_image: dict) -> dict:
    """image id -> (file_name, height, width) for the well-formed, unique images; a missing file
    is a problem of its image (``of_image``), the others of the whole file (``problems``)."""
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
            of_image[image_id].append(f"{name}: image file not found at '{image_root / name}'")
        seen.add(name)
        images[image_id] = (name, height, width)
    return images


def read_coco(
    annotation_json: str | Path,
    image_root: str | Path,
    person_categories: tuple[str, ...] = ("person",),
    *,
    strict: bool = True,
) -> list[Sample]:
    """Persons of a COCO instances / person-keypoints JSON, one `Sample` per listed image.

    Only the categories named in `person_categories` are read (BDD100K: pedestrian, rider).
    Images without persons are samples without persons.
    Masks are `CocoSegmentation`s, decoded each time a `Person.mask` is read.
    Raises `AnnotationError` listing every missing image, unknown image id and malformed
    annotation; with ``strict=False`` only the problems of the whole file, while those of one
    image (its file missing, one of its annotations malformed) go to its `Sample.problems`.
    """
    annotation_json, image_root = Path(annotation_json), Path(image_root)
    data = _load_json(annotation_json)
    person_ids = _person_category_ids(data, annotation_json, tuple(person_categories))
    problems: list[str] = []
    of_image: dict = collections.defaultdict(list)
    images = _coco_images(data, image_root, problems, of_image)
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
            message = f"{image[0]}: annotation {annotation.get('id')}: {_describe(error)}"
            of_image[annotation["image_id"]].append(message)
    if strict:
        problems += [problem for image_id in images for problem in of_image[image_id]]
    if problems:
        raise AnnotationError(annotation_json, problems)
    return [
        Sample(
            name,
            (image_root / name).absolute(),
            persons[image_id],
            declared_shape=(h, w),
            problems=of_image[image_id],
            annotated=True,
        )
        for image_id, (name, h, w) in images.items()
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
    ids = load_original(path)
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
            samples.append(Sample(key, path.absolute(), persons, annotated=True))
    if problems:
        raise AnnotationError(root / "gtFine" / split, problems)
    return samples


# --- folders, videos and generated clips ------------------------------------------------------


def _entries(root: str | Path, what: str) -> list[Path]:
    """Every entry under `root` (recursive) that is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: '{root}'")
    return [path for path in root.rglob("*") if not path.is_dir()]


def _reads(path: Path, suffixes: tuple[str, ...]) -> bool:
    return path.suffix.lower() in suffixes and path.is_file()


def _files_under(root: str | Path, suffixes: tuple[str, ...], what: str) -> list[tuple[str, Path]]:
    """(relative key, absolute path) of every file under `root` with one of `suffixes`, sorted."""
    root = Path(root)
    paths = [path for path in _entries(root, what) if _reads(path, suffixes)]
    if not paths:
        raise FileNotFoundError(f"no {what}s ({', '.join(suffixes)}) under '{root}'")
    keys = sorted(p.relative_to(root).as_posix() for p in paths)
    return [(key, (root / key).absolute()) for key in keys]


def ignored_files(root: str | Path, suffixes: tuple[str, ...]) -> list[str]:
    """The relative paths (sorted) of everything under `root` that a reader of `suffixes` does
    not read: files with other suffixes (hidden ones such as .DS_Store included), and entries
    that are not regular files (broken links, sockets). `ignored_files(root, IMAGE_SUFFIXES)`
    goes with `read_folder(root)`, `ignored_files(root, VIDEO_SUFFIXES)` with `read_videos`."""
    root = Path(root)
    return sorted(
        path.relative_to(root).as_posix()
        for path in _entries(root, "input")
        if not _reads(path, suffixes)
    )


def read_folder(root: str | Path) -> list[Sample]:
    """Every image under `root` (recursive, sorted by relative path), without persons.
    `ignored_files(root, IMAGE_SUFFIXES)` lists the files it does not read."""
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
    """Every video file under `root` (recursive, sorted by relative path); decoded later.
    `ignored_files(root, VIDEO_SUFFIXES)` lists the files it does not read."""
    return [Video(key, path) for key, path in _files_under(root, VIDEO_SUFFIXES, "video")]


_ffmpeg_lock = threading.Lock()
_ffmpeg_users = 0
_ffmpeg_saved: tuple = (None, True)
_DURATION_TAG = re.compile(r"(\d+):(\d+):(\d+(?:\.\d+)?)")  # Matroska's "00:00:03.000000000"


def _open_video(path: Path):
    """The opened container; FFmpeg errors while opening (a missing index, a truncated header)
    raise `CorruptImageError`."""
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: '{path}'")
    with _ffmpeg_logs() as logs:
        try:
            container = av.open(str(path))
        except av.FFmpegError as error:
            raise CorruptImageError(f"cannot decode video '{path}': {error}") from error
    problems = _problems(logs, av.logging.ERROR)
    if problems or not container.streams.video:
        container.close()
        reason = "; ".join(problems[:3]) or "it has no video stream"
        raise CorruptImageError(f"cannot decode video '{path}': {reason}")
    return container


def decode_video(path: str | Path) -> Iterator[np.ndarray]:
    """The frames of a video file (PyAV) as uint8 HxWx3 RGB arrays, decoded lazily and strictly.

    A missing file raises here; an undecodable one raises `CorruptImageError` here or on the bad
    frame: any FFmpeg error or warning while reading or decoding, and, after the last frame,
    fewer frames than the container declares (its frame count, exact; else its duration times
    the average frame rate, to within one frame) when fewer packets than that were read too
    (the file ends early, rather than a decoder skipping empty or edited-out frames).
    """
    path = Path(path)
    return _frames(_open_video(path), path)


def _frames(container, path: Path) -> Iterator[np.ndarray]:
    with container:
        stream = container.streams.video[0]
        declared = _declared_frames(container, stream)
        packets = container.demux(stream)
        read = decoded = 0
        while True:
            with _ffmpeg_logs() as logs:  # only around FFmpeg's reading and decoding
                try:
                    packet = next(packets, None)
                    frames = [] if packet is None else stream.decode(packet)
                except av.FFmpegError as error:
                    raise CorruptImageError(
                        f"cannot decode video '{path}' after {decoded} frames: {error}"
                    ) from error
            problems = _problems(logs, av.logging.WARNING)
            if problems:
                raise CorruptImageError(
                    f"cannot decode video '{path}' after {decoded} frames: "
                    + "; ".join(problems[:3])
                )
            if packet is None:
                break
            if packet.size or packet.dts is not None:  # not the empty packet that flushes
                read += 1
            for frame in frames:
                decoded += 1
                yield frame.to_ndarray(format="rgb24")
        if declared is not None:
            expected, exact, how = declared
            least = expected if exact else expected - 1
            if decoded < least and read < least:
                raise CorruptImageError(
                    f"cannot decode video '{path}': decoded {decoded} of {how}: truncated"
                )


def _declared_frames(container, stream) -> tuple[int, bool, str] | None:
    """(frames, exact, description) that the container declares for `stream`, or None: its
    frame count, else (an estimate) its duration times its average frame rate."""
    if stream.frames > 0:
        return stream.frames, True, f"{stream.frames} frames"
    tags = {key.split("-")[0].upper(): value for key, value in stream.metadata.items()}
    count = tags.get("NUMBER_OF_FRAMES", "").strip()  # mkvmerge's statistics
    if count.isdigit() and int(count) > 0:
        return int(count), True, f"{int(count)} frames"
    seconds = None
    if stream.duration and stream.time_base:
        seconds = stream.duration * stream.time_base
    elif match := _DURATION_TAG.fullmatch(tags.get("DURATION", "").strip()):
        hours, minutes, rest = match.groups()
        seconds = (int(hours) * 60 + int(minutes)) * 60 + Fraction(rest)
    elif container.duration and len(container.streams) == 1:  # else it may be another stream's
        seconds = Fraction(container.duration, av.time_base)
    rate = stream.average_rate
    if not seconds or seconds <= 0 or not rate:
        return None
    frames = round(seconds * rate)
    return frames, False, f"about {frames} frames ({float(seconds):g} s at {float(rate):g} fps)"


@contextlib.contextmanager
def _ffmpeg_logs() -> Iterator[list]:
    """The FFmpeg log entries (level, name, message) of this thread while the block runs.

    PyAV drops FFmpeg's logs by default: for the block the level is raised to WARNING and
    repeated lines are kept (else a line repeated from an earlier file would be held back), then
    both are restored once no block runs. Lines logged by FFmpeg's own worker threads (slice
    threading) are not this thread's; the frame count check backs them up.
    """
    global _ffmpeg_users, _ffmpeg_saved
    with _ffmpeg_lock:
        if _ffmpeg_users == 0:
            _ffmpeg_saved = av.logging.get_level(), av.logging.get_skip_repeated()
            if _ffmpeg_saved[0] is None or _ffmpeg_saved[0] < av.logging.WARNING:
                av.logging.set_level(av.logging.WARNING)
            av.logging.set_skip_repeated(False)
        _ffmpeg_users += 1
    try:
        with av.logging.Capture() as logs:
            yield logs
    finally:
        with _ffmpeg_lock:
            _ffmpeg_users -= 1
            if _ffmpeg_users == 0:
                av.logging.set_level(_ffmpeg_saved[0])
                av.logging.set_skip_repeated(_ffmpeg_saved[1])


def _problems(logs: list, worst: int) -> list[str]:
    """The log lines at level `worst` or more severe, as "name: message"."""
    return [
        f"{name}: {message.strip().rstrip('.')}" if name else message.strip().rstrip(".")
        for level, name, message in logs
        if level <= worst
    ]


def read_synthetic(num_clips: int, *, seed: int, frames: int, size: int) -> list[Video]:
    """The embedded synthetic clips (`jaxpriv.data.synthetic`) with each figure as a person.

    Keys are `<class>/<index>.mp4`; the person of each frame is the figure's mask with its COCO
    keypoints (`synthetic.keypoints`: the nose at the head's centre, so the face region is the
    head; the limbs at the figure's arms and legs).
    """
    data = synthetic.generate(num_clips, seed=seed, frames=frames, size=size)
    figures = data[schema.SENSITIVE] == 0  # sensitivity "real": the figure is public
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
