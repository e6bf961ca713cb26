"""Avatar anonymization as a whole: identities, video tracks, real photographs, the pipeline.

The steps (body, pose, render, compose) have their own tests; these check how `Avatars` puts
them together and what `jaxpriv anonymize --method avatar` writes, on real photographs
(`photo_fixtures`) and on the pipeline's inputs.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data
from layout_fixtures import coco_arguments, make_layout
from photo_fixtures import PHOTOS, face_similarity, photo_person

from jaxpriv.anonymize import detect, pipeline, readers
from jaxpriv.anonymize.avatar import anonymizer, pose
from jaxpriv.anonymize.avatar.camera import Camera
from jaxpriv.data import pipeline as data_pipeline
from jaxpriv.data import sensitivity

SAME_FACE = 0.5  # face_similarity above which a face is the real person's (blurred: 0.9)


@pytest.fixture(scope="module")
def avatars():
    from jaxpriv.anonymize.avatar import body

    return anonymizer.Avatars(body.make_body("anny"), seed=0)


def test_an_identity_depends_on_the_seed_and_key_only(avatars):
    body = avatars.body
    first = anonymizer.draw_identity(body, 0, "clip.mp4@3")
    again = anonymizer.draw_identity(body, 0, "clip.mp4@3")
    other = anonymizer.draw_identity(body, 0, "clip.mp4@4")
    reseeded = anonymizer.draw_identity(body, 1, "clip.mp4@3")
    assert first.colours == again.colours and first.shape.equal(again.shape)
    assert first.colours != other.colours and first.colours != reseeded.colours
    assert first.shape.shape == body.neutral_shape.shape


def test_body_parts_skin_head_clothes_and_shoes(avatars):
    import torch

    body, labels = avatars.body, avatars.parts
    with torch.no_grad():
        vertices, _ = body(body.neutral_pose[None], body.neutral_shape[None], torch.zeros(1, 3))
    assert labels.shape == vertices.shape[1:2]
    counts = np.bincount(labels, minlength=len(anonymizer.PARTS))
    assert (counts > 20).all()  # every part has a real share of the mesh
    y = vertices[0, :, 1].numpy()  # y points down
    assert labels[y.argmin()] == anonymizer.PARTS.index("skin")  # the top of the head
    assert labels[y.argmax()] == anonymizer.PARTS.index("shoes")  # the soles


def test_a_video_track_keeps_one_identity_and_a_smoothed_pose(avatars):
    # A jumper whose frames, fitted one by one, take different 3-D solutions (arms raised up or
    # forward): their average would fit no frame (errors of 5 px without the temporal term).
    video = readers.read_synthetic(8, seed=0, frames=6, size=32)[4]
    plan = avatars.plan_video(video.persons, video.frames.shape[1:], video.key)
    assert [len(frame) for frame in plan] == [1] * 6
    identities = [frame[0][1] for frame in plan]
    assert all(identity is identities[0] for identity in identities)
    planned = np.stack([frame[0][0].translation[0].numpy() for frame in plan])
    camera = Camera.for_image(32, 32)
    shapes = identities[0].shape.expand(6, -1)
    persons = [frame_persons[0] for frame_persons in video.persons]
    raw = avatars.fit(persons, camera, shapes, anonymizer.TEMPORAL)
    smoothed = pose.smooth_poses([raw[i] for i in range(6)], anonymizer.SMOOTHING_WINDOW)
    np.testing.assert_allclose(planned, np.stack([p.translation[0].numpy() for p in smoothed]))
    # The frames agree on one 3-D solution, so the smoothed poses still fit every frame.
    keypoints = np.stack([person.keypoints for person in persons])
    plan_poses = pose.FittedPose.cat([frame[0][0] for frame in plan])
    assert pose.reprojection_error(avatars.body, plan_poses, keypoints, camera).max() < 2.0  # px
    jitter = np.abs(np.diff(planned, 2, axis=0)).sum()
    assert jitter < np.abs(np.diff(raw.translation.numpy(), 2, axis=0)).sum()


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_no_face_of_the_real_person_is_found_after_avatar(avatars, name):
    """Detectors find the person's face before; after, any face found where it was is the
    avatar's (rendered) face, which does not correlate with the real one."""
    image, person = photo_person(name)
    face = PHOTOS[name][2]
    detectors = [detect.make_detector("haar")]
    try:
        detectors.append(detect.make_detector("centerface"))
    except detect.MissingWeightsError:
        pass

    def real_faces(picture) -> list:
        found = [d.box for detector in detectors for d in detector(picture)]
        return [box for box in found if face_similarity(picture, image, box) > SAME_FACE]

    assert any(detect.box_iou(box, face) > 0.3 for box in real_faces(image))
    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)  # still the same person: still found
    assert any(detect.box_iou(box, face) > 0.3 for box in real_faces(blurred))
    planned = avatars.plan(image.shape, [person], name)
    out, avatar_mask = avatars.paint(image, person.mask, planned, seed=0)
    assert real_faces(out) == []
    assert face_similarity(out, image, face) < SAME_FACE
    assert avatar_mask.sum() > 0.3 * person.mask.sum()  # a body stands where the person was
    # No original pixel survives inside the person: each is avatar or inpainted background.
    inside = person.mask
    assert (np.abs(out.astype(int) - image.astype(int)).sum(-1)[inside] > 0).mean() > 0.99


