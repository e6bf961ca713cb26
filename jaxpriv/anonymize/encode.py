"""Files that appear only when whole: the drop-in copy's images and videos, and the rest.

Every file is written under a temporary name (`jaxpriv.files.atomic_path`) and renamed, so an
interrupted run never leaves a half-written image or video under its real name.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from jaxpriv.files import atomic_path


def write_image_atomically(path: Path, image: np.ndarray) -> None:
    """Writes an RGB(A) or grey image of any depth OpenCV encodes (uint8, uint16)."""
    if image.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        image = cv2.cvtColor(image, code)
    with atomic_path(path) as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise OSError(f"cannot write {path}")


class VideoWriter:
    """Encodes frames into ``path`` (MPEG-4 Part 2 at ``rate``) under a temporary name; the file
    appears at ``path`` only when the context exits without an error."""

    def __init__(self, path: Path, rate):
        self.path, self.rate = path, rate
        self.atomic = atomic_path(path)
        self.container = self.stream = None

    def __enter__(self):
        self.container = av.open(str(self.atomic.__enter__()), "w")
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
        self.atomic.__exit__(error_type, error, traceback)
