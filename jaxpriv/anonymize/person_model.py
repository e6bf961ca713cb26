"""People without annotations: MediaPipe's BlazePose person model, installed offline.

The model files (``pose_detection.tflite`` and ``pose_landmark_full.tflite``, BlazePose GHUM 3-D
full, Apache-2.0) ship inside the ``mediapipe==0.10.21`` wheel, which cannot be installed next to
this project's protobuf. ``bash launch/setup.sh`` downloads that wheel and calls
``python -m jaxpriv.anonymize.person_model --build WHEEL``, which builds the ``.task`` bundle that
the current ``mediapipe`` Tasks API (the runtime) reads: the detector as is, and the landmark model
with the TFLite metadata it lacks (RGB input scaled to [0, 1]). Nothing is downloaded at run time.

    model = PersonModel()             # MissingPersonModelError if set-up has not built the bundle
    for person in model(image_rgb):   # uint8 [H, W, 3]
        person.keypoints, person.mask, person.box
"""

from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxpriv import files
from jaxpriv.anonymize import native_logs

BUNDLE_NAME = "pose_landmarker_full.task"
SETUP_COMMAND = "bash launch/setup.sh"
# Name in the bundle (what the landmarker looks for) -> path in the wheel and SHA-256 (the same in
# the 0.10.21 wheels of every platform).
_WHEEL_FILES = {
    "pose_detector.tflite": (
        "mediapipe/modules/pose_detection/pose_detection.tflite",
        "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    ),
    "pose_landmarks_detector.tflite": (
        "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
        "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    ),
}
_WHEEL_LICENSE = "mediapipe-0.10.21.dist-info/LICENSE"
COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# BlazePose's 33 landmarks (mediapipe's PoseLandmark enum) at the COCO-17 keypoints, by name.
COCO_FROM_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)


class MissingPersonModelError(FileNotFoundError):
    """The person model bundle is not where it is looked for: set-up has not built it."""


def default_cache_dir() -> Path:
    """Where set-up builds the bundle: ``$JAXPRIV_PERSON_MODEL_DIR``, else ``~/.cache/jaxpriv/person_model``."""
    env = os.environ.get("JAXPRIV_PERSON_MODEL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "jaxpriv" / "person_model"


def find_bundle(path: str | os.PathLike | None = None) -> Path:
    """The ``.task`` bundle at ``path`` (a file or a folder holding it), default the cache folder.

    Raises MissingPersonModelError, naming the set-up command and the path looked at.
    """
    path = Path(path) if path is not None else default_cache_dir()
    bundle = path / BUNDLE_NAME if path.is_dir() or path.suffix != ".task" else path
    if not bundle.is_file():
        raise MissingPersonModelError(
            f"person model not found at {bundle}: run `{SETUP_COMMAND}`, which builds it from "
            f"the mediapipe==0.10.21 wheel (JAXPRIV_PERSON_MODEL_DIR sets the folder)"
        )
    return bundle


def _landmark_metadata() -> bytes:
    """TFLite metadata for BlazePose's landmark model: an RGB image scaled to [0, 1], five outputs.

    The landmarker reads the input's colour space and NormalizationOptions from it (a float input
    without them is refused); the outputs are named in the model's order.
    """
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as md

    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.ImageProperties
    content.contentProperties = md.ImagePropertiesT()
    content.contentProperties.colorSpace = md.ColorSpaceType.RGB
    normalization = md.ProcessUnitT()
    normalization.optionsType = md.ProcessUnitOptions.NormalizationOptions
    normalization.options = md.NormalizationOptionsT()
    normalization.options.mean, normalization.options.std = [0.0], [255.0]
    stats = md.StatsT()
    stats.min, stats.max = [0.0], [1.0]
    image = md.TensorMetadataT()
    image.name, image.content, image.stats = "image", content, stats
    image.processUnits = [normalization]
    outputs = []
    for name in ("landmarks", "presence", "segmentation", "heatmap", "world_landmarks"):
        output = md.TensorMetadataT()
        output.name = name
        outputs.append(output)
    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], outputs
    model = md.ModelMetadataT()
    model.name = "BlazePose GHUM 3D full (pose landmarks detector)"
    model.license = "Apache-2.0"
    model.minParserVersion = "1.0.0"
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"M001")  # the metadata file identifier
    return bytes(builder.Output())