def test_avatar_pixels_are_public_and_the_rest_stays_sensitive(avatars):
    (video,) = readers.read_synthetic(1, seed=1, frames=1, size=32)
    frame, (person,) = video.frames[0], video.persons[0]
    options = pipeline.Options(region="body", method="avatar")
    models = pipeline.Models(options)
    models.avatars = avatars  # the module's avatars (same seed): built once
    region, found = pipeline.find_region([person], frame, options, None)
    assert found == {"source": "annotations", "regions": 1}
    out, public = pipeline.anonymize_image(
        frame, region, options, 0, persons=[person], key=video.key, models=models
    )
    planned = avatars.plan(frame.shape, [person], video.key)
    expected, avatar_mask = avatars.paint(frame, region, planned, seed=0)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(public, avatar_mask)
    assert public.any() and not public.all()
    sensitive = sensitivity.sensitive_mask(public, options.sensitivity)
    np.testing.assert_array_equal(sensitive, ~avatar_mask)


def _train_maskdp(dataset: str, tmp_path, config_file: str) -> dict:
    from jaxpriv import cli

    code = cli.main(
        [
            "train",
            "--config",
            config_file,
            "--workdir",
            str(tmp_path / "run"),
            "--no-progress",
            f"--config.data.name={dataset}",
            "--config.dp.mode=maskdp",
            "--config.train.epochs=1",
            "--config.train.batch_size=4",
            "--config.train.microbatch_size=4",
            "--config.dp.delta=1e-2",
            "--config.model.kwargs.width=8",
            "--config.model.kwargs.depth=1",
            "--config.model.kwargs.mlp_dim=8",
            "--config.model.kwargs.heads=2",
        ]
    )
    assert code in (0, None)
    return json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])


def _anonymize(arguments: list[str], capsys) -> str:
    from jaxpriv import cli

    code = cli.main(
        ["anonymize", "--region", "body", "--method", "avatar", "--workers", "1", "--no-progress"]
        + arguments
    )
    assert code in (0, None)
    return capsys.readouterr().out.split("TFDS dataset: ")[1].split()[0]


