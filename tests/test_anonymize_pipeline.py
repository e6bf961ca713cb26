"""jaxpriv anonymize end to end: drop-in copy, TFDS records, resume after SIGKILL, bad files."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from jaxpriv.anonymize import pipeline, readers
from jaxpriv.data import pipeline as data_pipeline

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
    summary = pipeline.run(
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
    summary = pipeline.run(samples, tmp_path / "out", options, workers=1, progress=False)
    source = data_pipeline.load_source(summary["dataset"], "train")
    for i in range(len(source)):
        assert source[i]["sensitive"].all() and source[i]["region"].any()


def test_corrupt_files_are_skipped_and_listed_or_fail_clearly(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", corrupt=(3,)), tmp_path / "in")
    summary = pipeline.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
    assert [item["key"] for item in summary["skipped"]] == ["b/3.png"]
    assert "cannot decode image" in summary["skipped"][0]["error"]
    with pytest.raises(ValueError, match="b/3.png: cannot decode image"):
        pipeline.run(
            samples, tmp_path / "out2", OPTIONS, workers=1, on_error="fail", progress=False
        )


def test_an_output_folder_refuses_other_options(tmp_path):
    samples = readers.read_coco(write_coco(tmp_path / "in", num_images=2), tmp_path / "in")
    pipeline.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
    other = pipeline.Options(region="body", method="blur", size=32)
    with pytest.raises(ValueError, match="unfinished run with other options"):
        pipeline.run(samples, tmp_path / "out", other, workers=1, progress=False)


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
    summary = pipeline.run(samples, tmp_path / "out", OPTIONS, workers=1, progress=False)
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
    write_video(tmp_path / "in" / "talk" / "clip.mp4", [face] * 3)
    samples = list(readers.read_video(tmp_path / "in" / "talk" / "clip.mp4", tmp_path / "in"))
    options = pipeline.Options(region="face", method="maskout", size=32, test_fraction=0.0)
    summary = pipeline.run(samples, tmp_path / "out", options, workers=1, progress=False)
    assert summary["records"] == {"train": 3, "test": 0}
    copies = list(readers.read_video(tmp_path / "out" / "images" / "talk" / "clip.mp4"))
    assert len(copies) == 3 and copies[0].image.shape == face.shape  # the same video, re-encoded
    source = data_pipeline.load_source(summary["dataset"], "train")
    for i in range(3):
        record = source[i]
        assert record["label"] == 0 and record["region"].sum() > 20  # the face was found
        assert np.all(record["sensitive"][record["region"] == 0] == 1)
    region = np.zeros(face.shape[:2], bool)
    region[80:160, 90:160] = True  # inside the face: masked out (uniform), unlike the original
    assert copies[0].image[region].std() < 10 < face[region].std()


@pytest.mark.parametrize(
    "method, histogram, public",
    [
        ("maskout", "none", True),
        ("maskout", "equalize", True),
        ("maskout", "match", False),
        ("inpaint", "none", False),
        ("pixelate", "none", False),
    ],
)
def test_only_data_independent_content_is_public(method, histogram, public):
    options = pipeline.Options(method=method, histogram=histogram)
    assert pipeline.is_public_content(options) is public


def test_a_resized_pixel_is_public_only_if_all_its_sources_are():
    public = np.zeros((100, 100), bool)
    public[:, :53] = True  # columns 50-52 share record pixel 5 with real columns 53-59
    small = pipeline.resize_public(public, 10)
    np.testing.assert_array_equal(small[0], [True] * 5 + [False] * 5)
    up = pipeline.resize_public(public[:20, :20] | ~public[:20, :20], 64)
    assert up.all()  # upsampling an all-public image keeps it public
