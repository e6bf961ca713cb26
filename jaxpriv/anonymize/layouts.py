"""The inputs of the anonymization stage: one registry (`FORMATS`, read by `read_input`) for
``jaxpriv anonymize --format`` and an experiment's ``anonymize.layout``.

Generic formats read any dataset of their kind: ``coco`` (a COCO JSON and its image folder),
``folder`` (images; the first sub-folder is the label), ``video`` (video files, likewise) and
``synthetic`` (the embedded generated clips, each figure a person). Dataset layouts (`LAYOUTS`:
UCF-101, NTU RGB+D 60, Toyota Smarthome, COCO 2017, Cityscapes, BDD100K) check a known
dataset's tree and label its inputs for its task.

Real datasets' expected folder layouts, checked and read into labelled units:

`read(name, root)` checks that `root` holds the layout `LAYOUTS[name]` and returns its units
(`readers.Video`s or `readers.Sample`s) with `label` set. Keys are the files' paths relative to
`root` (so the anonymized drop-in copy mirrors the dataset's tree). Nothing is decoded: videos
are only listed and images only checked to exist; the annotations (COCO JSON, Cityscapes
instance maps) are read, as the anonymization needs them anyway. A missing or misnamed part of
the layout raises `LayoutError`, which shows what is wrong and the expected tree.

The image layouts have one task: person-count classification, the number of non-crowd persons
(and riders) in the image as "0", "1", "2" or "3+".
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path

from jaxpriv.anonymize import readers
from jaxpriv.data import synthetic

MAX_NAMES_SHOWN = 5  # misnamed files listed in an error
PERSON_COUNT_LABELS = ("0", "1", "2", "3+")
PERSON_COUNT_TASK = 'person count: non-crowd persons in the image, as "0", "1", "2" or "3+"'


class LayoutError(FileNotFoundError):
    """A dataset root that does not hold its layout: what is missing or wrong, then the tree."""

    def __init__(self, problem: str, layout: Layout | None = None):
        self.problem, self.layout = problem, layout
        if layout is None:
            super().__init__(problem)
        else:
            tree = "\n".join("  " + line for line in layout.tree.splitlines())
            super().__init__(f"{layout.name} layout: {problem}\nexpected layout:\n{tree}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """A dataset's folder layout. `tree`: the expected folders and files, `<placeholders>` for
    names; `reader`: root -> its units with `label` set (raises `LayoutError`)."""

    name: str
    kind: str  # "image" | "video"
    task: str  # what the label is, one line
    tree: str
    reader: Callable[[Path], list] = dataclasses.field(repr=False)


def read(name: str, root: str | os.PathLike) -> list:
    """The labelled units of the dataset at `root`, laid out as `LAYOUTS[name]`.

    Raises ValueError for an unknown `name`, `LayoutError` (a FileNotFoundError) for a root that
    does not hold the layout, and `readers.AnnotationError` (a ValueError) for annotations that
    do not match their images.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset layout {name!r}: known layouts are {', '.join(LAYOUTS)}")
    layout, root = LAYOUTS[name], Path(root).expanduser()
    try:
        if not root.is_dir():
            raise LayoutError(f"dataset root folder not found: '{root}'")
        units = layout.reader(root)
        if not units:
            raise LayoutError(f"no {layout.kind}s found under '{root}'")
    except LayoutError as error:
        if error.layout is not None:
            raise
        raise LayoutError(error.problem, layout) from None
    return units


# --- checks -----------------------------------------------------------------------------------


def _require(root: Path, relative: str) -> Path:
    """`root/relative`, which must exist; the error suggests a wrapper folder that holds it."""
    path = root / relative
    if path.exists():
        return path
    nested = sorted(p.parent for p in root.glob(f"*/{relative}"))
    hint = f" (found it under '{nested[0]}': pass that folder as the root)" if nested else ""
    raise LayoutError(f"'{path}' not found{hint}")


def _listed(names: list[str]) -> str:
    more = f", ... ({len(names) - MAX_NAMES_SHOWN} more)" if len(names) > MAX_NAMES_SHOWN else ""
    return ", ".join(names[:MAX_NAMES_SHOWN]) + more


def _videos(root: Path, folder: str, expected: str) -> list[readers.Video]:
    """The video files under `root/folder`, keyed relative to `root` (nothing decoded)."""
    directory = _require(root, folder) if folder else root
    try:
        videos = readers.read_videos(directory)
    except FileNotFoundError:
        raise LayoutError(f"no videos found under '{directory}' (expected {expected})") from None
    prefix = f"{folder}/" if folder else ""
    return [dataclasses.replace(v, key=prefix + v.key) for v in videos]