def test_synthetic_videos_become_an_avatar_dataset_that_maskdp_trains_on(tmp_path, capsys):
    dataset = _anonymize(
        [
            "--format",
            "synthetic",
            "--num-clips",
            "16",
            "--frames",
            "2",
            "--out",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    source = data_pipeline.load_source(dataset, "train")
    record = source[0]
    assert record["video"].shape == (2, 32, 32, 3)
    public = record["sensitive"] == 0
    assert public.any() and (record["region"].astype(bool) | ~public).all()
    metrics = _train_maskdp(dataset, tmp_path, "configs/video_maskdp.py")
    assert metrics["mode"] == "maskdp"


def test_a_coco_folder_becomes_an_avatar_dataset_that_maskdp_trains_on(tmp_path, capsys):
    root = make_layout("coco2017", tmp_path / "coco")
    dataset = _anonymize(
        coco_arguments(root)
        + [
            "--size",
            "16",
            "--test-fraction",
            "0.3",
            "--out",
            str(tmp_path / "a"),
        ],
        capsys,
    )
    records = list(data_pipeline.load_source(dataset, "train"))
    with_persons = [r for r in records if r["region"].any()]
    assert with_persons and all((r["sensitive"] == 0).any() for r in with_persons)
    metrics = _train_maskdp(dataset, tmp_path, "configs/anonymized_maskdp.py")
    assert metrics["mode"] == "maskdp"


def test_a_video_of_real_people_becomes_an_avatar_dataset_that_maskdp_trains_on(tmp_path, capsys):
    """Two real people (the project's photographs) moving apart, no annotations: the person
    model finds and tracks them, each becomes one avatar, and MaskDP trains on the result."""
    from test_anonymize_pipeline import write_video

    astronaut, _ = photo_person("astronaut")
    hopper, _ = photo_person("grace_hopper")
    hopper = cv2.resize(hopper, (round(hopper.shape[1] * 512 / hopper.shape[0]), 512))
    frames = []
    width = hopper.shape[1]
    for i in range(8):  # the two move apart by 8 px a frame over a grey wall
        frame = np.full((512, 512 + width + 64, 3), 128, np.uint8)
        frame[:, 32 - 4 * i : 544 - 4 * i] = astronaut
        frame[:, 544 + 4 * i : 544 + width] = hopper[:, : width - 4 * i]
        frames.append(frame)
    write_video(tmp_path / "in" / "walk" / "apart.mp4", frames)
    write_video(tmp_path / "in" / "walk" / "together.mp4", frames[::-1])  # the test split
    out = tmp_path / "a"
    argv = ["--format", "video", "--input", str(tmp_path / "in"), "--out", str(out)]
    argv += ["--clip-frames", "2", "--frame-stride", "1", "--size", "32", "--test-fraction", "0.3"]
    dataset = _anonymize(argv, capsys)
    for report in map(json.loads, (out / "inputs.jsonl").open()):  # two tracks in each video
        assert (report["source"], report["regions"], report["frames_with_regions"]) == (
            "person model",
            2,
            8,
        )
    records = list(data_pipeline.load_source(dataset, "train"))
    assert len(records) == 4 and all((r["sensitive"] == 0).any() for r in records)
    copy = next(readers.decode_video(out / "images" / "walk" / "apart.mp4"))
    face = (slice(80, 180), slice(210, 300))  # the astronaut's face: replaced
    assert np.abs(copy[face].astype(int) - frames[0][face].astype(int)).mean() > 20
    metrics = _train_maskdp(dataset, tmp_path, "configs/video_maskdp.py")
    assert metrics["mode"] == "maskdp"


def test_a_still_camera_video_fills_the_person_from_the_background_other_frames_show(
    tmp_path, capsys, monkeypatch
):
    """The astronaut, cut out by her hand mask, walks across a still textured background: the
    background she uncovers fills her hole in the other frames (`compose.fill_from_plate`),
    and what it fills is that background, not a smear (compared with Telea on the same hole)."""
    from test_anonymize_pipeline import write_video

    from jaxpriv.anonymize.avatar import compose

    astronaut, person = photo_person("astronaut")
    astronaut = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    cutout = cv2.resize(person.mask.astype(np.uint8), (256, 256)) > 0
    background = cv2.resize(skimage.data.coffee(), (448, 256), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(6):
        frame = background.copy()
        frame[:, 16 + 32 * i : 272 + 32 * i][cutout] = astronaut[cutout]
        frames.append(frame)
    write_video(tmp_path / "in" / "walk" / "across.mp4", frames)
    filled = []
    fill_from_plate = compose.fill_from_plate

    def spy(image, holes, plate):
        out = fill_from_plate(image, holes, plate)
        from_plate = holes & ~out[1]
        error = np.abs(out[0][from_plate].astype(int) - background[from_plate]).mean()
        codec = np.abs(image[~holes].astype(int) - background[~holes]).mean()  # the same, seen
        smear = compose.telea(image, holes)[from_plate].astype(int) - background[from_plate]
        filled.append((int(from_plate.sum()), float(error), float(codec), np.abs(smear).mean()))
        return out

    monkeypatch.setattr(compose, "fill_from_plate", spy)
    out = tmp_path / "a"
    argv = ["--format", "video", "--input", str(tmp_path / "in"), "--out", str(out)]
    _anonymize(argv + ["--clip-frames", "2", "--frame-stride", "1", "--size", "32"], capsys)
    assert len(filled) == 6
    for pixels, error, codec, smear in filled:
        # The true background up to the codec's error (~8 levels), where Telea smears (55-85).
        assert pixels > 20000 and error < codec + 2.5 and smear > 4 * error
