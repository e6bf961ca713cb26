"""The preview of a finished anonymization run: ``OUT/preview.png`` (matplotlib, Agg).

One row per input shown (`plan_rows`): the inputs where nothing was found first, then the
skipped ones, then a seeded sample of the anonymized ones; where there are anonymized inputs to
show, failures take at most half of the rows and the title says how many are not shown. Each
row has three panels: the original (the source file), the anonymized drop-in copy, and the
record the model trains on with its masks tinted (`overlay`, explained by `legend_handles`):
public pixels, anonymized pixels that stay private, real private pixels. A video's panels are
strips of frames of its first clip, with the tracked faces or persons boxed and numbered on the
original. `write_preview` plans, draws (`draw`) and writes the figure.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from jaxpriv import files
from jaxpriv.anonymize import readers
from jaxpriv.anonymize.settings import Options
from jaxpriv.data import schema, sensitivity

# Okabe–Ito colours (told apart with colour-blind vision): name -> (RGB, legend label)
CLASSES = {
    "public": ((0, 158, 115), "public: removed or synthetic (sensitive 0), needs no DP"),
    "anonymized": (
        (230, 159, 0),
        "anonymized, still private (region 1, sensitive 1: blurred, pixelated, inpainted…), "
        "protected by MaskDP",
    ),
    "real": ((0, 114, 178), "real and private (region 0, sensitive 1), protected by MaskDP"),
}
ALPHA = 0.45  # weight of a class's colour over the record's pixels
KINDS = ("nothing found", "skipped", "anonymized")  # the rows' kinds, in the order shown
COLUMNS = ("original", "anonymized", "record: what the model sees")
FRAMES_SHOWN = 4  # frames of a video's first clip in its strips
PANEL_PIXELS = 384  # longer side of an image panel (larger images are shrunk to it)
GAP = 4  # white pixels between the frames of a strip
FAILURE_COLOUR = "#c00000"
EMPTY_GREY = 200
NOTE_CHARACTERS = 300  # of an error shown on a grey panel
# layout, in inches: an image panel's side, a video frame's, the label column, a line of the
# heading or legend, the space between axes, the margin; and the resolution
IMAGE_INCHES, VIDEO_INCHES, LABEL_INCHES = 2.6, 1.4, 2.4
LINE_INCHES, SPACE_INCHES, MARGIN_INCHES, DPI = 0.18, 0.15, 0.15, 100


@dataclasses.dataclass(frozen=True)
class Row:
    """One input shown: its ``key``, ``kind`` (one of `KINDS`) and ``report`` (inputs.jsonl)."""

    key: str
    kind: str
    report: dict


class Source(NamedTuple):
    """Where an input's panels come from: the input (`readers.Sample` or `readers.Video`) and
    the shard file that holds its records."""

    unit: readers.Sample | readers.Video
    shard: Path


@dataclasses.dataclass
class Panel:
    """What one axis shows: uint8 RGB pixels, a note written over them, and boxes (x0, y0, x1,
    y1, label) in their coordinates."""

    pixels: np.ndarray
    note: str = ""
    boxes: list = dataclasses.field(default_factory=list)


def kind_of(report: dict) -> str:
    """The row kind of an input's report."""
    if report["status"] == "anonymized":
        return "anonymized"
    return "nothing found" if report.get("nothing_found") else "skipped"


def _shares(sizes: Sequence[int], slots: int) -> list[int]:
    """Splits ``slots`` over groups of ``sizes``: one each in turn, earlier groups first, while
    a group has more; so each gets half (of two) unless the other needs less."""
    counts = [0] * len(sizes)
    while slots and any(count < size for count, size in zip(counts, sizes)):
        for index, size in enumerate(sizes):
            if slots and counts[index] < size:
                counts[index] += 1
                slots -= 1
    return counts


