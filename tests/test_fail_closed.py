"""Fail closed: an input whose people the run cannot be sure it handled is never written as if
it had been — it is skipped and listed (or the run stops), and the per-input report says why."""

import json
import re

import cv2
import numpy as np
import pytest
from test_anonymize_pipeline import write_video

from jaxpriv.anonymize import detect, pipeline, readers, regions, runner

FACE = (20.0, 16.0, 44.0, 40.0)  # the bright square the test detector finds


def marked_face_detector(image):
    """Finds the bright square of `write_images`, only upright (a pixel marks the top left)."""
    if image.shape[:2] != (64, 64) or image[0, 0, 0] != 255 or image[63, 63, 0] == 255:
        return []
    return [detect.Detection(FACE, 0.9)]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """a/face.png (found upright), a/turned.png (the same image turned 90°), b/empty.png."""
    monkeypatch.setitem(detect.DETECTORS, "marked_for_test", lambda: marked_face_detector)
    face = np.full((64, 64, 3), 90, np.uint8)
    face[16:40, 20:44] = 230
    face[0, 0] = 255
    images = {
        "a/face.png": face,
        "a/turned.png": np.ascontiguousarray(np.rot90(face, 1)),
        "b/empty.png": np.full((64, 64, 3), 90, np.uint8),
    }
    for name, image in images.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "in" / name), image)
    return tmp_path, images


def run_folder(tmp_path, out="out", **options):
    settings = pipeline.Options(
        method="maskout", detector="marked_for_test", size=32, test_fraction=0.0, **options
    )
    samples = readers.read_folder(tmp_path / "in")
    return runner.run(samples, tmp_path / out, settings, workers=1, progress=False)


def inputs_report(out_dir):
    lines = (out_dir / "inputs.jsonl").read_text().splitlines()
    return {entry["key"]: entry for entry in map(json.loads, lines)}


def test_where_no_face_is_found_the_input_is_skipped_listed_and_not_written(folder):
    tmp_path, images = folder
    summary = run_folder(tmp_path)
    assert summary["nothing_found"] == ["b/empty.png"]
    assert summary["inputs"] == {"anonymized": 2, "kept": 0, "skipped": 1}
    assert summary["skipped"] == [
        {
            "key": "b/empty.png",
            "error": "b/empty.png: the marked_for_test face detector found no face upright or "
            "turned; --if-none keep would write it unchanged",
        }
    ]
    assert not (tmp_path / "out" / "images" / "b" / "empty.png").exists()
    report = inputs_report(tmp_path / "out")
    assert report["a/face.png"] == {
        "key": "a/face.png",
        "status": "anonymized",
        "nothing_found": False,
        "source": "detector",
        "regions": 1,
        "turns": 0,
        "confidence": [0.9],
    }
    assert report["a/turned.png"]["turns"] == 3  # found after three more quarter turns
    assert report["b/empty.png"]["status"] == "skipped"


def test_a_face_found_on_a_turned_copy_is_hidden_where_it_is(folder):
    tmp_path, images = folder
    run_folder(tmp_path)
    copy = readers.load_image(tmp_path / "out" / "images" / "a" / "turned.png")
    face_there = np.ascontiguousarray(np.rot90(images["a/face.png"], 1))[..., 0] == 230
    rows, cols = np.nonzero(face_there)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 43, 16, 39)
    assert (copy[22:42, 18:38] == 0).all()  # the face's middle masked out (black) ...
    assert (copy[face_there] == 0).mean() > 0.9  # ... and all but its corners (an ellipse)


def test_without_the_rotation_search_the_turned_face_is_not_shipped(folder):
    tmp_path, _ = folder
    summary = run_folder(tmp_path, search_rotations=False)
    assert summary["nothing_found"] == ["a/turned.png", "b/empty.png"]
    assert not (tmp_path / "out" / "images" / "a" / "turned.png").exists()


