"""Dataset layouts: real fixture folders read into labelled units, and actionable errors."""

import json
import re

import av
import cv2
import numpy as np
import pytest
from layout_fixtures import H, W, make_layout

from jaxpriv.anonymize import layouts, pipeline, readers
from jaxpriv.anonymize.layouts import LAYOUTS, LayoutError, read
from jaxpriv.data import schema

EXPECTED = {
    "ucf101": {
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi": "ApplyEyeMakeup",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.avi": "ApplyEyeMakeup",
        "HandstandPushups/v_HandStandPushups_g01_c01.avi": "HandstandPushups",
        "HandstandPushups/v_HandStandPushups_g02_c01.avi": "HandstandPushups",
    },
    "ntu60": {
        "nturgb+d_rgb/S001C001P001R001A001_rgb.avi": "A001",
        "nturgb+d_rgb/S001C001P001R001A060_rgb.avi": "A060",
        "nturgb+d_rgb/S001C002P001R001A001_rgb.avi": "A001",
        "nturgb+d_rgb/S001C002P001R001A060_rgb.avi": "A060",
    },
    "toyota_smarthome": {
        "mp4/Cook.Cleandishes_p02_r00_v01_c03.mp4": "Cook.Cleandishes",
        "mp4/Cook.Cleandishes_p03_r00_v01_c03.mp4": "Cook.Cleandishes",
        "mp4/Walk_p02_r00_v01_c03.mp4": "Walk",
        "mp4/Walk_p03_r00_v01_c03.mp4": "Walk",
    },
    "coco2017": {
        "train2017/000000000001.jpg": "0",
        "train2017/000000000002.jpg": "0",
        "train2017/000000000003.jpg": "1",  # and a crowd
        "train2017/000000000004.jpg": "1",
        "train2017/000000000005.jpg": "2",
        "train2017/000000000006.jpg": "2",
        "train2017/000000000007.jpg": "3+",
        "train2017/000000000008.jpg": "3+",
    },
    "cityscapes": {
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png": "0",
        "leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit.png": "1",
        "leftImg8bit/train/aachen/aachen_000004_000019_leftImg8bit.png": "2",
        "leftImg8bit/train/aachen/aachen_000006_000019_leftImg8bit.png": "3+",
        "leftImg8bit/train/bochum/bochum_000001_000019_leftImg8bit.png": "0",
        "leftImg8bit/train/bochum/bochum_000003_000019_leftImg8bit.png": "1",
        "leftImg8bit/train/bochum/bochum_000005_000019_leftImg8bit.png": "2",
        "leftImg8bit/train/bochum/bochum_000007_000019_leftImg8bit.png": "3+",
    },
    "bdd100k": {
        "images/10k/train/00000000-00000000.jpg": "0",
        "images/10k/train/00000001-00001eef.jpg": "0",
        "images/10k/train/00000002-00003dde.jpg": "1",
        "images/10k/train/00000003-00005ccd.jpg": "1",
        "images/10k/train/00000004-00007bbc.jpg": "2",
        "images/10k/train/00000005-00009aab.jpg": "2",
        "images/10k/train/00000006-0000b99a.jpg": "3+",
        "images/10k/train/00000007-0000d889.jpg": "3+",
    },
}
VIDEO_LAYOUTS = ["ucf101", "ntu60", "toyota_smarthome"]
IMAGE_LAYOUTS = ["coco2017", "cityscapes", "bdd100k"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """One untouched fixture of every layout, shared by the tests that only read."""
    base = tmp_path_factory.mktemp("layouts")
    return {name: make_layout(name, base / name) for name in LAYOUTS}


def test_registry_describes_each_layout():
    assert list(LAYOUTS) == VIDEO_LAYOUTS + IMAGE_LAYOUTS
    for name, layout in LAYOUTS.items():
        assert layout.name == name
        assert layout.kind == ("video" if name in VIDEO_LAYOUTS else "image")
        assert layout.task and "\n" not in layout.task
        assert layout.tree.startswith("ROOT/")
    assert "v_<Class>_gXX_cYY.avi" in LAYOUTS["ucf101"].tree
    assert "SsssCcccPpppRrrrAaaa_rgb.avi" in LAYOUTS["ntu60"].tree
    assert "person_keypoints_train2017.json" in LAYOUTS["coco2017"].tree
    assert "python -m bdd100k.label.to_coco -m ins_seg" in LAYOUTS["bdd100k"].tree


@pytest.mark.parametrize("name", list(EXPECTED))
def test_read_keys_labels_and_paths(fixtures, name):
    root = fixtures[name]
    units = read(name, root)
    assert {unit.key: unit.label for unit in units} == EXPECTED[name]
    assert [unit.key for unit in units] == list(EXPECTED[name])  # in a stable order
    unit_type = readers.Video if name in VIDEO_LAYOUTS else readers.Sample
    assert all(type(unit) is unit_type for unit in units)
    assert all(unit.path == (root / unit.key).absolute() and unit.path.is_file() for unit in units)
    again = read(name, str(root))  # a str root works the same
    assert [(u.key, u.path, u.label) for u in again] == [(u.key, u.path, u.label) for u in units]


def test_video_units_are_listed_not_annotated(fixtures):
    for name in VIDEO_LAYOUTS:
        for video in read(name, fixtures[name]):
            assert video.frames is None and video.persons is None  # faces come from a detector


def test_coco_persons_have_masks_and_keypoints_and_crowds_are_not_counted(fixtures):
    samples = {s.key: s for s in read("coco2017", fixtures["coco2017"])}
    three = samples["train2017/000000000007.jpg"].persons
    assert [p.crowd for p in three] == [False] * 3
    assert [p.box for p in three] == [(2, 6, 16, 42), (22, 6, 36, 42), (42, 6, 56, 42)]
    assert all(p.keypoints.shape == (17, 3) and p.mask_shape == (H, W) for p in three)
    one = samples["train2017/000000000003.jpg"].persons
    assert [p.crowd for p in one] == [False, True]


def test_cityscapes_counts_persons_and_riders_not_crowds_or_cars(fixtures):
    samples = {s.key: s for s in read("cityscapes", fixtures["cityscapes"])}
    two = samples["leftImg8bit/train/aachen/aachen_000004_000019_leftImg8bit.png"].persons
    assert sorted(p.source_id for p in two) == ["24000", "25001"]  # a person and a rider
    one = samples["leftImg8bit/train/aachen/aachen_000002_000019_leftImg8bit.png"].persons
    assert sorted((p.source_id, p.crowd) for p in one) == [("24", True), ("24000", False)]


def test_bdd100k_reads_pedestrians_and_riders_not_cars(fixtures):
    samples = {s.key: s for s in read("bdd100k", fixtures["bdd100k"])}
    assert samples["images/10k/train/00000000-00000000.jpg"].persons == []  # only a car
    two = samples["images/10k/train/00000004-00007bbc.jpg"].persons
    assert [p.box for p in two] == [(2, 6, 16, 42), (22, 6, 36, 42)]  # pedestrian, rider
    assert two[1].mask[6:42, 22:36].all() and two[1].mask.sum() == 14 * 36  # compressed RLE


@pytest.mark.parametrize("name", list(EXPECTED))
def test_read_decodes_no_image_or_video(fixtures, name, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"decoded during read: {args}")

    imread = cv2.imread

    def instance_maps_only(path, *args):  # Cityscapes persons come from the instance maps
        if not str(path).endswith("_gtFine_instanceIds.png"):
            refuse(path)
        return imread(path, *args)

    monkeypatch.setattr(readers, "decode_video", refuse)
    monkeypatch.setattr(readers, "load_image", refuse)
    monkeypatch.setattr(av, "open", refuse)
    monkeypatch.setattr(cv2, "imread", instance_maps_only)
    assert len(read(name, fixtures[name])) == len(EXPECTED[name])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_fixtures_run_through_the_anonymization_pipeline(fixtures, name, tmp_path):
    """The units of each layout are what the pipeline takes: one of each is anonymized."""
    units = read(name, fixtures[name])
    no_faces = lambda image: []  # noqa: E731  (the tiny fixtures have no detectable faces)
    if name in VIDEO_LAYOUTS:
        assert units[0].frame_rate == 8
        assert len(list(units[0].decode())) == 8
        options = pipeline.Options(clip_frames=4, frame_stride=1, size=16, if_none="keep")
        records, found = pipeline.process_video(units[0], options, no_faces, tmp_path)
        assert [r["key"] for r in records] == [f"{units[0].key}#0000", f"{units[0].key}#0001"]
        assert (found["source"], found["regions"], found["frames"]) == ("detector", 0, 8)
        assert records[0][schema.VIDEO].shape == (4, 16, 16, 3)
    else:
        sample = units[-1]  # 3 persons
        region = "face" if name == "coco2017" else "body"  # keypoints only in COCO
        options = pipeline.Options(region=region, size=16)
        (record,), found = pipeline.process_sample(sample, options, no_faces, tmp_path)
        assert record["label"] == "3+" and record["region"].any()
        assert found == {"source": "annotations", "regions": 3}
        assert (tmp_path / "images" / sample.key).is_file()


# --- errors -----------------------------------------------------------------------------------


def test_unknown_layout_lists_the_known_ones(tmp_path):
    known = "ucf101, ntu60, toyota_smarthome, coco2017, cityscapes, bdd100k"
    with pytest.raises(ValueError, match=f"unknown dataset layout 'kinetics': .*{known}"):
        read("kinetics", tmp_path)


def test_missing_root_names_it_and_shows_the_tree(tmp_path):
    with pytest.raises(LayoutError) as error:
        read("ucf101", tmp_path / "UCF-101")
    assert isinstance(error.value, FileNotFoundError)
    message = str(error.value)
    assert message.startswith(
        f"ucf101 layout: dataset root folder not found: '{tmp_path / 'UCF-101'}'\n"
        "expected layout:\n  ROOT/ "
    )
    assert "    v_<Class>_gXX_cYY.avi" in message
    assert error.value.layout is LAYOUTS["ucf101"]


def test_empty_root_has_no_videos(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    expected = f"ucf101 layout: no videos found under '{tmp_path}' (expected ROOT/<Class>/v_"
    with pytest.raises(LayoutError, match=re.escape(expected)):
        read("ucf101", tmp_path)


def test_ucf101_lists_misnamed_files(tmp_path):
    root = make_layout("ucf101", tmp_path / "UCF-101")
    apply = root / "ApplyEyeMakeup"
    (apply / "v_ApplyEyeMakeup_g01_c01.avi").rename(root / "HandstandPushups/v_Apply_g01_c01.avi")
    (apply / "v_ApplyEyeMakeup_g02_c01.avi").rename(root / "v_ApplyEyeMakeup_g02_c01.avi")
    expected = (
        "2 of 4 video files are not named ROOT/<Class>/v_<Class>_gXX_cYY.avi: "
        "HandstandPushups/v_Apply_g01_c01.avi, v_ApplyEyeMakeup_g02_c01.avi\n"
    )
    with pytest.raises(LayoutError, match=re.escape(expected)):
        read("ucf101", root)


def test_at_most_five_misnamed_files_are_listed(tmp_path):
    root = make_layout("ucf101", tmp_path, per_class=1)
    for i in range(7):
        (root / f"ApplyEyeMakeup/clip{i}.avi").write_bytes(b"")
    with pytest.raises(LayoutError, match=r"clip4\.avi, \.\.\. \(2 more\)\n"):
        read("ucf101", root)


def test_root_one_level_too_high_suggests_the_dataset_folder(tmp_path):
    make_layout("ntu60", tmp_path / "downloads" / "NTU")
    missing = tmp_path / "downloads" / "nturgb+d_rgb"
    found = tmp_path / "downloads" / "NTU"
    with pytest.raises(
        LayoutError, match=re.escape(f"'{missing}' not found (found it under '{found}'")
    ):
        read("ntu60", tmp_path / "downloads")


@pytest.mark.parametrize("name", ["S018C001P008R001A001_rgb.avi", "S001C001P001R001A061_rgb.avi"])
def test_ntu60_refuses_ntu120_videos(tmp_path, name):
    root = make_layout("ntu60", tmp_path, per_class=1)
    (root / "nturgb+d_rgb" / name).write_bytes(b"")
    with pytest.raises(LayoutError, match=re.escape("1 video(s) of NTU RGB+D 120")) as error:
        read("ntu60", root)
    assert f"move them out of ROOT/nturgb+d_rgb: nturgb+d_rgb/{name}\n" in str(error.value)


@pytest.mark.parametrize("name", ["S001C001P001R001A001.avi", "S1C1P1R1A1_rgb.avi", "x.mp4"])
def test_ntu60_refuses_bad_names(tmp_path, name):
    root = make_layout("ntu60", tmp_path, per_class=1)
    (root / "nturgb+d_rgb" / name).write_bytes(b"")
    expected = f"1 of 3 video files are not named ROOT/nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi: nturgb+d_rgb/{name}"
    with pytest.raises(LayoutError, match=re.escape(expected)):
        read("ntu60", root)


def test_toyota_smarthome_refuses_bad_names(tmp_path):
    root = make_layout("toyota_smarthome", tmp_path, per_class=1)
    (root / "mp4" / "Cook_p02.mp4").write_bytes(b"")
    with pytest.raises(
        LayoutError, match=r"not named ROOT/mp4/<Activity>_pNN_rNN_vNN_cNN\.mp4: mp4/Cook_p02\.mp4"
    ):
        read("toyota_smarthome", root)


@pytest.mark.parametrize(
    "name, missing",
    [
        ("coco2017", "annotations/person_keypoints_train2017.json"),
        ("coco2017", "train2017"),
        ("bdd100k", "labels/ins_seg/coco/ins_seg_train_coco.json"),
        ("cityscapes", "gtFine/train"),
    ],
)
def test_missing_annotations_or_images_are_named(tmp_path, name, missing):
    root = make_layout(name, tmp_path / "data", per_class=1)
    path = root / missing
    path.rename(tmp_path / "moved")
    with pytest.raises(LayoutError, match=re.escape(f"{name} layout: '{path}' not found\n")):
        read(name, root)


def test_missing_image_of_the_json_is_an_annotation_error(tmp_path):
    root = make_layout("coco2017", tmp_path, per_class=1)
    (root / "train2017/000000000002.jpg").unlink()
    with pytest.raises(readers.AnnotationError, match="000000000002.jpg: image file not found"):
        read("coco2017", root)


def test_missing_instance_map_is_an_annotation_error(tmp_path):
    root = make_layout("cityscapes", tmp_path, per_class=1)
    (root / "gtFine/train/bochum/bochum_000001_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(
        readers.AnnotationError,
        match="bochum_000001_000019_leftImg8bit.png: instance map not found",
    ):
        read("cityscapes", root)


def test_cityscapes_without_images_is_a_layout_error(tmp_path):
    (tmp_path / "leftImg8bit/train/aachen").mkdir(parents=True)
    (tmp_path / "gtFine/train").mkdir(parents=True)
    with pytest.raises(LayoutError, match="cityscapes layout: no Cityscapes images"):
        read("cityscapes", tmp_path)


def test_bdd100k_json_without_its_person_categories(tmp_path):
    root = make_layout("bdd100k", tmp_path, per_class=1)
    path = root / "labels/ins_seg/coco/ins_seg_train_coco.json"
    data = json.loads(path.read_text())
    data["categories"] = [c for c in data["categories"] if c["name"] not in ("pedestrian", "rider")]
    path.write_text(json.dumps(data))
    with pytest.raises(readers.AnnotationError, match="no category named 'pedestrian' or 'rider'"):
        read("bdd100k", root)


def test_bdd100k_legacy_person_category_is_read(tmp_path):
    """Older BDD100K instance labels call pedestrians "person"."""
    root = make_layout("bdd100k", tmp_path, per_class=1)
    path = root / "labels/ins_seg/coco/ins_seg_train_coco.json"
    data = json.loads(path.read_text())
    data["categories"][0]["name"] = "person"
    path.write_text(json.dumps(data))
    assert [s.label for s in read("bdd100k", root)] == ["0", "1", "2", "3+"]


def test_json_listing_no_images_is_a_layout_error(tmp_path):
    root = make_layout("coco2017", tmp_path, per_class=1)
    path = root / "annotations/person_keypoints_train2017.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "images": [], "annotations": []}))
    with pytest.raises(
        LayoutError, match=re.escape(f"coco2017 layout: no images found under '{root}'")
    ):
        read("coco2017", root)


def test_person_count_labels():
    crowd, person = readers.Person((0, 0, 1, 1), crowd=True), readers.Person((0, 0, 1, 1))
    assert [layouts._person_count([person] * n + [crowd]) for n in range(6)] == [
        "0",
        "1",
        "2",
        "3+",
        "3+",
        "3+",
    ]
    assert np.array_equal(layouts.PERSON_COUNT_LABELS, ["0", "1", "2", "3+"])


def test_one_registry_of_input_formats_for_the_cli_and_the_experiments(fixtures, tmp_path):
    from jaxpriv import cli

    assert layouts.FORMATS == ("coco", "folder", "video", "synthetic", *LAYOUTS)
    assert len(set(layouts.FORMATS)) == len(layouts.FORMATS)
    (action,) = [a for a in cli.build_parser()._actions if a.dest == "command"]
    (format_flag,) = [a for a in action.choices["anonymize"]._actions if a.dest == "format"]
    assert format_flag.choices == list(layouts.FORMATS)
    units = layouts.read_input("ucf101", fixtures["ucf101"])
    assert [u.key for u in units] == [u.key for u in read("ucf101", fixtures["ucf101"])]
    with pytest.raises(ValueError, match="^input format folder needs an input folder"):
        layouts.read_input("folder", None)
    with pytest.raises(
        ValueError, match="^unknown input format 'imagenet': known formats are coco"
    ):
        layouts.read_input("imagenet", tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    assert layouts.ignored_files("folder", tmp_path) == ["a/notes.txt"]