def _with_metadata(tflite: bytes, metadata: bytes) -> bytes:
    """``tflite`` (which has none) with ``metadata`` as its "TFLITE_METADATA" entry and buffer, as
    tflite_support's MetadataPopulator writes it.

    The model is unpacked and packed again with its byte buffers 16-byte aligned, as TFLite's
    schema asks (``force_align: 16``, which the generated Python code ignores).
    """
    import flatbuffers
    from mediapipe.tasks.metadata import schema_py_generated as schema

    class AlignedBuilder(flatbuffers.Builder):
        def CreateNumpyVector(self, x):
            self.Prep(16, x.nbytes)  # the vector's data then starts on a 16-byte boundary
            return super().CreateNumpyVector(x)

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(tflite, 0))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata.append(entry)
    builder = AlignedBuilder(len(tflite) + len(metadata) + 4096)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


def build_bundle(wheel_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Build ``out_dir/BUNDLE_NAME`` (default the cache folder) from the mediapipe 0.10.21 wheel.

    Idempotent: an existing bundle is kept. The wheel's licence is copied beside it as
    ``LICENSE.mediapipe``. The bundle appears atomically (written under a temporary name). A model
    file whose SHA-256 is not the expected one raises ValueError.
    """
    from mediapipe.tasks.python.metadata.metadata_writers import model_asset_bundle_utils

    out_dir = Path(out_dir) if out_dir is not None else default_cache_dir()
    bundle = out_dir / BUNDLE_NAME
    if bundle.is_file():
        return bundle
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel_path) as wheel:
        models = {name: wheel.read(member) for name, (member, _) in _WHEEL_FILES.items()}
        if _WHEEL_LICENSE in wheel.namelist():
            (out_dir / "LICENSE.mediapipe").write_bytes(wheel.read(_WHEEL_LICENSE))
    for name, (member, sha256) in _WHEEL_FILES.items():
        if hashlib.sha256(models[name]).hexdigest() != sha256:
            raise ValueError(f"{wheel_path}: {member} is not the mediapipe 0.10.21 model file")
    models["pose_landmarks_detector.tflite"] = _with_metadata(
        models["pose_landmarks_detector.tflite"], _landmark_metadata()
    )
    with files.atomic_path(bundle) as temporary:
        model_asset_bundle_utils.create_model_asset_bundle(models, str(temporary))
    return bundle


@dataclass
class FoundPerson:
    """One person found in an image (pixel coordinates, x then y)."""

    keypoints: np.ndarray  # float32 [17, 3]: COCO-17 x, y and visibility in [0, 1] (below)
    landmarks: np.ndarray  # float32 [33, 3]: BlazePose x, y and the lower of MediaPipe's
    # visibility (not occluded) and presence (inside the image)
    world_landmarks: np.ndarray  # float32 [33, 3]: metres, camera axes, origin between the hips
    mask: np.ndarray  # bool [H, W]: segmentation > 0.5
    box: np.ndarray  # float32 [4]: x0, y0, x1, y1 of the mask (of the landmarks if it is empty)
    score: float  # mean landmark presence: the Tasks API gives no per-person detection score

    def overlaps(self, other: FoundPerson) -> bool:
        """Whether ``other`` is the same person found twice: masks with IoU > 0.5, or landmarks
        whose median distance is under a tenth of the smaller box's size."""
        union = np.logical_or(self.mask, other.mask).sum()
        if union and np.logical_and(self.mask, other.mask).sum() > 0.5 * union:
            return True
        size = min(np.sqrt(np.prod(p.box[2:] - p.box[:2])) for p in (self, other))
        gap = np.linalg.norm(self.landmarks[:, :2] - other.landmarks[:, :2], axis=1)
        return bool(np.median(gap) < 0.1 * size)

    @property
    def world_keypoints(self) -> np.ndarray:
        """float32 [17, 3]: the world landmarks at the COCO-17 keypoints."""
        return self.world_landmarks[list(COCO_FROM_BLAZEPOSE)]


_RUNTIME_CHATTER = (
    "INFO: ",
    "WARNING: [",
    "WARNING: Logging before InitGoogle",
    "W0000 ",
    "I0000 ",
)


def _quiet_runtime():
    """Drops the start-up and per-call chatter of MediaPipe's native runtime from stderr."""
    return native_logs.captured_stderr(
        keep=lambda line: False, drop=lambda line: line.startswith(_RUNTIME_CHATTER)
    )


class PersonModel:
    """MediaPipe's pose landmarker (BlazePose full, CPU, image mode), built once.

    ``num_poses`` is the most people found in one image; ``detection_confidence`` and
    ``presence_confidence`` are the landmarker's thresholds for the detector and the landmark model.
    The detector's default is below MediaPipe's 0.5, for recall: at 0.5 it misses the astronaut
    standing beside Grace Hopper (tests), and finds no one in scikit-image's photos without people
    at 0.3 either.
    """

    def __init__(
        self,
        bundle: str | os.PathLike | None = None,
        num_poses: int = 8,
        detection_confidence: float = 0.3,
        presence_confidence: float = 0.5,
    ):
        from mediapipe.tasks.python import BaseOptions
        from mediapipe.tasks.python.vision import PoseLandmarker, PoseLandmarkerOptions

        self.bundle = find_bundle(bundle)
        options = PoseLandmarkerOptions(
            base_options=BaseOptions(
                model_asset_path=str(self.bundle), delegate=BaseOptions.Delegate.CPU
            ),
            num_poses=num_poses,
            min_pose_detection_confidence=detection_confidence,
            min_pose_presence_confidence=presence_confidence,
            output_segmentation_masks=True,
        )
        with _quiet_runtime():
            self._landmarker = PoseLandmarker.create_from_options(options)

    def __call__(self, image: np.ndarray) -> list[FoundPerson]:
        """The people in an RGB uint8 [H, W, 3] image, best first, each once."""
        import mediapipe as mp

        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"expected an RGB uint8 [H, W, 3] image, got {image.dtype} {image.shape}"
            )
        height, width = image.shape[:2]
        pixels = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        with _quiet_runtime():
            result = self._landmarker.detect(pixels)
        people = []
        for i, (marks, world) in enumerate(zip(result.pose_landmarks, result.pose_world_landmarks)):
            seen = np.array([[m.visibility or 0.0, m.presence or 0.0] for m in marks], np.float32)
            landmarks = np.array([[m.x * width, m.y * height, 0.0] for m in marks], np.float32)
            landmarks[:, 2] = seen.min(axis=1)
            mask = result.segmentation_masks[i].numpy_view().reshape(height, width) > 0.5
            ys, xs = np.nonzero(mask)
            if xs.size:
                box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
            else:
                box = np.concatenate([landmarks[:, :2].min(0), landmarks[:, :2].max(0)])
            people.append(
                FoundPerson(
                    keypoints=landmarks[list(COCO_FROM_BLAZEPOSE)],
                    landmarks=landmarks,
                    world_landmarks=np.array([[m.x, m.y, m.z] for m in world], np.float32),
                    mask=mask,
                    box=box,
                    score=float(seen[:, 1].mean()),
                )
            )
        kept: list[FoundPerson] = []
        for person in sorted(people, key=lambda p: -p.score):
            if not any(person.overlaps(other) for other in kept):
                kept.append(person)
        return kept

    def close(self) -> None:
        """Frees the landmarker's graph (once). Call it (or use ``with``) before the interpreter
        exits: MediaPipe's own clean-up fails once its threads are gone."""
        if self._landmarker is not None:
            with _quiet_runtime():
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> PersonModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """Print the bundle's path (exit status 1 if it is missing), or build it with ``--build WHEEL``.

    Set-up runs ``python -m jaxpriv.anonymize.person_model`` to see whether the bundle is there,
    and ``python -m jaxpriv.anonymize.person_model --build WHEEL`` where it is not.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", metavar="WHEEL", help="build from this mediapipe-0.10.21 wheel")
    parser.add_argument("--dir", help="the bundle's folder (default: the cache folder)")
    args = parser.parse_args(argv)
    try:
        print(build_bundle(args.build, args.dir) if args.build else find_bundle(args.dir))
    except MissingPersonModelError as error:
        raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
