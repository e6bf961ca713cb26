"""Tiny but real fixtures of the dataset layouts of `jaxpriv.anonymize.layouts`.

`make_layout(name, root)` writes decodable files (48x64 images, 8-frame 32x32 videos) and real
annotations: COCO JSONs with polygon masks, boxes and 17 keypoints per person (crowds as RLE),
Cityscapes uint16 instanceIds maps, a BDD100K COCO JSON with compressed RLE masks.

Video layouts get two classes (`VIDEO_CLASSES`) of `per_class` videos each; image layouts get
`per_class` images for each person count of `PERSON_COUNTS`, so every label "0", "1", "2" and
"3+" appears `per_class` times. Each 1-person image also has a crowd region (never counted), and
the BDD100K and Cityscapes images a car (never read as a person).
"""

import json
from pathlib import Path

import av
import cv2
import numpy as np

H, W = 48, 64  # images
FRAMES, SIZE = 8, 32  # videos: frames of SIZE x SIZE
PERSON_COUNTS = (0, 1, 2, 3)  # persons per image, each `per_class` times
UCF101_CLASSES = ("ApplyEyeMakeup", "HandstandPushups")
# The real files of HandstandPushups/ are spelled v_HandStandPushups_gXX_cYY.avi.
UCF101_FILE_NAMES = {"HandstandPushups": "HandStandPushups"}
NTU60_ACTIONS = ("A001", "A060")
TOYOTA_ACTIVITIES = ("Cook.Cleandishes", "Walk")
VIDEO_CLASSES = {
    "ucf101": UCF101_CLASSES,
    "ntu60": NTU60_ACTIONS,
    "toyota_smarthome": TOYOTA_ACTIVITIES,
}
CITIES = ("aachen", "bochum")
BDD100K_CATEGORIES = (
    "pedestrian",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)


def make_layout(name: str, root: Path, *, per_class: int = 2) -> Path:
    """Writes a fixture of layout `name` under `root` and returns `root`, the dataset root."""
    if name not in BUILDERS:
        raise ValueError(f"no fixture for layout {name!r}; choose one of {sorted(BUILDERS)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](root, per_class)
    return root


# --- files ------------------------------------------------------------------------------------


def write_video(path: Path, seed: int = 0) -> Path:
    """An 8-frame 32x32 video (MPEG-4 part 2 for .avi, H.264 for .mp4): a square moving right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
    codec = "libx264" if path.suffix == ".mp4" else "mpeg4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for t in range(FRAMES):
            frame = background.copy()
            frame[8:20, 2 + 2 * t : 14 + 2 * t] = (230, 190, 160)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_image(path: Path, seed: int = 0) -> Path:
    """A 48x64 image with random pixels (JPEG or PNG by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels), path
    return path


def person_box(slot: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the `slot`-th person of an image: side by side, 14x36 px."""
    return 2 + 20 * slot, 6, 14, 36


def person_mask(slot: int) -> np.ndarray:
    x, y, w, h = person_box(slot)
    mask = np.zeros((H, W), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def crowd_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[44:48, 0:60] = True
    return mask


def car_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[0:5, 40:64] = True
    return mask


def keypoints(slot: int) -> list[float]:
    """17 COCO keypoints (x, y, visibility 2) of a standing person in `person_box(slot)`."""
    x, y, w, _ = person_box(slot)
    cx = x + w / 2
    head = [(cx, y + 4), (cx - 2, y + 3), (cx + 2, y + 3), (cx - 4, y + 4), (cx + 4, y + 4)]
    body = [
        (cx + dx, y + dy)
        for dy, dx in [(10, -5), (10, 5), (16, -6), (16, 6), (21, -6), (21, 6)]
        + [(21, -3), (21, 3), (28, -3), (28, 3), (35, -3), (35, 3)]
    ]
    return [float(v) for px, py in head + body for v in (px, py, 2)]


def polygon(slot: int) -> list[float]:
    """A hexagon inside `person_box(slot)`: narrow head, wider body."""
    x, y, w, h = person_box(slot)
    points = [(x + 4, y), (x + w - 4, y), (x + w, y + 10), (x + w, y + h), (x, y + h), (x, y + 10)]
    return [float(v) for point in points for v in point]


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of 0s."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return [0, *counts] if flat[0] else counts


def rle_string(counts: list[int]) -> str:
    """pycocotools' compressed RLE string of run lengths (as `bdd100k.label.to_coco` writes)."""
    chars = []
    for i, value in enumerate(counts):
        value -= counts[i - 2] if i > 2 else 0
        more = True
        while more:
            chunk, value = value & 0x1F, value >> 5
            more = value != -1 if chunk & 0x10 else value != 0
            chars.append(chr(48 + (chunk | 0x20 if more else chunk)))
    return "".join(chars)


def box_of(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [
        float(cols[0]),
        float(rows[0]),
        float(cols[-1] + 1 - cols[0]),
        float(rows[-1] + 1 - rows[0]),
    ]


def image_counts(per_class: int) -> list[int]:
    """The person count of each image of an image layout, in order."""
    return [count for count in PERSON_COUNTS for _ in range(per_class)]


# --- video layouts ----------------------------------------------------------------------------


def _ucf101(root: Path, per_class: int) -> None:
    for c, name in enumerate(UCF101_CLASSES):
        spelled = UCF101_FILE_NAMES.get(name, name)
        for i in range(per_class):
            write_video(root / name / f"v_{spelled}_g{i + 1:02d}_c01.avi", seed=10 * c + i)


def _ntu60(root: Path, per_class: int) -> None:
    for c, action in enumerate(NTU60_ACTIONS):
        for i in range(per_class):
            name = f"S001C{i + 1:03d}P001R001{action}_rgb.avi"
            write_video(root / "nturgb+d_rgb" / name, seed=10 * c + i)


def _toyota_smarthome(root: Path, per_class: int) -> None:
    for c, activity in enumerate(TOYOTA_ACTIVITIES):
        for i in range(per_class):
            write_video(root / "mp4" / f"{activity}_p{i + 2:02d}_r00_v01_c03.mp4", seed=10 * c + i)


# --- image layouts ----------------------------------------------------------------------------


def _coco_person(annotation_id: int, image_id: int, slot: int, category_id: int = 1) -> dict:
    x, y, w, h = person_box(slot)
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(w * h),
        "segmentation": [polygon(slot)],
        "keypoints": keypoints(slot),
        "num_keypoints": 17,
    }


def _coco_crowd(annotation_id: int, image_id: int, category_id: int = 1) -> dict:
    mask = crowd_mask()
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 1,
        "bbox": box_of(mask),
        "area": float(mask.sum()),
        "segmentation": {"counts": rle_counts(mask), "size": [H, W]},
        "keypoints": [0.0] * 51,
        "num_keypoints": 0,
    }


def _coco2017(root: Path, per_class: int) -> None:
    images, annotations = [], []
    for index, count in enumerate(image_counts(per_class)):
        image_id = index + 1
        name = f"{image_id:012d}.jpg"
        write_image(root / "train2017" / name, seed=image_id)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        for slot in range(count):
            annotations.append(_coco_person(len(annotations) + 1, image_id, slot))
        if count == 1:
            annotations.append(_coco_crowd(len(annotations) + 1, image_id))
    category = {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": ["nose", "left_eye", "right_eye", "left_ear", "right_ear"]
        + [
            f"{side}_{part}"
            for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
            for side in ("left", "right")
        ],
        "skeleton": [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13]],
    }
    data = {"images": images, "annotations": annotations, "categories": [category]}
    path = root / "annotations" / "person_keypoints_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def coco_arguments(root: Path) -> list[str]:
    """The `jaxpriv anonymize` arguments that read the coco2017 fixture written under `root`."""
    annotations = root / "annotations" / "person_keypoints_train2017.json"
    return [
        "--format",
        "coco",
        "--input",
        str(root / "train2017"),
        "--annotations",
        str(annotations),
    ]


