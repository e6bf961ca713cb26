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


def track(
    frames_persons: list[list[Person]], *, iou_threshold: float = 0.3, max_gap: int = 0
) -> None:
    """Sets `track_id` in place so that one person keeps one id across frames.

    Each person takes the id of the track whose last box it overlaps most (greedy, IoU >=
    iou_threshold) among the tracks seen in the previous ``max_gap + 1`` frames (so a person
    missed for up to ``max_gap`` frames keeps its id); unmatched persons get new ids, counted
    from 0 and never reused. Crowd regions are not individuals: their track_id is set to None.
    Deterministic.
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    next_id, recent = 0, {}  # track id -> (frame index, last person)
    for index, persons in enumerate(frames_persons):
        recent = {k: v for k, v in recent.items() if index - v[0] <= max_gap + 1}
        previous = [person for _, person in sorted(recent.values(), key=lambda v: v[1].track_id)]
        current = [p for p in persons if not p.crowd]
        matches = _greedy_matches(previous, current, iou_threshold)
        for j, person in enumerate(current):
            if j in matches:
                person.track_id = previous[matches[j]].track_id
            else:
                person.track_id, next_id = next_id, next_id + 1
            recent[person.track_id] = (index, person)
        for person in persons:
            if person.crowd:
                person.track_id = None


def fill_gaps(frames_persons: list[list[Person]], max_gap: int) -> None:
    """Covers short misses of a tracked person: adds, in place, a person with the linearly
    interpolated box to each of up to ``max_gap`` frames between two sightings of one track.

    A detector that misses a face for a frame would otherwise leave it visible in that frame.
    Needs ``track_id`` set (see `track`, with the same ``max_gap``); added persons have no mask
    and no keypoints.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap}")
    last_seen: dict[int, tuple[int, np.ndarray]] = {}
    for index, persons in enumerate(frames_persons):
        for person in [p for p in persons if p.track_id is not None]:
            box = np.asarray(person.box, np.float64)
            if person.track_id in last_seen:
                start, start_box = last_seen[person.track_id]
                if 1 < index - start <= max_gap + 1:
                    for frame in range(start + 1, index):
                        t = (frame - start) / (index - start)
                        between = tuple((start_box + t * (box - start_box)).tolist())
                        frames_persons[frame].append(Person(between, track_id=person.track_id))
            last_seen[person.track_id] = (index, box)
