"""The leak check of an anonymized dataset: faces still found in its output, that look like the
original.

The face detector of the anonymization run (turning the image where it finds no one upright,
as the run did with ``search_rotations``) is run on a seeded sample of the written inputs:
images, or the frames of a video's first clip that the preview shows. A detection is listed with the Pearson correlation of
its grey pixels with the same box of the original file; a correlation of at least
`LEAK_CORRELATION` means the face there was left (nearly) as it was: a leak. Blurred or
pixelated faces keep their coarse shape, so a detectable one correlates too; generated or
masked-out faces do not.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np

LEAK_CORRELATION = 0.9
WRITTEN = ("anonymized", "kept")  # statuses of inputs with a drop-in copy


@dataclasses.dataclass(frozen=True)
class Detection:
    """A face the detector found in an output (``frame``: a video's frame index, else None)."""

    key: str
    frame: int | None
    box: tuple[int, int, int, int]
    score: float
    correlation: float

    @property
    def leak(self) -> bool:
        return self.correlation >= LEAK_CORRELATION


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-shape grey patches (0 when either is constant)."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else 0.0


def _grey(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _frame_pairs(original: Path, output: Path, is_video: bool, options):
    """(frame index or None, original RGB, output RGB) pairs of one input."""
    from jaxpriv.anonymize import preview, readers

    if not is_video:
        yield None, readers.load_image(original), readers.load_image(output)
        return
    wanted = [k * options.frame_stride for k in preview.shown_frames(options)]
    frames = zip(readers.decode_video(original), readers.decode_video(output))
    for index, (real, written) in enumerate(frames):
        if index in wanted:
            yield index, real, written
        if index >= wanted[-1]:
            return


def check(out_dir: Path, summary: dict, reports: list[dict], sample: int, seed: int = 0) -> dict:
    """The leak check of the anonymization run in ``out_dir`` (its ``summary.json`` and
    ``inputs.jsonl`` reports): {"checked": keys, "detections": [Detection], "detector",
    "unmatched": keys whose original file is gone or has another size than the output}."""
    from jaxpriv.anonymize import detect, pipeline
    from jaxpriv.anonymize.settings import Options

    options = Options(**summary["options"])
    written = sorted(r["key"] for r in reports if r["status"] in WRITTEN)
    chosen = sorted(random.Random(seed).sample(written, min(sample, len(written))))
    detector = detect.make_detector(options.detector)
    root = Path(summary["input_root"])
    detections, unmatched = [], []
    for key in chosen:
        original = root / key
        if not original.is_file():
            unmatched.append(key)
            continue
        is_video = bool(next(r for r in reports if r["key"] == key).get("frames"))
        pairs = _frame_pairs(original, out_dir / "images" / key, is_video, options)
        for frame, real, written_pixels in pairs:
            if real.shape[:2] != written_pixels.shape[:2]:
                unmatched.append(key)
                break
            for face in pipeline.find_faces(written_pixels, options, detector)[0]:
                x0, y0, x1, y1 = (int(round(v)) for v in face.box)
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                patch = (slice(y0, y1), slice(x0, x1))
                r = correlation(_grey(real)[patch], _grey(written_pixels)[patch])
                detections.append(Detection(key, frame, (x0, y0, x1, y1), face.score, r))
    return {
        "checked": [key for key in chosen if key not in unmatched],
        "detections": detections,
        "detector": options.detector,
        "unmatched": unmatched,
    }
