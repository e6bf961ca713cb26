"""Files that appear only when whole: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (``.<name>.<pid>.partial<suffix>``: hidden, one per
    process, since tasks may write the same file at once, and with the suffix by which encoders
    choose the format) that becomes ``path`` when the block ends without an error and is
    removed when it raises. A killed process leaves it behind, never a half-written ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
