"""Body and face region masks, and identities across video frames."""

import cv2
import numpy as np
import pytest

from jaxpriv.anonymize.readers import Person
from jaxpriv.anonymize.regions import body_mask, box_mask, face_box, face_mask, region_mask
from jaxpriv.anonymize.tracking import box_iou, fill_gaps, track

SHAPE = (60, 80)


def keypoints(face_points, visibility=2):
    """[17, 3] COCO keypoints with the five face points set (x, y) and the body unlabelled."""
    kp = np.zeros((17, 3), np.float32)
    kp[: len(face_points), :2] = np.reshape(face_points, (-1, 2))
    kp[: len(face_points), 2] = visibility
    return kp


FRONTAL = [(50, 50), (45, 45), (55, 45), (40, 48), (60, 48)]  # nose, eyes, ears


def test_body_mask_is_the_instance_mask_or_the_box():
    mask = np.zeros(SHAPE, bool)
    mask[10:30, 20:25] = True
    np.testing.assert_array_equal(body_mask(Person((20, 10, 25, 30), mask), SHAPE), mask)
    from_box = body_mask(Person((20.0, 10.0, 25.0, 30.0)), (*SHAPE, 3))
    np.testing.assert_array_equal(from_box, mask)
    with pytest.raises(ValueError, match="mask of person 'p1' has shape"):
        body_mask(Person((0, 0, 1, 1), np.zeros((5, 5), bool), source_id="p1"), SHAPE)


def test_body_mask_dilation_and_box_expansion():
    mask = np.zeros(SHAPE, bool)
    mask[30, 40] = True
    dilated = body_mask(Person((40, 30, 41, 31), mask), SHAPE, dilate=3)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)).astype(bool)
    np.testing.assert_array_equal(dilated[27:34, 37:44], kernel)
    assert dilated.sum() == kernel.sum()

    person = Person((10.0, 10.0, 20.0, 20.0), mask)
    expanded = body_mask(person, SHAPE, expand_box=0.5)  # box (7.5, 7.5, 22.5, 22.5)
    expected = mask.copy()
    expected[7:22, 7:22] = True
    np.testing.assert_array_equal(expanded, expected)
    clipped = body_mask(Person((-10.0, 50.0, 10.0, 70.0)), SHAPE, expand_box=1.0)
    np.testing.assert_array_equal(clipped, box_mask((-20, 40, 20, 80), SHAPE))
    assert clipped[40:, :20].all() and clipped.sum() == 20 * 20


def test_face_box_from_keypoints():
    x0, y0, x1, y1 = face_box(Person((30, 30, 70, 120), keypoints=keypoints(FRONTAL)))
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx(np.mean(FRONTAL, axis=0))
    assert 1.5 * 20 <= x1 - x0 <= 1.5 * 25  # 1.5 head widths; ear to ear is 20 px
    doubled = face_box(Person((60, 60, 140, 240), keypoints=keypoints(2 * np.array(FRONTAL))))
    assert doubled == pytest.approx(tuple(2 * v for v in (x0, y0, x1, y1)))


def test_face_box_ignores_unlabelled_points_and_falls_back_to_the_person_box():
    kp = keypoints(FRONTAL)
    kp[3:5] = [[0, 0, 0], [500, 500, 0]]  # ears unlabelled, coordinates meaningless
    eyes_nose = face_box(Person((30, 30, 70, 120), keypoints=kp))
    assert np.mean(eyes_nose[::2]) == pytest.approx(50) and eyes_nose[2] < 80

    only_nose = keypoints([(50, 50)])
    box = face_box(Person((30.0, 30.0, 70.0, 120.0), keypoints=only_nose))
    assert box == pytest.approx((41.0, 41.0, 59.0, 59.0))  # side 1.5 * 0.3 * 40
    assert face_box(Person((30, 30, 70, 120), keypoints=keypoints([]))) is None
    assert face_box(Person((30, 30, 70, 120))) is None
    assert not face_mask(Person((30, 30, 70, 120)), SHAPE).any()


