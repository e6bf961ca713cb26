"""Real photographs of people with hand-made annotations: scikit-image's astronaut and
matplotlib's Grace Hopper (both ship with their packages).

Person polygons and COCO keypoints were written by hand from looking at the photographs; the
face boxes are those of `test_detect`.
"""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from jaxpriv.anonymize import readers

# (polygon of the person, {COCO keypoint index: (x, y)}, the face box of test_detect)
PHOTOS = {
    "astronaut": (
        [(140, 5), (310, 5), (320, 150), (305, 190), (370, 300), (380, 512), (10, 512)]
        + [(15, 300), (100, 220), (140, 150)],
        {0: (225, 125), 1: (245, 105), 2: (205, 105), 3: (268, 115), 4: (180, 115)}
        | {5: (330, 260), 6: (110, 250), 7: (350, 400), 8: (55, 400), 9: (300, 480)}
        | {10: (170, 490)},
        (178, 62, 272, 178),
    ),
    "grace_hopper": (
        [(140, 20), (380, 20), (385, 170), (355, 300), (340, 335), (480, 380), (512, 440)]
        + [(512, 600), (0, 600), (10, 420), (70, 365), (170, 330), (150, 250), (140, 150)],
        {0: (255, 240), 1: (300, 195), 2: (215, 195), 3: (350, 215), 4: (170, 215)}
        | {5: (440, 390), 6: (80, 390)},
        (155, 125, 380, 320),
    ),
}


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def photo_person(name: str) -> tuple[np.ndarray, readers.Person]:
    image = skimage.data.astronaut() if name == "astronaut" else _grace_hopper()
    outline, points, _ = PHOTOS[name]
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.array(outline, np.int32)], 1)
    keypoints = np.zeros((17, 3), np.float32)
    for index, xy in points.items():
        keypoints[index] = (*xy, 2)
    return image, readers.Person(readers.mask_box(mask.astype(bool)), mask.astype(bool), keypoints)


def face_similarity(a: np.ndarray, b: np.ndarray, box) -> float:
    """Normalised cross-correlation of two images' grey levels inside ``box``: 1 for the same
    face, near 0 for unrelated content."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    crops = [
        cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1].astype(float) for image in (a, b)
    ]
    a, b = (crop - crop.mean() for crop in crops)
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-9))
