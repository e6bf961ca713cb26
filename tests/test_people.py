"""People without annotations: the person model finds them for --region body on plain folders
and videos, fail closed where it finds no one."""

import json

import cv2
import numpy as np
import pytest
from photo_fixtures import PHOTOS, face_similarity, photo_person

from jaxpriv.anonymize import pipeline, readers, runner


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """people/astronaut.png (one person), people/pair.png (two, side by side), empty/wall.png."""
    root = tmp_path_factory.mktemp("photos")
    astronaut, _ = photo_person("astronaut")
    hopper, _ = photo_person("grace_hopper")
    height = astronaut.shape[0]
    hopper = cv2.resize(hopper, (round(hopper.shape[1] * height / hopper.shape[0]), height))
    images = {
        "people/astronaut.png": astronaut,
        "people/pair.png": np.concatenate([astronaut, hopper], axis=1),
        "empty/wall.png": np.full((256, 256, 3), 120, np.uint8),
    }
    for name, image in images.items():
        (root / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root, images


def test_every_person_of_a_plain_folder_is_masked_out_and_no_one_is_skipped(photo_folder, tmp_path):
    root, images = photo_folder
    options = pipeline.Options(region="body", method="maskout", size=32, test_fraction=0.0)
    summary = runner.run(readers.read_folder(root), tmp_path / "out", options, workers=1)
    assert summary["nothing_found"] == ["empty/wall.png"]
    assert summary["inputs"] == {"anonymized": 2, "kept": 0, "skipped": 1}
    reports = [json.loads(line) for line in (tmp_path / "out" / "inputs.jsonl").open()]
    found = {r["key"]: (r.get("source"), r.get("regions")) for r in reports}
    assert found["people/astronaut.png"] == ("person model", 1)
    assert found["people/pair.png"] == ("person model", 2)
    outline = np.zeros(images["people/astronaut.png"].shape[:2], np.uint8)
    cv2.fillPoly(outline, [np.array(PHOTOS["astronaut"][0], np.int32)], 1)
    for name, halves in (("people/astronaut.png", 1), ("people/pair.png", 2)):
        copy = readers.load_image(tmp_path / "out" / "images" / name)
        masked = (copy == 0).all(axis=-1)  # maskout fills with black
        person = outline.astype(bool)
        assert masked[:, : outline.shape[1]][person].mean() > 0.8  # the astronaut, in both
        if halves == 2:  # and Grace Hopper, right of her
            assert masked[:, outline.shape[1] :].mean() > 0.3
        assert masked[:40, :40].mean() < 0.05  # the top left corner is not a person


def test_every_person_of_a_plain_folder_becomes_an_avatar(photo_folder, tmp_path):
    """No annotations: the person model finds both people of the pair, each becomes an avatar
    posed from its 2-D and world keypoints, and neither real face remains."""
    root, images = photo_folder
    options = pipeline.Options(region="body", method="avatar", size=32, test_fraction=0.0)
    summary = runner.run(readers.read_folder(root), tmp_path / "out", options, workers=1)
    assert summary["inputs"] == {"anonymized": 2, "kept": 0, "skipped": 1}
    pair = images["people/pair.png"]
    copy = readers.load_image(tmp_path / "out" / "images" / "people/pair.png")
    scale = pair.shape[0] / photo_person("grace_hopper")[0].shape[0]
    x0, y0, x1, y1 = (v * scale for v in PHOTOS["grace_hopper"][2])
    astronaut_width = images["people/astronaut.png"].shape[1]
    faces = [PHOTOS["astronaut"][2], (x0 + astronaut_width, y0, x1 + astronaut_width, y1)]
    for face in faces:
        assert face_similarity(pair, pair, face) > 0.99
        assert face_similarity(copy, pair, face) < 0.5  # the avatar's face is not theirs


def test_people_in_a_video_keep_one_track_each(photo_folder, tmp_path):
    from test_anonymize_pipeline import write_video

    _, images = photo_folder
    pair = images["people/pair.png"]
    width = pair.shape[1] - 48  # a camera panning right over the two people
    frames = [np.ascontiguousarray(pair[:, 6 * i : 6 * i + width]) for i in range(8)]
    write_video(tmp_path / "in" / "talk" / "pan.mp4", frames)
    options = pipeline.Options(
        region="body", method="maskout", size=32, clip_frames=4, frame_stride=1, test_fraction=0
    )
    summary = runner.run(readers.read_videos(tmp_path / "in"), tmp_path / "out", options, workers=1)
    assert summary["records"]["train"] == 2 and summary["nothing_found"] == []
    (report,) = [json.loads(line) for line in (tmp_path / "out" / "inputs.jsonl").open()]
    assert (report["source"], report["regions"]) == ("person model", 2)  # two tracks, not more
    assert (report["frames"], report["frames_with_regions"]) == (8, 8)
