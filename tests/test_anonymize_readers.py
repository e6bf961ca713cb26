"""Readers of COCO JSON, Cityscapes gtFine, image folders and videos, on fixture files they write."""

import contextlib
import json
import pickle

import av
import cv2
import numpy as np
import pytest
from layout_fixtures import rle_string
from PIL import Image, ImageOps

from jaxpriv.anonymize import readers
from jaxpriv.anonymize.readers import (
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    AnnotationError,
    CorruptImageError,
    decode_video,
    ignored_files,
    load_image,
    load_original,
    polygons_to_mask,
    read_cityscapes,
    read_coco,
    read_folder,
    read_synthetic,
    read_videos,
    restore,
    rle_string_to_counts,
    rle_to_mask,
    to_rgb8,
)
from jaxpriv.data.synthetic import CLASS_NAMES

H, W = 40, 50


def encode_counts(mask):
    """Column-major run lengths of a bool mask, starting with a run of 0s (COCO RLE)."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def write_image(path, height=H, width=W, value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return path


def crowd_mask():
    mask = np.zeros((H, W), bool)
    mask[25:35, 30:45] = True
    mask[28:31, 36:40] = False  # a hole: more than two runs per column
    mask[0, 49] = True  # a run touching the last pixel
    return mask


KEYPOINTS = np.zeros((17, 3), np.float32)
KEYPOINTS[:5] = [[15, 8, 2], [13, 7, 2], [17, 7, 2], [11, 8, 1], [19, 8, 0]]


def write_coco(tmp_path, annotations, images=None):
    images = images or [
        {"id": 1, "file_name": "imgs/a.png", "height": H, "width": W},
        {"id": 2, "file_name": "imgs/b.png", "height": H, "width": W},
    ]
    for image in images:
        if not image["file_name"].startswith("missing"):
            write_image(tmp_path / image["file_name"])
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def person_annotation(ann_id, segmentation, image_id=1, **extra):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": [10, 5, 10, 20],
        "segmentation": segmentation,
        "iscrowd": 0,
        **extra,
    }


@pytest.fixture
def coco(tmp_path):
    rle = {"size": [H, W], "counts": rle_string(encode_counts(crowd_mask()))}
    annotations = [
        person_annotation(
            7, [[10, 5, 20, 5, 20, 25, 10, 25]], keypoints=KEYPOINTS.ravel().tolist()
        ),
        person_annotation(8, rle, iscrowd=1, bbox=[30, 0, 20, 35]),
        {**person_annotation(9, [[0, 0, 5, 0, 5, 5]]), "category_id": 3},  # a car: ignored
    ]
    return write_coco(tmp_path, annotations), tmp_path


def test_coco_reads_persons_with_exact_masks(coco):
    json_path, root = coco
    samples = read_coco(json_path, root)
    assert [s.key for s in samples] == ["imgs/a.png", "imgs/b.png"]
    assert samples[0].path == (root / "imgs/a.png").absolute()
    assert samples[1].persons == []
    body, crowd = samples[0].persons
    expected = np.zeros((H, W), bool)
    expected[5:25, 10:20] = True  # pixel centres inside [10, 20] x [5, 25]
    np.testing.assert_array_equal(body.mask, expected)
    assert body.box == (10.0, 5.0, 20.0, 25.0) and body.source_id == "7" and not body.crowd
    np.testing.assert_array_equal(body.keypoints, KEYPOINTS)
    np.testing.assert_array_equal(crowd.mask, crowd_mask())
    assert crowd.crowd and crowd.keypoints is None and crowd.source_id == "8"
    assert samples[0].image.shape == (H, W, 3) and samples[0].image.dtype == np.uint8


def test_coco_uncompressed_rle(tmp_path):
    rle = {"size": [H, W], "counts": encode_counts(crowd_mask())}
    sample = read_coco(write_coco(tmp_path, [person_annotation(1, rle)]), tmp_path)[0]
    np.testing.assert_array_equal(sample.persons[0].mask, crowd_mask())


@pytest.fixture
def decodes(monkeypatch):
    """Counts the calls of the mask decoders (polygon fill and RLE expansion)."""
    calls = []
    for name in ("_polygon_mask", "rle_to_mask"):
        decoder = getattr(readers, name)
        monkeypatch.setattr(
            readers, name, lambda *args, _d=decoder, _n=name: calls.append(_n) or _d(*args)
        )
    return calls


def test_coco_masks_are_decoded_on_access_only(tmp_path, decodes):
    height, width = 480, 640  # the JSON's size; the image file itself is small
    images = [{"id": 1, "file_name": "imgs/a.png", "height": height, "width": width}]
    rle = {"size": [height, width], "counts": [height * width - 10, 10]}
    polygon = [[100, 100, 300, 100, 300, 400, 100, 400]]
    path = write_coco(tmp_path, [person_annotation(1, polygon), person_annotation(2, rle)], images)
    samples = read_coco(path, tmp_path)
    assert decodes == []
    assert len(pickle.dumps(samples)) < height * width / 100  # what worker processes receive
    assert [p.mask_shape for p in samples[0].persons] == [(height, width)] * 2
    polygon_person, rle_person = pickle.loads(pickle.dumps(samples))[0].persons
    assert polygon_person.mask.sum() == 200 * 300 and decodes == ["_polygon_mask"]
    assert rle_person.mask[-10:, -1].all() and rle_person.mask.sum() == 10
    assert decodes == ["_polygon_mask", "rle_to_mask", "rle_to_mask"]  # again on every access


@pytest.mark.parametrize("kind", ["polygons", "compressed", "uncompressed"])
@pytest.mark.parametrize("seed", range(3))
def test_coco_lazy_masks_equal_the_eager_decoders(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "polygons":
        segmentation = [
            rng.uniform(-5, [W + 5, H + 5], (rng.integers(3, 9), 2)).ravel().tolist()
            for _ in range(2)
        ]
        expected = polygons_to_mask(segmentation, H, W)
    else:
        counts = encode_counts(rng.random((H, W)) < 0.3)
        expected = rle_to_mask(counts, H, W)
        segmentation = {"size": [H, W], "counts": counts}
        if kind == "compressed":
            segmentation["counts"] = rle_string(counts)
    path = write_coco(tmp_path, [person_annotation(1, segmentation)])
    (person,) = read_coco(path, tmp_path)[0].persons
    assert person.mask.dtype == bool
    np.testing.assert_array_equal(person.mask, expected)


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ({"size": [H, W], "counts": rle_string([H * W - 1])}, "RLE runs cover 1999 pixels"),
        ({"size": [H, W], "counts": "3P"}, "ends in the middle of a count"),
        ({"size": [H, W], "counts": None}, "not 'NoneType'"),
        ({"size": [H, W], "counts": [[1, 2], [3]]}, "inhomogeneous|sequence"),
        ({"counts": [H * W]}, "missing field 'size'"),
        ([[10, 5, 20, 5, 20]], "polygon with 5 coordinates"),
        ([[10, 5, 20, None, 20, 25]], "finite numbers"),
        ([[10, 5, "x", 5, 20, 25]], "could not convert"),
        ("abc", "unsupported segmentation of type str"),
    ],
)
def test_coco_bad_segmentation_is_named_at_read_time(tmp_path, segmentation, message):
    path = write_coco(tmp_path, [person_annotation(5, segmentation)])
    with pytest.raises(AnnotationError, match=f"imgs/a.png: annotation 5: .*({message})"):
        read_coco(path, tmp_path)


def test_coco_decoding_error_names_the_annotation(coco, monkeypatch):
    body, _ = read_coco(*coco)[0].persons

    def fail(*args):
        raise ValueError("out of memory for the fill")

    monkeypatch.setattr(readers, "_polygon_mask", fail)
    with pytest.raises(ValueError, match="annotation 7: .*out of memory for the fill"):
        _ = body.mask


def test_rle_string_matches_pycocotools_layout():
    assert rle_string_to_counts("32") == [3, 2]
    assert rle_string_to_counts("532N") == [5, 3, 2, 1]  # 'N': -2, added to the count two back
    by_columns = [[0, 1], [1, 0], [1, 0]]
    np.testing.assert_array_equal(rle_to_mask([1, 3, 2], 3, 2), by_columns)


@pytest.mark.parametrize("seed", range(5))
def test_rle_string_round_trip(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((23, 31)) < rng.uniform(0.05, 0.95)
    counts = encode_counts(mask)
    assert rle_string_to_counts(rle_string(counts)) == counts
    np.testing.assert_array_equal(rle_to_mask(counts, 23, 31), mask)


def test_polygon_area_and_union():
    square = [2.5, 2.5, 6.5, 2.5, 6.5, 4.5, 2.5, 4.5]
    triangle = [0, 10, 10, 10, 0, 20]  # area 50
    mask = polygons_to_mask([square, triangle], 20, 12)
    np.testing.assert_array_equal(
        np.argwhere(mask[:10]), [(r, c) for r in (2, 3) for c in range(2, 6)]
    )
    assert abs(mask[10:].sum() - 50) <= 5


def test_cityscapes_persons_riders_and_crowd(tmp_path):
    city = "leftImg8bit/val/zurich/zurich_000001_000019_leftImg8bit.png"
    write_image(tmp_path / city, 32, 48)
    ids = np.full((32, 48), 7, np.uint16)  # road
    ids[2:12, 3:9] = 24001
    ids[14:30, 3:9] = 24002
    ids[5:25, 20:26] = 25000  # rider, instance 0
    ids[0:6, 30:46] = 24  # a group of persons
    ids[20:32, 30:46] = 26001  # a car
    gt = tmp_path / "gtFine/val/zurich/zurich_000001_000019_gtFine_instanceIds.png"
    gt.parent.mkdir(parents=True)
    assert cv2.imwrite(str(gt), ids)
    (sample,) = read_cityscapes(tmp_path, "val")
    assert sample.key == city
    by_id = {p.source_id: p for p in sample.persons}
    assert sorted(by_id) == ["24", "24001", "24002", "25000"]
    for value, person in by_id.items():
        np.testing.assert_array_equal(person.mask, ids == int(value))
        assert person.crowd == (value == "24")
    assert by_id["24002"].box == (3.0, 14.0, 9.0, 30.0)
    assert sample.image.shape == (32, 48, 3)


def test_cityscapes_missing_instance_map_is_named(tmp_path):
    write_image(tmp_path / "leftImg8bit/train/bonn/bonn_000000_000001_leftImg8bit.png")
    with pytest.raises(AnnotationError, match="bonn_000000_000001_gtFine_instanceIds.png"):
        read_cityscapes(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="val"):
        read_cityscapes(tmp_path, "val")


def test_folder_is_recursive_and_sorted(tmp_path):
    write_image(tmp_path / "b.png")
    (tmp_path / "a").mkdir()
    assert cv2.imwrite(str(tmp_path / "a/c.JPG"), np.zeros((4, 4, 3), np.uint8))
    write_image(tmp_path / "a/b.bmp")
    (tmp_path / "notes.txt").write_text("not an image")
    samples = read_folder(tmp_path)
    assert [s.key for s in samples] == ["a/b.bmp", "a/c.JPG", "b.png"]
    assert all(s.persons == [] for s in samples)
    assert samples[1].image.shape == (4, 4, 3)


def write_video(path, frames, codec="mpeg4"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())


def test_video_frames_in_order(tmp_path):
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    for t in range(5):
        frames[t, 24:40, 4 + 8 * t : 20 + 8 * t] = 255
    path = tmp_path / "videos/clip.mp4"
    path.parent.mkdir()
    write_video(path, frames)
    (tmp_path / "videos/notes.txt").write_text("not a video")
    (video,) = read_videos(tmp_path)
    assert video.key == "videos/clip.mp4" and video.frame_rate == 5 and video.persons is None
    decoded = list(video.decode())
    assert len(decoded) == 5
    for t, image in enumerate(decoded):
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        cols = np.argwhere(image.mean(axis=-1) > 128)[:, 1]
        assert abs(cols.mean() - (11.5 + 8 * t)) < 1.0
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no videos"):
        read_videos(tmp_path / "empty")


def test_synthetic_clips_have_the_figure_as_their_person():
    videos = read_synthetic(16, seed=3, frames=4, size=32)
    assert len(videos) == 16 and len({v.key for v in videos}) == 16
    for video in videos:
        assert video.frames.shape == (4, 32, 32, 3) and len(video.persons) == 4
        assert video.key.startswith(f"{video.label}/") and video.label in CLASS_NAMES
        for (person,) in video.persons:
            assert 20 < person.mask.sum() < 32 * 32 / 2  # a figure, not the background
            x0, y0, x1, y1 = person.box
            assert person.mask[int(y0) : int(y1), int(x0) : int(x1)].sum() == person.mask.sum()


def test_corrupt_files_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(CorruptImageError, match="cannot decode image '.*broken.jpg'"):
        load_image(bad)
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        _ = read_folder(tmp_path)[0].image
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptImageError, match="cannot decode video '.*broken.mp4'"):
        list(decode_video(video))


def test_coco_missing_image_file_is_named(tmp_path):
    images = [
        {"id": 1, "file_name": "imgs/a.png", "height": H, "width": W},
        {"id": 2, "file_name": "missing_one.png", "height": H, "width": W},
    ]
    path = write_coco(tmp_path, [person_annotation(1, [], image_id=42)], images)
    with pytest.raises(AnnotationError, match="2 annotation problem") as error:
        read_coco(path, tmp_path)
    assert "missing_one.png: image file not found" in str(error.value)
    assert "unknown image_id 42" in str(error.value)


def test_coco_rle_of_wrong_size(tmp_path):
    rle = {"size": [20, 20], "counts": [400]}
    path = write_coco(tmp_path, [person_annotation(5, rle)])
    message = r"imgs/a.png: annotation 5: RLE mask size \[20, 20\] does not match .* \[40, 50\]"
    with pytest.raises(AnnotationError, match=message):
        read_coco(path, tmp_path)


def test_coco_problems_are_collected(tmp_path):
    annotations = [person_annotation(i, {"size": [H, W], "counts": [1]}) for i in range(12)]
    annotations.append({"id": 99, "image_id": 1, "category_id": 1})  # no bbox
    with pytest.raises(AnnotationError, match="13 annotation problem") as error:
        read_coco(write_coco(tmp_path, annotations), tmp_path)
    assert len(error.value.problems) == 13
    assert "RLE runs cover 1 pixels, expected 40x50" in str(error.value)
    assert "... and 3 more" in str(error.value)
    assert "annotation 99: missing field 'bbox'" in error.value.problems[-1]


def test_coco_without_person_category(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(AnnotationError, match="(?s)x.json.*no category named 'person'"):
        read_coco(path, tmp_path)
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match="(?s)x.json.*not valid JSON"):
        read_coco(path, tmp_path)


def test_image_size_differs_from_annotation(tmp_path):
    json_path = write_coco(tmp_path, [person_annotation(3, [[10, 5, 20, 5, 20, 25]])])
    write_image(tmp_path / "imgs/a.png", 30, 30)  # the JSON says 40x50
    sample = read_coco(json_path, tmp_path)[0]
    with pytest.raises(
        AnnotationError, match="imgs/a.png: image is 30x30 but the mask of person '3'"
    ):
        _ = sample.image
    with pytest.raises(AnnotationError, match="image is 30x30"):
        sample.check_annotations((30, 30))
    sample.check_annotations((40, 50))  # the size the annotations were made for


# --- strict decoding, original formats, ignored files -----------------------------------------


def noise_image(height=96, width=128, channels=3, dtype=np.uint8, seed=0):
    """Smooth noise (compressible, so a third of a file cuts into the pixel data)."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top, (height, width, channels), dtype=dtype, endpoint=True)
    pixels = cv2.GaussianBlur(pixels, (0, 0), 2).reshape(height, width, channels)
    return pixels[..., 0] if channels == 1 else pixels


