"""The person model (MediaPipe's BlazePose, built by set-up) on real photographs of people.

The bundle is required: `bash launch/setup.sh` builds it (CI runs set-up first), and without it the
tests fail with MissingPersonModelError naming that command. Hand annotations: photo_fixtures.
"""

import zipfile

import cv2
import numpy as np
import pytest
from photo_fixtures import photo_person

from jaxpriv.anonymize import person_model, pipeline
from jaxpriv.anonymize.person_model import (
    BUNDLE_NAME,
    COCO_FROM_BLAZEPOSE,
    FoundPerson,
    MissingPersonModelError,
    PersonModel,
    find_bundle,
)


@pytest.fixture(scope="module")
def model():
    with PersonModel() as model:
        yield model


def _near(found: FoundPerson, index: int, xy, tolerance: float) -> bool:
    return float(np.hypot(*(found.keypoints[index, :2] - xy))) < tolerance


def _shoulder_width(found: FoundPerson) -> float:
    return float(np.linalg.norm(found.world_landmarks[11] - found.world_landmarks[12]))


def _side_by_side():
    """The astronaut (512x512) beside Grace Hopper scaled to 512 high, and their hand masks."""
    astronaut, astronaut_person = photo_person("astronaut")
    hopper, hopper_person = photo_person("grace_hopper")
    size = (round(hopper.shape[1] * 512 / hopper.shape[0]), 512)
    hopper = cv2.resize(hopper, size, interpolation=cv2.INTER_AREA)
    hopper_mask = cv2.resize(
        hopper_person.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST
    )
    image = np.concatenate([astronaut, hopper], axis=1)
    masks = np.zeros((2, *image.shape[:2]), bool)
    masks[0, :, :512] = astronaut_person.mask
    masks[1, :, 512:] = hopper_mask.astype(bool)
    return image, masks


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_coco_keypoints_are_blazepose_landmarks_of_the_same_name():
    from mediapipe.tasks.python.vision import PoseLandmark

    names = [PoseLandmark[name.upper()] for name in person_model.COCO_KEYPOINTS]
    assert list(person_model.COCO_FROM_BLAZEPOSE) == names


def test_astronaut(model):
    image, person = photo_person("astronaut")
    (found,) = model(image)
    assert found.keypoints.shape == (17, 3) and found.landmarks.shape == (33, 3)
    assert _near(found, 0, (225, 125), 10)  # nose
    assert _near(found, 1, (245, 105), 15) and _near(found, 2, (205, 105), 15)  # eyes
    assert (found.keypoints[:7, 2] > 0.9).all()  # face and shoulders seen; the hands less
    assert found.mask.shape == image.shape[:2] and found.mask.dtype == bool
    assert (found.mask & person.mask).sum() > 0.75 * person.mask.sum()
    assert found.mask[:100, :100].mean() < 0.02 and found.mask[:100, -100:].mean() < 0.02
    x0, y0, x1, y1 = found.box
    assert x0 < 30 and x1 > 340 and y0 < 40 and y1 == 512
    assert 0.2 < _shoulder_width(found) < 0.6  # metres
    assert 0 < found.score <= 1


def test_world_keypoints_are_metres_in_camera_axes_between_the_hips(model):
    """What the avatar's pose fit reads: the camera's axes (x right, y down, z away), the origin
    between the hips; the persons the pipeline makes of the found people carry them."""
    image, _ = photo_person("astronaut")
    (found,) = model(image)
    world = found.world_keypoints
    assert world.shape == (17, 3)
    np.testing.assert_allclose(world, found.world_landmarks[list(COCO_FROM_BLAZEPOSE)])
    np.testing.assert_allclose(world[11:13].mean(0), 0.0, atol=0.02)
    left_shoulder, right_shoulder, nose = world[5], world[6], world[0]
    assert left_shoulder[0] - right_shoulder[0] > 0.2  # she faces the camera: her left at +x
    assert nose[1] < left_shoulder[1] - 0.1 and nose[1] < right_shoulder[1] - 0.1  # head up
    assert nose[2] < (left_shoulder[2] + right_shoulder[2]) / 2  # nose towards the camera
    (person,), _ = pipeline.model_people(image, model)
    np.testing.assert_array_equal(person.world_keypoints, world)


