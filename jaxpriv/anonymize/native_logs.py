"""What native libraries print on the process's stderr (file descriptor 2), caught by line.

OpenCV's image decoders and MediaPipe's runtime write to file descriptor 2 directly, past
Python's ``sys.stderr``: `captured_stderr` collects those lines inside a context so that the
caller can act on some (a decoder's warning means corrupt data) and drop others (a runtime's
start-up chatter); the rest is passed on to stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def captured_stderr(
    keep: Callable[[str], bool], drop: Callable[[str], bool] | None = None
) -> Iterator[list]:
    """Yields a list that receives, after the context, the lines printed to file descriptor 2
    inside it for which ``keep`` is true; lines for which ``drop`` is true are discarded, and
    all others are printed to stderr again. Not for code that prints from other threads."""
    kept: list[str] = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield kept
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept += [line for line in lines if keep(line)]
            other = [line for line in lines if not keep(line) and not (drop and drop(line))]
            if other:
                print("\n".join(other), file=sys.stderr)