def _named(videos: list[readers.Video], pattern: str, expected: str) -> list[re.Match]:
    """The match of `pattern` (case-insensitive) on each key; every key must match."""
    matches = [re.fullmatch(pattern, v.key, re.IGNORECASE) for v in videos]
    bad = [v.key for v, match in zip(videos, matches) if match is None]
    if bad:
        raise LayoutError(
            f"{len(bad)} of {len(videos)} video files are not named {expected}: {_listed(bad)}"
        )
    return matches


def _labelled(units: list, labels: list[str]) -> list:
    return [dataclasses.replace(unit, label=label) for unit, label in zip(units, labels)]


def _person_count(persons: list[readers.Person]) -> str:
    count = sum(not person.crowd for person in persons)
    return PERSON_COUNT_LABELS[min(count, len(PERSON_COUNT_LABELS) - 1)]


def _by_person_count(samples: list[readers.Sample]) -> list[readers.Sample]:
    return _labelled(samples, [_person_count(sample.persons) for sample in samples])


def _coco(root: Path, annotations: str, images: str, categories: tuple[str, ...]) -> list:
    """The images of a COCO-format JSON, keyed relative to `root`, labelled by person count."""
    annotation_json, image_root = _require(root, annotations), _require(root, images)
    samples = readers.read_coco(annotation_json, image_root, person_categories=categories)
    return _by_person_count([dataclasses.replace(s, key=f"{images}/{s.key}") for s in samples])


# --- the layouts ------------------------------------------------------------------------------

UCF101_FILE = "ROOT/<Class>/v_<Class>_gXX_cYY.avi"


def _read_ucf101(root: Path) -> list[readers.Video]:
    videos = _videos(root, "", UCF101_FILE)
    # Case-insensitive: the real files of HandstandPushups/ are named v_HandStandPushups_*.avi.
    _named(videos, r"([^/]+)/v_\1_g\d+_c\d+\.avi", UCF101_FILE)
    return _labelled(videos, [v.key.split("/")[0] for v in videos])


NTU_FILE = "ROOT/nturgb+d_rgb/SsssCcccPpppRrrrAaaa_rgb.avi"
NTU60_SETUPS, NTU60_ACTIONS = 17, 60  # NTU RGB+D 120 adds setups S018-S032, actions A061-A120


def _read_ntu60(root: Path) -> list[readers.Video]:
    videos = _videos(root, "nturgb+d_rgb", NTU_FILE)
    pattern = r"nturgb\+d_rgb/S(\d{3})C\d{3}P\d{3}R\d{3}A(\d{3})_rgb\.avi"
    numbers = [(int(m[1]), int(m[2])) for m in _named(videos, pattern, NTU_FILE)]
    if bad := [v.key for v, (s, a) in zip(videos, numbers) if not (s and a)]:
        raise LayoutError(f"setup S000 or action A000 (numbers start at 1): {_listed(bad)}")
    if ntu120 := [
        v.key for v, (s, a) in zip(videos, numbers) if s > NTU60_SETUPS or a > NTU60_ACTIONS
    ]:
        raise LayoutError(
            f"{len(ntu120)} video(s) of NTU RGB+D 120 (setups S018-S032 or actions A061-A120), "
            f"not NTU RGB+D 60: move them out of ROOT/nturgb+d_rgb: {_listed(ntu120)}"
        )
    return _labelled(videos, [f"A{action:03d}" for _, action in numbers])


TOYOTA_FILE = "ROOT/mp4/<Activity>_pNN_rNN_vNN_cNN.mp4"


def _read_toyota_smarthome(root: Path) -> list[readers.Video]:
    videos = _videos(root, "mp4", TOYOTA_FILE)
    matches = _named(videos, r"mp4/([^/]+?)_p\d+_r\d+_v\d+_c\d+\.mp4", TOYOTA_FILE)
    return _labelled(videos, [match[1] for match in matches])


def _read_coco2017(root: Path) -> list[readers.Sample]:
    return _coco(root, "annotations/person_keypoints_train2017.json", "train2017", ("person",))


def _read_cityscapes(root: Path) -> list[readers.Sample]:
    _require(root, "leftImg8bit/train")
    _require(root, "gtFine/train")
    try:
        samples = readers.read_cityscapes(root, "train")
    except FileNotFoundError as error:  # no images
        raise LayoutError(str(error)) from None
    return _by_person_count(samples)


BDD100K_JSON = "labels/ins_seg/coco/ins_seg_train_coco.json"
# BDD100K's persons; legacy instance-segmentation labels call pedestrians "person".
BDD100K_PERSONS = ("pedestrian", "rider", "person")


