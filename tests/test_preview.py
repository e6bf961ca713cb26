"""The anonymization preview (OUT/preview.png): which inputs it shows, its panels and colours."""

import json

import cv2
import numpy as np
import pytest
import skimage.data
from photo_fixtures import photo_person
from PIL import Image
from test_anonymize_pipeline import write_video

from jaxpriv.anonymize import detect, pipeline, preview, readers, runner

PUBLIC, ANONYMIZED, REAL = (np.array(rgb) for rgb, _ in preview.CLASSES.values())


def reports_of(out_dir):
    return [json.loads(line) for line in (out_dir / "inputs.jsonl").read_text().splitlines()]


def sources_of(units, out_dir):
    """Every input in its own shard (``shard_size=1``)."""
    return {
        unit.key: preview.Source(unit, runner.shard_path(out_dir, index))
        for index, unit in enumerate(sorted(units, key=lambda unit: unit.key))
    }


def image_axes(figure):
    return [axis for axis in figure.axes if axis.images]


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    """Two photographs whose faces the Haar detector finds, a coffee cup (no face: kept) and a
    corrupt JPEG (skipped), anonymized with mask-out and a preview of 4 rows."""
    root = tmp_path_factory.mktemp("photos")
    images = {
        "astronaut.jpg": skimage.data.astronaut(),
        "hopper.jpg": photo_person("grace_hopper")[0],
    }
    images["cup.png"] = skimage.data.coffee()[::2, ::2]
    (root / "in").mkdir()
    for name, image in images.items():
        cv2.imwrite(str(root / "in" / name), image[..., ::-1])
    (root / "in" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    options = pipeline.Options(
        method="maskout", detector="haar", size=48, test_fraction=0.0, if_none="keep"
    )
    samples = readers.read_folder(root / "in")
    summary = runner.run(
        samples,
        root / "out",
        options,
        workers=1,
        shard_size=1,
        progress=False,
        input_root=root / "in",
        preview=4,
    )
    return root, samples, options, summary


def test_a_photo_run_previews_failures_first_then_anonymized_inputs(photo_run):
    root, samples, options, summary = photo_run
    out = root / "out"
    assert summary["preview"] == str(out / "preview.png")
    assert summary["input_root"] == str((root / "in").resolve())
    with Image.open(out / "preview.png") as png:
        assert png.format == "PNG" and png.width > 800 and png.height > 4 * 200
    reports = reports_of(out)
    rows = preview.plan_rows(reports, 4, options.seed)
    assert [(row.key, row.kind) for row in rows] == [
        ("cup.png", "nothing found"),
        ("broken.jpg", "skipped"),
        ("astronaut.jpg", "anonymized"),
        ("hopper.jpg", "anonymized"),
    ]
    heading = preview.title(reports, rows, options)
    assert "4 of 4 inputs shown — anonymized 2, kept 1, nothing found 1, skipped 1" in heading
    assert "not shown" not in heading
    sources = sources_of(samples, out)
    figure = preview.draw(rows, sources, out, options, heading)
    assert len(image_axes(figure)) == 4 * 3
    labels = [axis.texts[0] for axis in figure.axes if not axis.images]  # the rows' labels
    assert "NOTHING FOUND (detector) — kept unchanged" in labels[0].get_text().replace("\n", " ")
    assert labels[1].get_text().startswith("broken.jpg\nSKIPPED: CorruptImageError")
    assert labels[0].get_color() == labels[1].get_color() == preview.FAILURE_COLOUR
    assert "anonymized: 1 face (detector; scores" in labels[2].get_text().replace("\n", " ")
    assert labels[2].get_color() == "black"


def test_the_panels_show_the_original_the_copy_and_the_tinted_record(photo_run):
    root, samples, options, _ = photo_run
    out = root / "out"
    sources = sources_of(samples, out)
    reports = {report["key"]: report for report in reports_of(out)}
    row = preview.Row("astronaut.jpg", "anonymized", reports["astronaut.jpg"])
    original, copy, record = preview.panels(row, sources[row.key], out, options)
    side = preview.PANEL_PIXELS  # the 512×512 photograph, shrunk for the figure
    shrunk = cv2.resize(sources[row.key].unit.image, (side, side), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(original.pixels, shrunk)
    assert (copy.pixels != original.pixels).any(axis=-1).sum() > 1000  # the face, masked out
    stored = preview.load_record(sources[row.key].shard, row.key)
    public = stored["sensitive"] == 0
    assert 0 < public.sum() < public.size
    painted = np.all(record.pixels == np.rint(preview.ALPHA * PUBLIC), axis=-1)  # black, tinted
    np.testing.assert_array_equal(painted, public)  # public colour exactly where sensitive == 0
    row = preview.Row("broken.jpg", "skipped", reports["broken.jpg"])
    panels = preview.panels(row, sources[row.key], out, options)
    assert panels[0].note.startswith("cannot read: CorruptImageError: cannot decode image")
    assert panels[1].note.startswith("not written: CorruptImageError")
    assert panels[2].note == "no record"
    assert all(panel.pixels.shape == (48, 48, 3) for panel in panels)


def test_overlay_tints_each_class_in_its_colour():
    image = np.array([[[0, 0, 0], [100, 200, 50], [255, 255, 255]]], np.uint8)
    sensitive = np.array([[0, 1, 1]], np.uint8)
    region = np.array([[1, 1, 0]], np.uint8)
    tinted = preview.overlay(image, sensitive, region)
    expected = [
        np.rint(preview.ALPHA * colour + (1 - preview.ALPHA) * pixel)
        for colour, pixel in zip((PUBLIC, ANONYMIZED, REAL), image[0])
    ]
    assert tinted.dtype == np.uint8
    np.testing.assert_array_equal(tinted[0], np.array(expected, np.uint8))
    public = preview.overlay(image, np.zeros_like(sensitive), region)  # whatever the region
    expected = np.rint(preview.ALPHA * PUBLIC + (1 - preview.ALPHA) * image[0])
    np.testing.assert_array_equal(public[0], expected.astype(np.uint8))
    handles = preview.legend_handles()
    for handle, colour, name in zip(
        handles, (PUBLIC, ANONYMIZED, REAL), ("public", "anon", "real")
    ):
        assert np.allclose(handle.get_facecolor()[:3], colour / 255)
        assert handle.get_label().startswith(name)


def fake_reports(nothing, skipped, anonymized):
    return (
        [{"key": f"n{i:02d}", "status": "kept", "nothing_found": True} for i in range(nothing)]
        + [{"key": f"s{i:02d}", "status": "skipped", "error": "OSError: x"} for i in range(skipped)]
        + [{"key": f"a{i:02d}", "status": "anonymized"} for i in range(anonymized)]
    )


def test_failures_take_at_most_half_the_rows_and_the_sample_follows_the_seed():
    reports = fake_reports(10, 3, 20)
    rows = preview.plan_rows(reports, 8, seed=0)
    kinds = [row.kind for row in rows]
    assert kinds == ["nothing found"] * 2 + ["skipped"] * 2 + ["anonymized"] * 4
    assert [row.key for row in rows[:4]] == ["n00", "n01", "s00", "s01"]
    assert rows == preview.plan_rows(reports, 8, seed=0)
    assert rows[4:] != preview.plan_rows(reports, 8, seed=1)[4:]
    options = pipeline.Options(method="blur")
    heading = preview.title(reports, rows, options)
    assert "8 of 33 inputs shown" in heading
    assert "9 failures (nothing found or skipped) not shown: inputs.jsonl lists all" in heading
    few = preview.plan_rows(fake_reports(10, 3, 2), 8, seed=0)  # the rest go to failures
    assert [row.kind for row in few].count("anonymized") == 2 and len(few) == 8
    assert len(preview.plan_rows(fake_reports(1, 1, 1), 8, seed=0)) == 3
    assert preview.plan_rows(reports, 0, seed=0) == []


def square_faces(image):
    """A test detector: every bright square is a face."""
    count, _, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 150).astype(np.uint8))
    return [
        detect.Detection((float(x), float(y), float(x + w), float(y + h)), 0.9)
        for x, y, w, h, _ in stats[1:count]
    ]