def plan_rows(reports: Sequence[dict], count: int, seed: int) -> list[Row]:
    """The rows of the preview, at most ``count``: inputs where nothing was found, then skipped
    inputs (each in report order), then anonymized ones sampled with ``seed`` (sorted by key).
    Failures take at most half of the rows (rounded down) unless the anonymized inputs leave
    more free."""
    groups = {kind: [r for r in reports if kind_of(r) == kind] for kind in KINDS}
    failures = len(groups["nothing found"]) + len(groups["skipped"])
    sampled, failing = _shares([len(groups["anonymized"]), failures], count)
    shown = _shares([len(groups["nothing found"]), len(groups["skipped"])], failing)
    chosen = groups["nothing found"][: shown[0]] + groups["skipped"][: shown[1]]
    chosen += sorted(
        random.Random(seed).sample(groups["anonymized"], sampled), key=lambda r: r["key"]
    )
    return [Row(report["key"], kind_of(report), report) for report in chosen]


def overlay(image: np.ndarray, sensitive: np.ndarray, region: np.ndarray) -> np.ndarray:
    """uint8 RGB ``image`` (any leading shape) tinted by class with `ALPHA`: public where
    ``sensitive`` is 0, anonymized where ``region`` and ``sensitive`` are 1, else real."""
    classes = np.where(sensitive == 0, 0, np.where(region == 1, 1, 2))
    colours = np.array([rgb for rgb, _ in CLASSES.values()], np.float64)[classes]
    return np.rint((1 - ALPHA) * image + ALPHA * colours).astype(np.uint8)


def legend_handles() -> list[Patch]:
    """Legend patches for the colours of `overlay`."""
    return [
        Patch(facecolor=np.array(rgb) / 255, alpha=ALPHA, edgecolor="none", label=label)
        for rgb, label in CLASSES.values()
    ]


def describe(row: Row, options: Options) -> str:
    """The row's label: key, then what happened (counts, source, scores, or the error)."""
    report = row.report
    if row.kind == "skipped":
        return f"{row.key}\nSKIPPED: {report['error']}"
    if row.kind == "nothing found":
        if report["status"] == "kept":
            return f"{row.key}\nNOTHING FOUND ({report['source']}) — kept unchanged"
        return f"{row.key}\nNOTHING FOUND — skipped: {report['error']}"
    noun = "faces" if options.region == "face" else "persons"
    what = f"{report['regions']} {noun[:-1] if report['regions'] == 1 else noun}"
    if "frames" in report:
        what += f" tracked, in {report['frames_with_regions']} of {report['frames']} frames"
    details = [report["source"]]
    scores = report.get("confidence") or []
    if "frames" in report:  # a video's lowest and highest
        scores = sorted(set(scores))
    if scores:
        joint = "–" if "frames" in report else ", "
        more = ", …" if len(scores) > 4 else ""
        details.append("scores " + joint.join(f"{s:.3g}" for s in scores[:4]) + more)
    if report.get("turns") and isinstance(report["turns"], int):
        details.append(f"turned {90 * report['turns']}°")
    return f"{row.key}\nanonymized: {what} ({'; '.join(details)})"


def load_record(shard: Path, key: str) -> dict | None:
    """The pixels and masks of record ``key`` in a shard file, or None (it has none)."""
    with np.load(shard) as data:
        if "key" not in data.files:
            return None
        hits = np.flatnonzero(data["key"] == key)
        if not hits.size:
            return None
        pixels = schema.VIDEO if schema.VIDEO in data.files else schema.IMAGE
        return {name: data[name][hits[0]] for name in (pixels, "sensitive", "region")}


def _attempt(make: Callable[[], Panel], shape: tuple[int, int]) -> Panel:
    """``make()``, or a grey panel of ``shape`` with the error of an unreadable file."""
    try:
        return make()
    except (ValueError, OSError) as error:
        return _grey(shape, f"cannot read: {type(error).__name__}: {error}")


def _grey(shape: tuple[int, int], note: str) -> Panel:
    return Panel(np.full((*shape, 3), EMPTY_GREY, np.uint8), note)


def _shrunk(image: np.ndarray) -> np.ndarray:
    """``image`` shrunk to at most `PANEL_PIXELS` on its longer side."""
    scale = PANEL_PIXELS / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def shown_frames(options: Options) -> list[int]:
    """The frames of a video's first clip that its strips show (up to `FRAMES_SHOWN`, evenly
    spread); clip frame k is source frame ``k * frame_stride``."""
    count = min(FRAMES_SHOWN, options.clip_frames)
    return sorted({round(k) for k in np.linspace(0, options.clip_frames - 1, count)})