def _read_bdd100k(root: Path) -> list[readers.Sample]:
    return _coco(root, BDD100K_JSON, "images/10k/train", BDD100K_PERSONS)


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in [
        Layout(
            "ucf101",
            "video",
            "action class: the video's class folder (101 classes)",
            """\
ROOT/                                the extracted UCF-101 folder (UCF101.rar)
  <Class>/                           one folder per action class, e.g. ApplyEyeMakeup/
    v_<Class>_gXX_cYY.avi            XX: group, YY: clip, e.g. v_ApplyEyeMakeup_g01_c01.avi""",
            _read_ucf101,
        ),
        Layout(
            "ntu60",
            "video",
            "action class: the action code A001-A060 of the file name",
            """\
ROOT/
  nturgb+d_rgb/                      the RGB videos of NTU RGB+D 60, all in this one folder
    SsssCcccPpppRrrrAaaa_rgb.avi     setup S001-S017, camera, performer, replication,
                                     action A001-A060, e.g. S001C002P003R002A013_rgb.avi""",
            _read_ntu60,
        ),
        Layout(
            "toyota_smarthome",
            "video",
            "activity: the file name's text before _pNN, e.g. Cook.Cleandishes",
            """\
ROOT/
  mp4/                               the trimmed Toyota Smarthome clips, all in this folder
    <Activity>_pNN_rNN_vNN_cNN.mp4   person, recording, video, camera,
                                     e.g. Cook.Cleandishes_p02_r00_v02_c03.mp4""",
            _read_toyota_smarthome,
        ),
        Layout(
            "coco2017",
            "image",
            PERSON_COUNT_TASK,
            """\
ROOT/
  annotations/
    person_keypoints_train2017.json  from annotations_trainval2017.zip (faces: keypoints)
  train2017/
    <image id>.jpg                   from train2017.zip, e.g. 000000000009.jpg""",
            _read_coco2017,
        ),
        Layout(
            "cityscapes",
            "image",
            PERSON_COUNT_TASK + " (persons and riders)",
            """\
ROOT/
  leftImg8bit/
    train/
      <city>/                        e.g. aachen/ (leftImg8bit_trainvaltest.zip)
        <city>_XXXXXX_YYYYYY_leftImg8bit.png
  gtFine/
    train/
      <city>/                        (gtFine_trainvaltest.zip)
        <city>_XXXXXX_YYYYYY_gtFine_instanceIds.png""",
            _read_cityscapes,
        ),
        Layout(
            "bdd100k",
            "image",
            PERSON_COUNT_TASK + " (pedestrians and riders)",
            """\
ROOT/                                the extracted bdd100k/ folder
  images/
    10k/
      train/
        <name>.jpg                   from bdd100k_images_10k.zip
  labels/
    ins_seg/
      coco/
        ins_seg_train_coco.json      the instance segmentation in COCO format, made with
                                     python -m bdd100k.label.to_coco -m ins_seg
                                       -i ROOT/labels/ins_seg/rles/ins_seg_train.json
                                       -o ROOT/labels/ins_seg/coco/ins_seg_train_coco.json""",
            _read_bdd100k,
        ),
    ]
}


GENERIC_FORMATS = ("coco", "folder", "video", "synthetic")
FORMATS = (*GENERIC_FORMATS, *LAYOUTS)
IGNORED_SUFFIXES = {"folder": readers.IMAGE_SUFFIXES, "video": readers.VIDEO_SUFFIXES}


def read_input(
    name: str,
    root: str | os.PathLike | None,
    *,
    annotations: str | os.PathLike | None = None,
    strict: bool = True,
    num_clips: int = 512,
    frames: int = 4,
    seed: int = 0,
) -> list:
    """The units of input format ``name`` (one of `FORMATS`) at ``root``.

    ``annotations``: coco's JSON; ``strict``: any broken COCO
    annotation raises here, else it skips its image only (`readers.read_coco`); ``num_clips``,
    ``frames``, ``seed``: the synthetic clips (no ``root``).
    """
    if name not in FORMATS:
        raise ValueError(f"unknown input format {name!r}: known formats are {', '.join(FORMATS)}")
    if name == "synthetic":
        if root:
            raise ValueError("the synthetic format generates its clips: it takes no input folder")
        return readers.read_synthetic(
            num_clips, seed=seed, frames=frames, size=synthetic.DEFAULT_SIZE
        )
    if not root:
        raise ValueError(f"input format {name} needs an input folder (--input)")
    if name in LAYOUTS:
        return read(name, root)
    if name == "coco":
        if not annotations:
            raise ValueError(
                "input format coco needs its annotations (--annotations, the COCO json)"
            )
        return readers.read_coco(annotations, root, strict=strict)
    if name == "folder":
        return readers.read_folder(root)
    return readers.read_videos(root)


def ignored_files(name: str, root: str | os.PathLike | None) -> list[str]:
    """The files under ``root`` that input format ``name`` does not read (folder, video)."""
    if name not in IGNORED_SUFFIXES or not root:
        return []
    return readers.ignored_files(root, IGNORED_SUFFIXES[name])