def write_rgb(path, rgb, *params):
    """Writes RGB(A) or gray pixels with cv2 (BGR order on disk), as the pipeline does."""
    if rgb.ndim == 3:
        rgb = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if rgb.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), rgb, list(params))
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".bmp"])
def test_intact_images_decode_as_cv2_did(tmp_path, suffix):
    path = write_rgb(tmp_path / f"a{suffix}", noise_image())
    before = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.flags.writeable
    np.testing.assert_array_equal(image, before)
    if suffix != ".jpg":  # lossless (cv2 writes WebP losslessly by default)
        np.testing.assert_array_equal(image, noise_image())


@pytest.mark.parametrize(
    "suffix, reason",
    [
        (".jpg", "JPEG data is truncated or corrupt: premature end of JPEG data"),
        (".png", "PNG data is truncated or corrupt: it does not end with an IEND chunk"),
        (".webp", "WEBP data is truncated or corrupt: .* bytes of the .* its RIFF header declares"),
        (".tif", ".*its header is corrupt or truncated"),
        (".bmp", "BMP data is truncated or corrupt"),
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow, on the cut TIFF
def test_images_cut_to_a_third_are_refused(tmp_path, suffix, reason):
    """cv2.imread filled a third of a JPEG with grey and let it through; every format fails now."""
    data = write_rgb(tmp_path / f"a{suffix}", noise_image()).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptImageError, match=f"cannot decode image '.*cut{suffix}': {reason}"):
        load_image(cut)
    with pytest.raises(CorruptImageError, match=reason):
        load_original(cut)
    with pytest.raises(CorruptImageError, match=f"cut{suffix}"):
        _ = next(s for s in read_folder(tmp_path) if s.key == cut.name).image


def test_jpeg_needs_its_eoi_marker_but_may_carry_trailing_data(tmp_path):
    data = write_rgb(tmp_path / "a.jpg", noise_image()).read_bytes()
    (tmp_path / "no_eoi.jpg").write_bytes(data[:-2])
    with pytest.raises(CorruptImageError, match="no_eoi.jpg': .*premature end of JPEG data"):
        load_image(tmp_path / "no_eoi.jpg")
    (tmp_path / "trailer.jpg").write_bytes(data + b"\x00" * 64 + b"camera trailer")
    trailer = load_image(tmp_path / "trailer.jpg")
    np.testing.assert_array_equal(trailer, load_image(tmp_path / "a.jpg"))
    progressive = write_rgb(tmp_path / "p.jpg", noise_image(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    restarts = write_rgb(tmp_path / "r.jpg", noise_image(), cv2.IMWRITE_JPEG_RST_INTERVAL, 2)
    for path in (progressive, restarts):
        assert load_image(path).shape == (96, 128, 3)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(CorruptImageError, match="premature end of JPEG data"):
            load_image(path)


def test_png_cut_in_its_last_chunk_is_refused(tmp_path):
    data = write_rgb(tmp_path / "a.png", noise_image()).read_bytes()
    (tmp_path / "a.png").write_bytes(data[:-3])  # the pixels are whole, the IEND chunk is not
    with pytest.raises(CorruptImageError, match="a.png': PNG .*IEND"):
        load_original(tmp_path / "a.png")


def test_animated_and_multipage_images_are_refused(tmp_path):
    frames = [Image.fromarray(noise_image(seed=seed)) for seed in range(2)]
    for name in ("anim.webp", "anim.png", "pages.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        with pytest.raises(CorruptImageError, match=f"{name}': .* with 2 frames"):
            load_original(tmp_path / name)


@pytest.mark.parametrize(
    "name, pixels, shape",
    [
        ("rgb16.png", noise_image(dtype=np.uint16), (96, 128, 3)),
        ("rgba16.png", noise_image(channels=4, dtype=np.uint16), (96, 128, 4)),
        ("gray16.png", noise_image(channels=1, dtype=np.uint16), (96, 128)),
        ("gray16.tif", noise_image(channels=1, dtype=np.uint16), (96, 128)),
        ("rgb16.tif", noise_image(dtype=np.uint16), (96, 128, 3)),
        ("gray.png", noise_image(channels=1), (96, 128)),
        ("rgba.png", noise_image(channels=4), (96, 128, 4)),
        ("rgba.webp", noise_image(channels=4), (96, 128, 4)),
        ("rgba.tif", noise_image(channels=4), (96, 128, 4)),
        ("gray.jpg", noise_image(channels=1), (96, 128)),
    ],
)
def test_original_format_round_trips_through_restore(tmp_path, name, pixels, shape):
    """Dtype and channels survive load_original -> to_rgb8 -> restore -> cv2.imwrite; pixels
    outside the anonymized block stay bit-identical, alpha included."""
    path = write_rgb(tmp_path / name, pixels)
    original = load_original(path)
    assert original.dtype == pixels.dtype and original.shape == shape
    if not name.endswith(".jpg"):
        np.testing.assert_array_equal(original, pixels)
    np.testing.assert_array_equal(load_original(read_folder(tmp_path)[0].path), original)
    view = to_rgb8(original)
    assert view.dtype == np.uint8 and view.shape == (96, 128, 3)
    assert not np.shares_memory(view, original)
    if not name.endswith(".tif") or original.dtype == np.uint8:  # cv2 rounds 16-bit RGB TIFF
        np.testing.assert_array_equal(view, load_image(path))
        np.testing.assert_array_equal(
            view, cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        )
    changed = np.zeros((96, 128), bool)
    changed[20:50, 30:70] = True
    anonymized = view.copy()
    anonymized[changed] = (200, 40, 90)
    restored = restore(original, anonymized, changed)
    assert restored.dtype == original.dtype and restored.shape == original.shape
    np.testing.assert_array_equal(restored[~changed], original[~changed])
    np.testing.assert_array_equal(to_rgb8(restored)[~changed], view[~changed])
    block = restored[25, 35]
    top = np.iinfo(original.dtype).max
    scale = 257 if original.dtype == np.uint16 else 1
    if original.ndim == 2:
        gray = cv2.cvtColor(np.uint8([[[200, 40, 90]]]), cv2.COLOR_RGB2GRAY)[0, 0]
        assert block == int(gray) * scale
    else:
        np.testing.assert_array_equal(block[:3], np.array([200, 40, 90]) * scale)
        if original.shape[2] == 4:
            assert block[3] == top  # opaque: the copy shows what the anonymizer made
    copy = write_rgb(tmp_path / f"copy_{name}", restored)  # the drop-in copy
    written = load_original(copy)
    assert written.dtype == original.dtype and written.shape == original.shape
    if not name.endswith(".jpg"):
        np.testing.assert_array_equal(written, restored)


def test_restore_keeps_every_altered_pixel_and_the_whole_region():
    dark = np.full((10, 12), 40, np.uint16)  # 16-bit detail below the 8-bit view: all black
    dark[2:5, 3:7] = 200
    view = to_rgb8(dark)
    assert not view.any()
    changed = np.zeros((10, 12), bool)
    changed[2:5, 3:7] = True
    restored = restore(dark, view.copy(), changed)  # the anonymizer left the view unchanged
    assert not restored[changed].any() and (restored[~changed] == 40).all()
    anonymized = view.copy()
    anonymized[9, 11] = 255  # outside `changed`: still taken
    assert restore(dark, anonymized, np.zeros((10, 12), bool))[9, 11] == 65535
    with pytest.raises(ValueError, match="expected uint8 \\(10, 12, 3\\)"):
        restore(dark, view[:5], changed)
    with pytest.raises(ValueError, match="expected bool"):
        restore(dark, view, changed.astype(np.uint8))
    with pytest.raises(ValueError, match="expected uint8 or uint16"):
        to_rgb8(np.zeros((4, 4, 3), np.float32))


def test_restore_takes_rgb_from_under_transparent_pixels():
    """Alpha is dropped, never composited: a person under alpha = 0 is seen and replaced."""
    rgba = noise_image(channels=4)
    rgba[..., 3] = 0
    view = to_rgb8(rgba)
    np.testing.assert_array_equal(view, rgba[..., :3])
    changed = np.zeros(view.shape[:2], bool)
    changed[:10] = True
    anonymized = view.copy()
    anonymized[:10] = 0
    restored = restore(rgba, anonymized, changed)
    assert (restored[:10] == (0, 0, 0, 255)).all()
    np.testing.assert_array_equal(restored[10:], rgba[10:])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = noise_image(40, 60, channels=4)
    Image.fromarray(stored).save(tmp_path / "a.png", exif=exif)
    with Image.open(tmp_path / "a.png") as image:
        upright = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(load_original(tmp_path / "a.png"), upright)
    Image.fromarray(stored[..., :3]).save(tmp_path / "a.jpg", exif=exif, quality=95)
    before = cv2.cvtColor(cv2.imread(str(tmp_path / "a.jpg")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(load_image(tmp_path / "a.jpg"), before)  # as cv2.imread


def test_folder_reads_webp_and_tiff_and_lists_what_it_ignores(tmp_path):
    for name in ("a.webp", "b/c.TIF", "b/d.tiff", "e.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_rgb(tmp_path / name, noise_image(8, 8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "b/clip.mp4").write_bytes(b"\0")
    (tmp_path / "b/gone.jpg").symlink_to(tmp_path / "missing.jpg")  # broken: not read
    assert [s.key for s in read_folder(tmp_path)] == ["a.webp", "b/c.TIF", "b/d.tiff", "e.png"]
    assert ignored_files(tmp_path, IMAGE_SUFFIXES) == [
        ".DS_Store",
        "b/clip.mp4",
        "b/gone.jpg",
        "notes.txt",
    ]
    assert [v.key for v in read_videos(tmp_path)] == ["b/clip.mp4"]
    assert "b/clip.mp4" not in ignored_files(tmp_path, VIDEO_SUFFIXES)
    assert "a.webp" in ignored_files(tmp_path, VIDEO_SUFFIXES)
    with pytest.raises(FileNotFoundError, match="nothere"):
        ignored_files(tmp_path / "nothere", IMAGE_SUFFIXES)


VIDEO_FRAMES = 24


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """24-frame mpeg4 clips (8 fps) in each container, whole and cut to a third of their bytes."""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)  # raw noise: big frames, so the cut falls in the frame data
    frames = rng.integers(0, 256, (VIDEO_FRAMES, 64, 64, 3), dtype=np.uint8)
    paths = {}
    for name, options in [
        ("clip.mkv", {}),
        ("clip.mp4", {}),
        ("clip.avi", {}),
        ("faststart.mp4", {"movflags": "faststart"}),  # the index first: only the data is cut
    ]:
        path = folder / name
        with av.open(str(path), "w", options=options) as container:
            stream = container.add_stream("mpeg4", rate=8)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for pixels in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
            container.mux(stream.encode())
        cut = folder / f"cut_{name}"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        paths[name], paths[f"cut_{name}"] = path, cut
    return paths


@pytest.mark.parametrize("name", ["clip.mkv", "clip.mp4", "clip.avi", "faststart.mp4"])
def test_videos_cut_to_a_third_are_refused(videos, name):
    assert len(list(decode_video(videos[name]))) == VIDEO_FRAMES
    with pytest.raises(CorruptImageError, match=f"cannot decode video '.*cut_{name}'"):
        list(decode_video(videos[f"cut_{name}"]))


@pytest.mark.parametrize(
    "name, message",
    [
        ("clip.mkv", r"decoded \d of about 24 frames \(3 s at 8 fps\): truncated"),
        ("clip.avi", r"decoded \d of 24 frames: truncated"),
        ("faststart.mp4", r"decoded \d of 24 frames: truncated"),
    ],
)
def test_video_frame_count_is_checked_against_the_container(videos, name, message, monkeypatch):
    """Even when FFmpeg stays silent, fewer frames than the container declares fail."""

    @contextlib.contextmanager
    def silent():
        yield []

    monkeypatch.setattr(readers, "_ffmpeg_logs", silent)
    assert len(list(decode_video(videos[name]))) == VIDEO_FRAMES
    with pytest.raises(CorruptImageError, match=f"cut_{name}': {message}"):
        list(decode_video(videos[f"cut_{name}"]))


def test_ffmpeg_logging_is_restored_and_repeats_are_not_lost(videos):
    level, repeats = av.logging.get_level(), av.logging.get_skip_repeated()
    for _ in range(2):  # the same FFmpeg line twice: PyAV would hold the second one back
        with pytest.raises(CorruptImageError, match="File ended prematurely"):
            list(decode_video(videos["cut_clip.mkv"]))
    assert (av.logging.get_level(), av.logging.get_skip_repeated()) == (level, repeats)


def test_a_jpeg_that_decodes_only_with_a_libjpeg_warning_is_refused(tmp_path, capfd):
    import skimage.data

    ok, data = cv2.imencode(".jpg", skimage.data.astronaut())
    assert ok
    data = data.tobytes()
    middle = len(data) // 2
    path = tmp_path / "restart.jpg"  # a stray restart marker inside the scan
    path.write_bytes(data[:middle] + b"\xff\xd3" + data[middle:])
    assert cv2.imread(str(path)) is not None  # cv2 alone decodes it, printing a warning
    with pytest.raises(CorruptImageError, match="the decoder warned 'Corrupt JPEG data"):
        load_original(path)
    capfd.readouterr()
    (tmp_path / "whole.jpg").write_bytes(data)
    load_original(tmp_path / "whole.jpg")  # an intact file passes, and nothing is printed
    assert capfd.readouterr().err == ""