def strip(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Frames side by side, `GAP` white pixels apart."""
    gap = np.full((frames[0].shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([part for frame in frames for part in (gap, frame)][1:], axis=1)


def _clip_frames(frames: Iterator[np.ndarray], options: Options) -> list[np.ndarray]:
    """The source frames of `shown_frames` among ``frames`` (fewer where the video ends)."""
    wanted = [k * options.frame_stride for k in shown_frames(options)]
    found = []
    for index, frame in enumerate(frames):
        if index in wanted:
            found.append(frame)
        if index == wanted[-1]:
            break
    if not found:
        raise ValueError("the video has no frames")
    return found


def _square_strip(frames: Sequence[np.ndarray], size: int) -> np.ndarray:
    return strip([sensitivity.resize_square(f, size, cv2.INTER_AREA) for f in frames])


def record_box(box: Sequence[float], shape: tuple[int, int], size: int) -> tuple:
    """A source-pixel box (x0, y0, x1, y1) of an image of ``shape`` (H, W) in record geometry
    (`sensitivity.square_geometry`)."""
    height, width = shape
    new_width, new_height, left, top = sensitivity.square_geometry(height, width, size)
    x0, y0, x1, y1 = box
    sx, sy = new_width / width, new_height / height
    return x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top


def _original_strip(video: readers.Video, tracks: list, options: Options) -> Panel:
    """The first clip's shown source frames, each tracked box labelled with its id."""
    frames = _clip_frames(video.decode(), options)
    boxes = []
    for place, k in enumerate(shown_frames(options)[: len(frames)]):
        offset = place * (options.size + GAP)
        for track_id, *box in tracks[k] if k < len(tracks) else []:
            x0, y0, x1, y1 = np.clip(
                record_box(box, frames[0].shape[:2], options.size), 0, options.size
            )
            if x0 < x1 and y0 < y1:  # not cropped away
                boxes.append((x0 + offset, y0, x1 + offset, y1, f"id {track_id}"))
    return Panel(_square_strip(frames, options.size), boxes=boxes)


def panels(row: Row, source: Source, out_dir: Path, options: Options) -> list[Panel]:
    """The row's original, drop-in copy and record (a video's: strips of its first clip)."""
    video = isinstance(source.unit, readers.Video)
    shape = (options.size, options.size)
    if video:
        shape = (options.size, len(shown_frames(options)) * (options.size + GAP) - GAP)
        original = _attempt(
            lambda: _original_strip(source.unit, row.report.get("tracks", []), options), shape
        )
    else:
        path = source.unit.path
        original = _attempt(
            lambda: Panel(_shrunk(readers.to_rgb8(readers.load_original(path)))), shape
        )
    record = load_record(source.shard, f"{row.key}#0000" if video else row.key)
    if record is None:
        reason = row.report.get("error", row.report["status"])
        return [original, _grey(shape, f"not written: {reason}"), _grey(shape, "no record")]
    copy = out_dir / "images" / row.key
    if video:
        copy_panel = _attempt(
            lambda: Panel(
                _square_strip(_clip_frames(readers.decode_video(copy), options), options.size)
            ),
            shape,
        )
    else:
        copy_panel = _attempt(lambda: Panel(_shrunk(readers.load_image(copy))), shape)
    pixels = record[schema.VIDEO if video else schema.IMAGE]
    tinted = overlay(pixels, record["sensitive"], record["region"])
    return [original, copy_panel, Panel(strip(tinted[shown_frames(options)]) if video else tinted)]


def title(reports: Sequence[dict], rows: Sequence[Row], options: Options) -> str:
    """The figure's title: the run, the rows shown, the inputs' counts, failures not shown."""
    statuses = collections.Counter(report["status"] for report in reports)
    nothing = sum(bool(report.get("nothing_found")) for report in reports)
    text = (
        f"jaxpriv anonymize: {options.method} {options.region}, {len(rows)} of {len(reports)} "
        f"inputs shown — anonymized {statuses['anonymized']}, kept {statuses['kept']}, "
        f"nothing found {nothing}, skipped {statuses['skipped']}"
    )
    failures = sum(kind_of(report) != "anonymized" for report in reports)
    hidden = failures - sum(row.kind != "anonymized" for row in rows)
    if hidden:
        text += f"\n{hidden} failures (nothing found or skipped) not shown: inputs.jsonl lists all"
    return text


def _show(axis, panel: Panel, width: float) -> None:
    """Draws a panel on an axis ``width`` inches wide: pixels, boxes, the note."""
    axis.imshow(panel.pixels, interpolation="antialiased")
    axis.set_axis_off()
    for x0, y0, x1, y1, label in panel.boxes:
        axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1))
        axis.text(x0, y0, label, color="black", backgroundcolor="yellow", fontsize=6, va="bottom")
    if panel.note:
        note = textwrap.fill(panel.note[:NOTE_CHARACTERS], int(width * 15))
        axis.text(0.5, 0.5, note, transform=axis.transAxes, ha="center", va="center", fontsize=7)