def test_two_people_side_by_side_each_once(model):
    image, masks = _side_by_side()
    found = model(image)
    assert len(found) == 2
    astronaut, hopper = sorted(found, key=lambda p: p.box[0])
    for person, half, hand_mask in (
        (astronaut, slice(0, 512), masks[0]),
        (hopper, slice(512, None), masks[1]),
    ):
        center = (person.box[0] + person.box[2]) / 2
        assert (center < 512) == (half.start == 0)
        assert person.mask[:, half].sum() > 0.97 * person.mask.sum()
        assert _iou(person.mask, hand_mask) > 0.7
        assert 0.2 < _shoulder_width(person) < 0.6
    assert _near(astronaut, 0, (225, 125), 12)
    scale = 512 / 600  # Grace Hopper's hand annotations (photo_fixtures) are at 512x600
    for index, xy in ((0, (255, 240)), (1, (300, 195)), (2, (215, 195))):
        assert _near(hopper, index, (512 + xy[0] * scale, xy[1] * scale), 25)


def test_low_thresholds_find_each_person_once():
    """At low thresholds the landmarker returns Grace Hopper several times: one is kept."""
    image, person = photo_person("grace_hopper")
    with PersonModel(detection_confidence=0.1, presence_confidence=0.1) as model:
        (found,) = model(image)
    assert _iou(found.mask, person.mask) > 0.8


def test_overlaps():
    def found(mask, shift=0.0):
        landmarks = np.zeros((33, 3), np.float32)
        landmarks[:, 0] = np.linspace(10, 50, 33) + shift
        landmarks[:, 1] = np.linspace(10, 90, 33)
        ys, xs = np.nonzero(mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        return FoundPerson(landmarks[:17], landmarks, landmarks, mask, box, 1.0)

    left, right, both = (np.zeros((100, 100), bool) for _ in range(3))
    left[:, :50], right[:, 50:], both[:, 10:60] = True, True, True
    assert found(left).overlaps(found(both))  # IoU 40 / 60
    assert not found(left).overlaps(found(right, shift=50))
    assert found(left).overlaps(found(right, shift=2))  # the same landmarks, masks apart


def test_rejects_other_images(model):
    with pytest.raises(ValueError, match="RGB uint8"):
        model(np.zeros((64, 64, 3), np.float32))
    assert model(np.zeros((64, 64, 3), np.uint8)) == []


def test_missing_bundle_names_the_setup_command(tmp_path, monkeypatch):
    for call in (lambda: find_bundle(tmp_path), lambda: PersonModel(tmp_path)):
        with pytest.raises(MissingPersonModelError, match="bash launch/setup.sh") as error:
            call()
        assert str(tmp_path / BUNDLE_NAME) in str(error.value)
        assert isinstance(error.value, FileNotFoundError)
    monkeypatch.setenv("JAXPRIV_PERSON_MODEL_DIR", str(tmp_path))
    with pytest.raises(MissingPersonModelError, match=str(tmp_path)):
        find_bundle()


def test_bundle_holds_both_models_with_metadata():
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md
    from mediapipe.tasks.metadata import schema_py_generated as schema

    with zipfile.ZipFile(find_bundle()) as bundle:
        assert sorted(bundle.namelist()) == [
            "pose_detector.tflite",
            "pose_landmarks_detector.tflite",
        ]
        landmarks = bundle.read("pose_landmarks_detector.tflite")
    model = schema.Model.GetRootAsModel(landmarks, 0)
    (entry,) = [
        model.Metadata(i)
        for i in range(model.MetadataLength())
        if model.Metadata(i).Name() == b"TFLITE_METADATA"
    ]
    buffer = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert md.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    metadata = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAsModelMetadata(buffer, 0))
    (image,) = metadata.subgraphMetadata[0].inputTensorMetadata
    assert image.content.contentProperties.colorSpace == md.ColorSpaceType.RGB
    normalization = image.processUnits[0].options
    assert list(normalization.mean) == [0.0] and list(normalization.std) == [255.0]


def test_build_checks_the_wheel_and_keeps_a_built_bundle(tmp_path):
    wheel = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(wheel, "w") as fake:
        for member, _ in person_model._WHEEL_FILES.values():
            fake.writestr(member, b"not a model")
    with pytest.raises(ValueError, match="is not the mediapipe 0.10.21 model file"):
        person_model.build_bundle(wheel, tmp_path / "out")
    assert not (tmp_path / "out" / BUNDLE_NAME).exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no partial file left
    (tmp_path / "out" / BUNDLE_NAME).write_bytes(b"built before")
    assert person_model.build_bundle(wheel, tmp_path / "out") == tmp_path / "out" / BUNDLE_NAME