def test_face_mask_is_an_ellipse_in_the_face_box():
    person = Person((30, 30, 70, 120), keypoints=keypoints([(40, 30)]))  # 18 px face box
    mask = face_mask(person, SHAPE)
    assert not (mask & ~box_mask(face_box(person), SHAPE)).any()
    assert mask.sum() == pytest.approx(np.pi / 4 * 18**2, rel=0.05)
    assert mask[30, 40] and not mask[21, 31]  # centre in, box corner out
    assert face_mask(person, SHAPE, scale=2.0).sum() == pytest.approx(4 * mask.sum(), rel=0.05)


def test_region_mask_unions_persons_and_skips_crowds_for_faces():
    first = Person((5, 5, 15, 25), keypoints=keypoints(FRONTAL))
    crowd_mask = np.zeros(SHAPE, bool)
    crowd_mask[40:60, 0:30] = True
    crowd = Person((0, 40, 30, 60), crowd_mask, keypoints=keypoints([(10, 50)]), crowd=True)
    body = region_mask([first, crowd], SHAPE, "body", dilate=1)
    np.testing.assert_array_equal(
        body, body_mask(first, SHAPE, dilate=1) | body_mask(crowd, SHAPE, dilate=1)
    )
    face = region_mask([first, crowd], SHAPE, "face", scale=1.2)
    np.testing.assert_array_equal(face, face_mask(first, SHAPE, scale=1.2))
    assert not region_mask([], SHAPE, "face").any()
    with pytest.raises(ValueError, match="unknown region 'hair'"):
        region_mask([first], SHAPE, "hair")


def test_box_iou():
    iou = box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0], [20, 20, 30, 30.0]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def moving_box(x, y):
    return Person((float(x), float(y), x + 20.0, y + 40.0))


def test_tracks_keep_ids_when_paths_cross_and_new_persons_get_new_ids():
    frames = []
    for t in range(30):  # A moves right, B left, 3 px per frame; they overlap in frames 8-19
        persons = [moving_box(3 * t, 10), moving_box(90 - 3 * t, 20)]
        if t >= 20:
            persons.append(moving_box(200, 0))  # enters at frame 20
        if t in (5, 6):
            persons.append(Person((0, 0, 80, 60), crowd=True, track_id=7))
        frames.append(persons[::-1] if t % 2 else persons)  # detection order must not matter
    track(frames)
    for persons in frames:
        ids = {round(p.box[0] + p.box[1]): p.track_id for p in persons}
        t = frames.index(persons)
        assert ids[3 * t + 10] == 0 and ids[90 - 3 * t + 20] == 1
        if t >= 20:
            assert ids[200] == 2
        assert all(p.track_id is None for p in persons if p.crowd)


def test_ids_are_never_reused_and_tracking_is_deterministic():
    frames = [[moving_box(0, 0)], [], [moving_box(0, 0)], [moving_box(2, 0), moving_box(50, 0)]]
    track(frames)
    assert [[p.track_id for p in persons] for persons in frames] == [[0], [], [1], [1, 2]]
    again = [[Person(p.box) for p in persons] for persons in frames]
    track(again)
    assert [[p.track_id for p in ps] for ps in again] == [[p.track_id for p in ps] for ps in frames]
    with pytest.raises(ValueError, match="iou_threshold"):
        track(frames, iou_threshold=0.0)


def test_short_gaps_of_a_track_keep_its_id_and_get_interpolated_boxes():
    frames = [[moving_box(0, 0)], [], [], [moving_box(6, 0)], [], [], [], [moving_box(14, 0)]]
    track(frames, max_gap=2)
    assert [p.track_id for persons in frames for p in persons] == [0, 0, 1]  # gap 3 > 2: new id
    fill_gaps(frames, max_gap=2)
    assert [len(persons) for persons in frames] == [1, 1, 1, 1, 0, 0, 0, 1]
    assert frames[1][0].box == (2.0, 0.0, 22.0, 40.0) and frames[2][0].box[0] == 4.0
    assert {p.track_id for persons in frames[:4] for p in persons} == {0}
    with pytest.raises(ValueError, match="max_gap"):
        fill_gaps(frames, max_gap=-1)