def draw(
    rows: Sequence[Row],
    sources: Mapping[str, Source],
    out_dir: Path,
    options: Options,
    heading: str,
) -> Figure:
    """The preview figure: ``heading``, the legend, and per row a label and three panels."""
    rows_panels = [panels(row, sources[row.key], out_dir, options) for row in rows]
    video = isinstance(sources[rows[0].key].unit, readers.Video)
    height = VIDEO_INCHES if video else IMAGE_INCHES
    width = height * (len(shown_frames(options)) if video else 1)
    across = LABEL_INCHES + 3 * (width + SPACE_INCHES) + 2 * MARGIN_INCHES
    heading = "\n".join(textwrap.fill(line, int(across * 11)) for line in heading.splitlines())
    legend_top = 0.2 + LINE_INCHES * (heading.count("\n") + 1)  # below the heading
    header = legend_top + LINE_INCHES * len(CLASSES) + 0.35  # and the column names below it
    size = (across, header + len(rows) * (height + SPACE_INCHES) + MARGIN_INCHES)
    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    figure.suptitle(heading, y=1 - 0.1 / size[1], va="top", fontsize=10)
    figure.legend(
        handles=legend_handles(),
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - legend_top / size[1]),
        fontsize=8,
        frameon=False,
    )
    grid = figure.add_gridspec(
        len(rows),
        4,
        width_ratios=[LABEL_INCHES, width, width, width],
        left=MARGIN_INCHES / size[0],
        right=1 - MARGIN_INCHES / size[0],
        top=1 - header / size[1],
        bottom=MARGIN_INCHES / size[1],
        wspace=SPACE_INCHES / ((LABEL_INCHES + 3 * width) / 4),
        hspace=SPACE_INCHES / height,
    )
    for column, name in enumerate(COLUMNS):  # above the cells, whatever the panels' shapes
        cell = grid[0, column + 1].get_position(figure)
        figure.text((cell.x0 + cell.x1) / 2, cell.y1 + 0.05 / size[1], name, ha="center")
    for index, (row, row_panels) in enumerate(zip(rows, rows_panels)):
        label = figure.add_subplot(grid[index, 0])
        label.set_axis_off()
        lines = describe(row, options).splitlines()
        text = "\n".join(textwrap.fill(line, int(LABEL_INCHES * 14)) for line in lines)
        colour = "black" if row.kind == "anonymized" else FAILURE_COLOUR
        label.text(0, 0.5, text, va="center", ha="left", fontsize=8, color=colour)
        for column, panel in enumerate(row_panels):
            _show(figure.add_subplot(grid[index, column + 1]), panel, width)
    return figure


def write_preview(
    path: Path,
    reports: Sequence[dict],
    sources: Mapping[str, Source],
    out_dir: Path,
    options: Options,
    count: int,
) -> Path | None:
    """Writes the preview of up to ``count`` inputs (`plan_rows` with ``options.seed``) to
    ``path`` atomically; returns it, or None where no row is shown (``count`` 0: an earlier
    run's figure there is removed, as it would not show this run)."""
    rows = plan_rows(reports, count, options.seed)
    if not rows:
        path.unlink(missing_ok=True)
        return None
    figure = draw(rows, sources, out_dir, options, title(reports, rows, options))
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    return path