def test_if_none_keep_writes_unchanged_and_lists_and_fail_stops(folder):
    tmp_path, images = folder
    summary = run_folder(tmp_path, if_none="keep")
    assert summary["nothing_found"] == ["b/empty.png"] and summary["skipped"] == []
    assert summary["inputs"] == {"anonymized": 2, "kept": 1, "skipped": 0}
    kept = readers.load_image(tmp_path / "out" / "images" / "b" / "empty.png")
    assert np.array_equal(kept, images["b/empty.png"][..., ::-1])
    with pytest.raises(pipeline.NothingFoundError, match="b/empty.png: the marked_for_test"):
        run_folder(tmp_path, out="out2", if_none="fail")


def write_declared_coco(root, declared, real):
    """One image of size `real` (H, W) whose COCO entry declares `declared`; its one person has
    a box and face keypoints only (no segmentation), placed for the declared size."""
    image = np.full((*real, 3), 90, np.uint8)
    (root / "a").mkdir(parents=True)
    cv2.imwrite(str(root / "a" / "0.png"), image)
    sy, sx = declared[0] / real[0], declared[1] / real[1]
    keypoints = np.zeros((17, 3))
    keypoints[:5] = [(30 * sx, 20 * sy, 2), (33 * sx, 17 * sy, 2), (27 * sx, 17 * sy, 2)] + [
        (36 * sx, 19 * sy, 2),
        (24 * sx, 19 * sy, 2),
    ]
    annotation = {
        "id": 1,
        "image_id": 0,
        "category_id": 1,
        "bbox": [20 * sx, 10 * sy, 20 * sx, 50 * sy],
        "keypoints": keypoints.ravel().tolist(),
    }
    coco = {
        "images": [{"id": 0, "file_name": "a/0.png", "height": declared[0], "width": declared[1]}],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    return readers.read_coco(root / "coco.json", root)


def test_annotations_declaring_another_size_skip_the_image(tmp_path):
    samples = write_declared_coco(tmp_path / "in", declared=(128, 160), real=(64, 80))
    options = pipeline.Options(method="maskout", size=32, test_fraction=0.0)
    with pytest.raises(ValueError, match="nothing could be anonymized"):
        runner.run(samples, tmp_path / "out", options, workers=1, progress=False)
    (report,) = inputs_report_from_shards(tmp_path / "out")
    assert report["status"] == "skipped"
    assert report["error"].endswith(
        "a/0.png: the annotations declare 128x160 but the image is 64x80; "
        "--size-mismatch rescale scales them"
    )
    assert not (tmp_path / "out" / "images" / "a" / "0.png").exists()


def inputs_report_from_shards(out_dir):
    with np.load(runner.shard_path(out_dir, 0)) as shard:
        return json.loads(str(shard["inputs"]))


def test_rescaled_annotations_hide_the_face_where_it_is(tmp_path):
    samples = write_declared_coco(tmp_path / "in", declared=(128, 160), real=(64, 80))
    options = pipeline.Options(
        method="maskout", size=32, test_fraction=0.0, size_mismatch="rescale"
    )
    runner.run(samples, tmp_path / "out", options, workers=1, progress=False)
    copy = readers.load_image(tmp_path / "out" / "images" / "a" / "0.png")
    assert (copy[17:21, 27:34] == 0).all()  # the eyes and the nose at the file's scale


def test_rescale_person_scales_box_keypoints_and_never_shrinks_a_mask():
    mask = np.zeros((40, 60), bool)
    mask[10:11, 7:50] = True  # one row thin: a plain shrink by 4 could lose it
    keypoints = np.array([[20.0, 8.0, 2.0]] * 17, np.float32)
    person = readers.Person((4.0, 8.0, 40.0, 32.0), mask, keypoints)
    scaled = regions.rescale_person(person, (40, 60), (10, 15))
    assert scaled.box == (1.0, 2.0, 10.0, 8.0)
    assert scaled.keypoints[0].tolist() == [5.0, 2.0, 2.0]
    assert scaled.mask.shape == (10, 15) and scaled.mask[2, 2:12].all()


def test_a_video_too_short_for_a_clip_is_skipped_without_a_copy(tmp_path, monkeypatch):
    monkeypatch.setitem(
        detect.DETECTORS,
        "everywhere_for_test",
        lambda: lambda image: [detect.Detection((0.0, 0.0, 8.0, 8.0), 1.0)],
    )
    write_video(tmp_path / "in" / "walk" / "short.mp4", [np.zeros((32, 32, 3), np.uint8)] * 3)
    options = pipeline.Options(detector="everywhere_for_test", clip_frames=4, test_fraction=0.0)
    with pytest.raises(ValueError, match="nothing could be anonymized"):
        runner.run(readers.read_videos(tmp_path / "in"), tmp_path / "out", options, workers=1)
    (report,) = inputs_report_from_shards(tmp_path / "out")
    assert report["error"].startswith("ValueError: too short: 2 frames kept")
    assert not list((tmp_path / "out" / "images").rglob("*.mp4"))
    assert not list((tmp_path / "out" / "images").rglob("*.partial*"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dilate": -1}, "dilate must not be negative, got -1"),
        ({"expand_box": -0.5}, "expand_box must not be negative, got -0.5"),
        ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\), got 1.0"),
        (
            {"if_none": "ignore"},
            r"unknown if_none 'ignore'; choose one of \['skip', 'keep', 'fail'\]",
        ),
        (
            {"detector": "nope"},
            r"unknown detector 'nope'; choose one of \['auto', 'centerface', 'haar'\]",
        ),
    ],
)
def test_invalid_options_are_refused_up_front(change, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        pipeline.Options(**change).check()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"workers": 0}, "workers must be at least 1, got 0"),
        ({"shard_size": 0}, "shard_size must be at least 1, got 0"),
    ],
)
def test_invalid_run_settings_are_refused(tmp_path, kwargs, message):
    samples = [readers.Sample("a.png", tmp_path / "a.png")]
    with pytest.raises(ValueError, match=f"^{message}$"):
        runner.run(samples, tmp_path / "out", **kwargs)