def square_options(monkeypatch, **changes) -> pipeline.Options:
    """Options of a small video run whose faces are the bright squares (`square_faces`)."""
    monkeypatch.setitem(detect.DETECTORS, "squares_for_test", lambda: square_faces)
    fixed = dict(size=32, test_fraction=0.0, clip_frames=4, search_rotations=False)
    return pipeline.Options(detector="squares_for_test", **fixed, **changes)


def test_a_video_row_shows_strips_with_the_tracked_ids(tmp_path, monkeypatch):
    frames = np.full((9, 48, 80, 3), 60, np.uint8)  # landscape: the record crops its sides
    for t in range(9):
        frames[t, 8:24, 20 + 2 * t : 36 + 2 * t] = 220  # moves right
        frames[t, 26:42, 50:66] = 220  # stays
    write_video(tmp_path / "in" / "walk" / "two.mp4", list(frames))
    options = square_options(monkeypatch, method="pixelate", frame_stride=2)
    videos = readers.read_videos(tmp_path / "in")
    summary = runner.run(videos, tmp_path / "out", options, workers=1, progress=False, preview=2)
    assert summary["preview"] == str(tmp_path / "out" / "preview.png")
    (report,) = reports_of(tmp_path / "out")
    tracks = report["tracks"]
    assert len(tracks) == 4  # the first clip's frames: source frames 0, 2, 4, 6
    assert [[track[0] for track in frame] for frame in tracks] == [[0, 1]] * 4
    assert tracks[3][0][1:] == [32.0, 8.0, 48.0, 24.0]  # the moving square at source frame 6
    rows = preview.plan_rows([report], 2, options.seed)
    panels = preview.panels(
        rows[0], sources_of(videos, tmp_path / "out")[rows[0].key], tmp_path / "out", options
    )
    strip_shape = (32, 4 * 32 + 3 * preview.GAP, 3)
    assert [panel.pixels.shape for panel in panels] == [strip_shape] * 3
    boxes = panels[0].boxes
    assert [label for *_, label in boxes] == ["id 0", "id 1"] * 4
    record = preview.load_record(runner.shard_path(tmp_path / "out", 0), "walk/two.mp4#0000")
    for x0, y0, x1, y1, _ in boxes:  # each box drawn where its face is
        k, x = divmod(int((x0 + x1) / 2), 32 + preview.GAP)
        assert record["region"][k, int((y0 + y1) / 2), x] == 1
    figure = preview.draw(rows, sources_of(videos, tmp_path / "out"), tmp_path / "out", options, "")
    assert len(image_axes(figure)) == 3


def test_a_preview_that_fails_leaves_the_run_finished_without_one(tmp_path, monkeypatch, capsys):
    frames = np.full((4, 32, 32, 3), 60, np.uint8)
    frames[:, 8:24, 8:24] = 220
    write_video(tmp_path / "in" / "walk" / "one.mp4", list(frames))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "preview.png").write_bytes(b"an earlier run's")

    def broken(*args):
        raise RuntimeError("no canvas")

    monkeypatch.setattr(preview, "draw", broken)
    options = square_options(monkeypatch, method="maskout", frame_stride=1)
    videos = readers.read_videos(tmp_path / "in")
    summary = runner.run(videos, tmp_path / "out", options, workers=1, progress=False)
    assert summary["preview"] is None and summary["records"]["train"] == 1
    assert (tmp_path / "out" / "summary.json").is_file()
    assert not (tmp_path / "out" / "preview.png").exists()
    assert "warning: no preview.png (RuntimeError: no canvas)" in capsys.readouterr().out