def cityscapes_name(index: int) -> tuple[str, str]:
    """(city, frame name without suffix) of the `index`-th Cityscapes image."""
    city = CITIES[index % len(CITIES)]
    return city, f"{city}_{index:06d}_000019"


def _cityscapes(root: Path, per_class: int) -> None:
    for index, count in enumerate(image_counts(per_class)):
        city, frame = cityscapes_name(index)
        write_image(root / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png", seed=index)
        ids = np.full((H, W), 7, np.uint16)  # road
        ids[car_mask()] = 26000  # car, instance 0
        for slot in range(count):
            class_id = 25 if slot == 1 else 24  # the second person of an image is a rider
            ids[person_mask(slot)] = class_id * 1000 + slot
        if count == 1:
            ids[crowd_mask()] = 24  # a crowd of persons: the bare class id
        path = root / "gtFine" / "train" / city / f"{frame}_gtFine_instanceIds.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), ids), path


def bdd100k_name(index: int) -> str:
    return f"{index:08x}-{7919 * index:08x}.jpg"


def _bdd100k(root: Path, per_class: int) -> None:
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(BDD100K_CATEGORIES)]
    ids = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []

    def add(image_id: int, mask: np.ndarray, category: str, crowd: bool = False) -> None:
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": ids[category],
                "iscrowd": int(crowd),
                "ignore": 0,
                "bbox": box_of(mask),
                "area": float(mask.sum()),
                "segmentation": {"counts": rle_string(rle_counts(mask)), "size": [H, W]},
            }
        )

    for index, count in enumerate(image_counts(per_class)):
        image_id = index + 1
        name = bdd100k_name(index)
        write_image(root / "images" / "10k" / "train" / name, seed=image_id)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        add(image_id, car_mask(), "car")
        for slot in range(count):
            add(image_id, person_mask(slot), "rider" if slot == 1 else "pedestrian")
        if count == 1:
            add(image_id, crowd_mask(), "pedestrian", crowd=True)
    data = {
        "type": "instances",
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = root / "labels" / "ins_seg" / "coco" / "ins_seg_train_coco.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


BUILDERS = {
    "ucf101": _ucf101,
    "ntu60": _ntu60,
    "toyota_smarthome": _toyota_smarthome,
    "coco2017": _coco2017,
    "cityscapes": _cityscapes,
    "bdd100k": _bdd100k,
}