def test_truncated_files_are_skipped_listed_and_never_copied(folder):
    tmp_path, images = folder
    ok, data = cv2.imencode(".jpg", images["a/face.png"])
    assert ok
    (tmp_path / "in" / "a" / "cut.jpg").write_bytes(data.tobytes()[: len(data) // 3])
    summary = run_folder(tmp_path)
    (cut,) = [item for item in summary["skipped"] if item["key"] == "a/cut.jpg"]
    assert "truncated" in cut["error"] and "cut.jpg" in cut["error"]
    assert not (tmp_path / "out" / "images" / "a" / "cut.jpg").exists()
    with pytest.raises(ValueError, match="a/cut.jpg: cannot decode image"):
        samples = readers.read_folder(tmp_path / "in")
        options = pipeline.Options(method="maskout", detector="marked_for_test", test_fraction=0)
        runner.run(samples, tmp_path / "out2", options, workers=1, on_error="fail")
    assert not (tmp_path / "out2" / "images" / "a" / "cut.jpg").exists()


@pytest.mark.parametrize(
    "name, convert",
    [
        ("deep.png", lambda bgr: bgr.astype(np.uint16) * 256 + 3),  # 16-bit, low bits set
        ("grey.png", lambda bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)),
        ("alpha.png", lambda bgr: np.dstack([bgr, np.full(bgr.shape[:2], 77, np.uint8)])),
    ],
)
def test_the_drop_in_copy_keeps_depth_grey_and_alpha(folder, name, convert):
    tmp_path, images = folder
    source = convert(images["a/face.png"])  # as cv2 writes it (BGR order)
    for other in ("face.png", "turned.png"):
        (tmp_path / "in" / "a" / other).unlink()
    (tmp_path / "in" / "b" / "empty.png").unlink()
    cv2.imwrite(str(tmp_path / "in" / "a" / name), source)
    run_folder(tmp_path)
    copy = cv2.imread(str(tmp_path / "out" / "images" / "a" / name), cv2.IMREAD_UNCHANGED)
    assert copy.dtype == source.dtype and copy.shape == source.shape
    changed = (copy != source).reshape(*copy.shape[:2], -1).any(axis=-1)
    assert changed[22:38, 22:42].all()  # the face is replaced ...
    assert not changed[48:, :].any() and not changed[:, :12].any()  # ... and nothing far from it


def test_with_on_error_skip_an_image_with_a_broken_annotation_is_skipped_alone(tmp_path):
    from test_anonymize_pipeline import write_coco

    path = write_coco(tmp_path / "in", num_images=3)
    coco = json.loads(path.read_text())
    coco["annotations"][1]["segmentation"] = [[1, 2, 3]]  # too few coordinates
    path.write_text(json.dumps(coco))
    with pytest.raises(readers.AnnotationError, match="b/1.png: annotation 101: polygon"):
        readers.read_coco(path, tmp_path / "in")  # strict: the whole file is refused
    samples = readers.read_coco(path, tmp_path / "in", strict=False)
    options = pipeline.Options(region="body", method="maskout", size=32, test_fraction=0.0)
    summary = runner.run(samples, tmp_path / "out", options, workers=1, progress=False)
    assert summary["records"]["train"] == 2
    (skipped,) = summary["skipped"]
    assert skipped["key"] == "b/1.png"
    assert (
        "annotation 101: polygon with 3 coordinates: expected an even number >= 6"
        in skipped["error"]
    )
    assert not (tmp_path / "out" / "images" / "b" / "1.png").exists()


def test_a_dataset_without_a_test_split_is_refused_by_name(folder):
    from jaxpriv.data import pipeline as data_pipeline

    tmp_path, _ = folder
    summary = run_folder(tmp_path)  # test_fraction 0: a train split only
    message = f"dataset {summary['dataset']} has no 'test' split (it has train); for a test split"
    with pytest.raises(ValueError, match=re.escape(message)):
        data_pipeline.load_source(summary["dataset"], "test")


def test_training_settings_that_would_be_ignored_or_meaningless_are_refused(tmp_path):
    from jaxpriv import config as config_lib
    from jaxpriv.train import loop

    config = config_lib.default_config()
    config.train.epochs = 0.0
    with pytest.raises(ValueError, match="^train.epochs must be positive, got 0.0$"):
        loop.plan_run(config, 1000)
    config = config_lib.default_config()
    config.dp.mode, config.dp.delta, config.train.batch_size = "dpsgd", 1e-2, 100
    with pytest.warns(loop.DeltaWarning, match=r"dp.delta=0.01 is not below 1/N = 0.001"):
        loop.plan_run(config, 1000)
    config = config_lib.default_config()
    config.data.name, config.data.num_train = str(tmp_path), 100
    with pytest.raises(ValueError, match=r"^data.num_train only configure the generated"):
        loop.check_generation_keys(config.data)


def test_training_at_a_tiny_sigma_is_refused_at_once_not_after_petabytes():
    from jaxpriv import config as config_lib
    from jaxpriv.dp import accounting
    from jaxpriv.train import loop

    config = config_lib.default_config()
    config.dp.mode, config.dp.noise_multiplier = "dpsgd", 1e-6
    with pytest.raises(accounting.UnreachableBudgetError, match="a single step with σ=1e-06"):
        loop.plan_run(config, 4096)


def test_a_run_too_small_for_a_test_split_says_so_up_front(folder, capsys):
    tmp_path, _ = folder
    options = pipeline.Options(method="maskout", detector="marked_for_test", test_fraction=0.01)
    samples = readers.read_folder(tmp_path / "in")
    summary = runner.run(samples, tmp_path / "out", options, workers=1, progress=False)
    assert summary["records"]["test"] == 0
    assert (
        "warning: none of the 3 inputs falls in the test split (test_fraction 0.01, by key "
        "hash): the dataset will have a train split only"
    ) in capsys.readouterr().out
