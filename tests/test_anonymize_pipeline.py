"""jaxpriv anonymize end to end: drop-in copy, TFDS records, resume after SIGKILL, bad files."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from jaxpriv.anonymize import pipeline, readers, runner
from jaxpriv.data import pipeline as data_pipeline
from jaxpriv.data import sensitivity

SIZE = 48


def write_coco(root, num_images=8, corrupt=(), size=SIZE):
    """Images in class folders a/ and b/ with one person box (polygon) each; COCO json."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(num_images):
        name = f"{'ab'[i % 2]}/{i}.png"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if i in corrupt:
            (root / name).write_bytes(b"not a png")
        else:
            cv2.imwrite(str(root / name), rng.integers(1, 250, (size, size, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": name, "height": size, "width": size})
        x0, y0 = 8 + i, 10
        polygon = [x0, y0, x0 + 16, y0, x0 + 16, y0 + 24, x0, y0 + 24]
        annotations.append(
            {
                "id": 100 + i,
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [x0, y0, 16, 24],
                "segmentation": [polygon],
                "area": 384,
            }
        )
    path = root / "instances.json"
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    return path


OPTIONS = pipeline.Options(region="body", method="maskout", size=32, test_fraction=0.5)


def test_maskout_drop_in_copy_and_tfds_records(tmp_path):
    annotations = write_coco(tmp_path / "in")
    samples = readers.read_coco(annotations, tmp_path / "in")
    summary = runner.run(
        samples, tmp_path / "out", OPTIONS, workers=1, shard_size=3, progress=False
    )
    assert summary["records"]["train"] + summary["records"]["test"] == 8
    assert summary["skipped"] == []
    for sample in samples:
        original = sample.image
        copy = readers.load_image(tmp_path / "out" / "images" / sample.key)
        region = sample.persons[0].mask
        assert copy.shape == original.shape  # same file, same size
        np.testing.assert_array_equal(copy[~region], original[~region])  # nothing outside
        assert not np.any(np.all(copy[region] == original[region], axis=-1))  # no original pixel
    records = {}
    for split in ("train", "test"):
        source = data_pipeline.load_source(summary["dataset"], split)
        records.update({r["key"].decode(): r for r in (source[i] for i in range(len(source)))})
    assert sorted(records) == sorted(s.key for s in samples)
    for key, record in records.items():
        assert record["image"].shape == (32, 32, 3)
        public = record["sensitive"] == 0
        assert 0 < public.sum() < record["region"].sum() < 32 * 32
        assert np.all(record["region"][public] == 1)  # public only inside the masked-out region
        assert np.all(record["image"][public] == 0)  # …where the content is the constant fill
        assert record["label"] == "ab".index(key[0])


def test_blur_keeps_blurred_pixels_sensitive(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", num_images=2), tmp_path / "in")
    options = pipeline.Options(region="body", method="blur", size=32, test_fraction=0.5)
    summary = runner.run(samples, tmp_path / "out", options, workers=1, progress=False)
    source = data_pipeline.load_source(summary["dataset"], "train")
    for i in range(len(source)):
        assert source[i]["sensitive"].all() and source[i]["region"].any()


def test_corrupt_files_are_skipped_and_listed_or_fail_clearly(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", corrupt=(3,)), tmp_path / "in")
    summary = runner.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
    assert [item["key"] for item in summary["skipped"]] == ["b/3.png"]
    assert "cannot decode image" in summary["skipped"][0]["error"]
    with pytest.raises(ValueError, match="b/3.png: cannot decode image"):
        runner.run(samples, tmp_path / "out2", OPTIONS, workers=1, on_error="fail", progress=False)


def test_an_output_folder_refuses_other_options_saying_what_differs(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", num_images=2), tmp_path / "in")
    runner.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
    other = dataclasses.replace(OPTIONS, method="blur")
    finished = "it holds a finished run with other settings (method: 'maskout' then, 'blur' now)"
    with pytest.raises(ValueError, match=re.escape(finished)):
        runner.run(samples, tmp_path / "out", other, workers=1, progress=False)
    (tmp_path / "out" / "summary.json").unlink()
    removed = "unfinished run with other settings (inputs removed: " + samples[1].key + ")"
    with pytest.raises(ValueError, match=re.escape(removed)):
        runner.run(samples[:1], tmp_path / "out", OPTIONS, workers=1, progress=False)


def test_an_output_folder_inside_the_input_is_refused(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", num_images=1), tmp_path / "in")
    with pytest.raises(ValueError, match="lies inside --input"):
        runner.run(samples, tmp_path / "in" / "out", OPTIONS, input_root=tmp_path / "in")


def anonymize_command(root, out):  # inpainting large images: slow enough to be killed mid-way
    return [
        sys.executable,
        "-m",
        "jaxpriv.cli",
        "anonymize",
        "--format",
        "coco",
        "--input",
        str(root),
        "--annotations",
        str(root / "instances.json"),
        "--out",
        str(out),
        "--region",
        "body",
        "--method",
        "maskout",
        "--size",
        "32",
        "--test-fraction",
        "0.5",
        "--shard-size",
        "1",
        "--workers",
        "1",
        "--no-progress",
    ]


def tfds_records(out):
    summary = json.loads((out / "summary.json").read_text())
    return {
        split: [dict(r) for r in data_pipeline.load_source(summary["dataset"], split)]
        for split in ("train", "test")
    }


def test_killed_run_resumes_to_the_same_dataset(tmp_path):
    write_coco(tmp_path / "in", num_images=40, size=384)
    out = tmp_path / "killed"
    process = subprocess.Popen(anonymize_command(tmp_path / "in", out))
    deadline = time.time() + 120
    while not (out / ".shards" / "shard-00002.npz").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = sorted(p.name for p in (out / ".shards").glob("shard-*.npz"))
    assert 3 <= len(done) < 40  # killed part-way
    assert not (out / "summary.json").exists()
    assert not list((out / "tfds").glob("*/*/*/dataset_info.json"))  # no complete dataset
    mtimes = {name: os.path.getmtime(out / ".shards" / name) for name in done}

    subprocess.run(anonymize_command(tmp_path / "in", out), check=True)
    for name, mtime in mtimes.items():  # finished shards were skipped, not redone
        assert os.path.getmtime(out / ".shards" / name) == mtime
    subprocess.run(anonymize_command(tmp_path / "in", tmp_path / "clean"), check=True)
    resumed, clean = tfds_records(out), tfds_records(tmp_path / "clean")
    for split in ("train", "test"):
        assert len(resumed[split]) == len(clean[split]) > 0
        for a, b in zip(resumed[split], clean[split]):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name])


def test_jaxpriv_train_trains_on_the_anonymized_dataset(tmp_path):
    from jaxpriv import config as config_lib
    from jaxpriv.train import loop

    samples = readers.read_coco(write_coco(tmp_path / "in", num_images=16), tmp_path / "in")
    summary = runner.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
    config = config_lib.load_config(
        "configs/anonymized_maskdp.py", [f"--config.data.name={summary['dataset']}"]
    )
    config.model.kwargs = {
        "width": 8,
        "depth": 1,
        "heads": 2,
        "mlp_dim": 8,
        "split_streams": True,
        "patch": (4, 4),
    }
    config.train.batch_size, config.train.microbatch_size, config.train.epochs = 4, 4, 1.0
    config.dp.delta = 1e-3
    result = loop.train(config, str(tmp_path / "run"), progress=False)
    assert result["mode"] == "maskdp" and result["epsilon"] == pytest.approx(8.0, rel=1e-2)
    assert 0.0 <= result["test_accuracy"] <= 1.0


def write_video(path, frames, rate=10):
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("mpeg4", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"qscale": "2"}
        for frame in frames:
            output.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        output.mux(stream.encode())


def test_video_folder_faces_from_the_detector(tmp_path):
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[0:256, 100:356])  # the astronaut's face
    write_video(tmp_path / "in" / "talk" / "clip.mp4", [face] * 7)
    videos = readers.read_videos(tmp_path / "in")
    options = pipeline.Options(
        region="face", method="maskout", size=32, test_fraction=0.0, clip_frames=3
    )
    summary = runner.run(videos, tmp_path / "out", options, workers=1, progress=False)
    assert summary["records"] == {"train": 1, "test": 0}  # frames 0, 2, 4; 6 alone is too short
    copies = list(readers.decode_video(tmp_path / "out" / "images" / "talk" / "clip.mp4"))
    assert len(copies) == 7 and copies[0].shape == face.shape  # the same video, re-encoded
    source = data_pipeline.load_source(summary["dataset"], "train")
    record = source[0]
    assert record["video"].shape == (3, 32, 32, 3) and record["label"] == 0
    assert all(frame.sum() > 20 for frame in record["region"])  # the face was found in each
    assert np.all(record["sensitive"][record["region"] == 0] == 1)
    region = np.zeros(face.shape[:2], bool)
    region[80:160, 90:160] = True  # inside the face: masked out (uniform), unlike the original
    assert copies[0][region].std() < 10 < face[region].std()


def test_a_face_the_detector_misses_for_a_frame_is_still_covered(tmp_path, monkeypatch):
    from jaxpriv.anonymize import detect

    def flaky(image):  # finds the square in every frame but frame 2 (a bright pixel marks it)
        if image[0, 0, 0] > 128:
            return []
        return [detect.Detection((20.0, 20.0, 40.0, 40.0), 1.0)]

    monkeypatch.setitem(detect.DETECTORS, "flaky_for_test", lambda: flaky)
    frames = np.full((5, 64, 64, 3), 60, np.uint8)
    frames[:, 20:40, 20:40] = 200
    frames[2, 0:2, 0:2] = 255
    write_video(tmp_path / "in" / "walk" / "clip.mp4", list(frames))
    options = pipeline.Options(
        method="maskout",
        detector="flaky_for_test",
        size=64,
        test_fraction=0.0,
        clip_frames=5,
        frame_stride=1,
        max_gap=1,
    )
    videos = readers.read_videos(tmp_path / "in")
    summary = runner.run(videos, tmp_path / "out", options, workers=1, progress=False)
    record = data_pipeline.load_source(summary["dataset"], "train")[0]
    assert [int(r[30, 30]) for r in record["region"]] == [1, 1, 1, 1, 1]
    copies = list(readers.decode_video(tmp_path / "out" / "images" / "walk" / "clip.mp4"))
    assert copies[2][25:35, 25:35].max() < 40  # masked out although not detected in frame 2


def test_synthetic_clips_become_a_video_dataset_that_trains(tmp_path, capsys):
    from jaxpriv import cli

    out = tmp_path / "synthetic-body-maskout"
    code = cli.main(
        [
            "anonymize",
            "--format",
            "synthetic",
            "--num-clips",
            "24",
            "--region",
            "body",
            "--method",
            "maskout",
            "--out",
            str(out),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code in (0, None)
    printed = capsys.readouterr().out
    assert "anonymized 24 of 24 inputs" in printed
    dataset = printed.split("TFDS dataset: ")[1].split()[0]
    source = data_pipeline.load_source(dataset, "train")
    record = source[0]
    assert record["video"].shape == (4, 32, 32, 3)
    figure = record["region"].astype(bool)
    assert figure.any() and np.array_equal(record["sensitive"], (~figure).astype(np.uint8))
    assert np.all(record["video"][figure] == 0)  # mask-out: no figure pixel survives
    code = cli.main(
        [
            "train",
            "--config",
            "configs/video_maskdp.py",
            "--workdir",
            str(tmp_path / "run"),
            "--no-progress",
            f"--config.data.name={dataset}",
            "--config.train.epochs=1",
            "--config.train.batch_size=8",
            "--config.train.microbatch_size=8",
            "--config.dp.delta=1e-2",
            "--config.model.kwargs.width=8",
            "--config.model.kwargs.depth=1",
            "--config.model.kwargs.mlp_dim=8",
            "--config.model.kwargs.heads=2",
        ]
    )
    assert code in (0, None)
    assert (
        json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["mode"]
        == "maskdp"
    )


def test_body_region_from_annotations_of_unannotated_inputs_is_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((8, 8, 3), np.uint8))
    options = pipeline.Options(region="body", people="annotations")
    message = "--people annotations: 1 of the 1 inputs have no person annotations (x.png)"
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.run(readers.read_folder(tmp_path), tmp_path / "out", options, progress=False)


@pytest.mark.parametrize(
    "method, histogram, public",
    [
        ("maskout", "none", True),
        ("maskout", "equalize", True),
        ("maskout", "match", False),
        ("inpaint", "none", False),
        ("pixelate", "none", False),
        ("realistic", "none", False),  # diffusion inpainting reads the real surroundings
        ("avatar", "none", True),  # depends on the annotated pose and box only
        ("avatar", "equalize", False),  # equalized with the inpainted (real) background
    ],
)
def test_only_data_independent_content_is_public(method, histogram, public):
    options = pipeline.Options(method=method, histogram=histogram)
    assert pipeline.is_public_content(options) is public
    refined = pipeline.Options(method=method, histogram=histogram, refine=0.3)
    assert pipeline.is_public_content(refined) is (public and method != "avatar")


def test_a_resized_pixel_is_public_only_if_all_its_sources_are():
    public = np.zeros((100, 100), bool)
    public[:, :53] = True  # columns 50-52 share record pixel 5 with real columns 53-59
    small = sensitivity.resize_public(public, 10)
    np.testing.assert_array_equal(small[0], [True] * 5 + [False] * 5)
    up = sensitivity.resize_public(public[:20, :20] | ~public[:20, :20], 64)
    assert up.all()  # upsampling an all-public image keeps it public


def changed_by(images, i, j, size):
    """Bool [size, size]: the record pixels (images resized as `process_sample` does) that source
    pixel (i, j) changes in some image. The resize is nondecreasing in each source pixel, so
    setting it to 0 and to 255 finds every pixel that any change of it moves."""
    changed = np.zeros((size, size), bool)
    for image in images:
        low, high = image.copy(), image.copy()
        low[i, j], high[i, j] = 0, 255
        resized = [sensitivity.resize_square(x, size, cv2.INTER_AREA) for x in (low, high)]
        changed |= np.any(resized[0] != resized[1], axis=-1)
    return changed


def sensitive_record_pixels(shape, i, j, size):
    """The record's sensitive mask when source pixel (i, j) alone is sensitive."""
    public = np.ones(shape, bool)
    public[i, j] = False
    return ~sensitivity.resize_public(public, size)


@pytest.mark.parametrize("shape, size", [((23, 31), 16), ((37, 29), 10), ((10, 13), 16)])
def test_every_record_pixel_a_sensitive_pixel_changes_is_sensitive(shape, size):
    """Down by 1.44 and 2.9, up by 1.6; every source pixel in turn. Only a few record pixels
    around it are sensitive (none where the centre crop cuts it off)."""
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    reach = int(np.ceil(size / min(shape))) + 1  # record pixels a source pixel reaches per axis
    for i, j in np.ndindex(shape):
        sensitive = sensitive_record_pixels(shape, i, j, size)
        assert not (changed_by([image], i, j, size) & ~sensitive).any(), (i, j)
        assert sensitive.sum() <= reach**2


def test_a_sensitive_pixel_of_tiny_weight_makes_its_record_pixel_sensitive():
    """101 -> 16 px: source pixel (18, 18) overlaps record pixel (3, 3) by 1/16 px in each axis,
    a weight of 1e-4; it still changes that pixel's value where the rest of it sums to just
    under one half (here one pixel of weight 0.025 and value 19: 0.477)."""
    image = np.zeros((101, 101, 3), np.uint8)
    image[20, 20] = 19
    changed = changed_by([image], 18, 18, 16)
    sensitive = sensitive_record_pixels((101, 101), 18, 18, 16)
    assert changed[3, 3] and not (changed & ~sensitive).any()
