"""Identities across video frames: greedy IoU matching of person boxes between consecutive frames."""

from __future__ import annotations

import numpy as np

from jaxpriv.anonymize.readers import Person


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [N, M] between boxes a [N, 4] and b [M, 4] given as (x0, y0, x1, y1)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def _greedy_matches(previous: list[Person], current: list[Person], threshold: float) -> dict:
    """current index -> previous index, highest IoU first (ties by index), IoU >= threshold."""
    if not previous or not current:
        return {}
    iou = box_iou(
        np.array([p.box for p in previous], np.float64),
        np.array([p.box for p in current], np.float64),
    )
    matches: dict[int, int] = {}
    taken: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(current))
        if iou[i, j] < threshold:
            break
        if j not in matches and i not in taken:
            matches[j] = i
            taken.add(i)
    return matches


def track(frames_persons: list[list[Person]], *, iou_threshold: float = 0.3) -> None:
    """Sets `track_id` in place so that one person keeps one id across frames.

    Each person takes the id of the previous frame's person its box overlaps most (greedy, IoU >=
    iou_threshold); unmatched persons get new ids, counted from 0 and never reused. Crowd regions
    are not individuals: their track_id is set to None. Deterministic.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    next_id, previous = 0, []
    for persons in frames_persons:
        current = [p for p in persons if not p.crowd]
        matches = _greedy_matches(previous, current, iou_threshold)
        for j, person in enumerate(current):
            if j in matches:
                person.track_id = previous[matches[j]].track_id
            else:
                person.track_id, next_id = next_id, next_id + 1
        for person in persons:
            if person.crowd:
                person.track_id = None
        previous = current
