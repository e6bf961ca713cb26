"""Avatar anonymization: every real person becomes a rendered synthetic body in the same pose.

Per image (each step a function of its own module):

1. **3-D pose** (:mod:`.pose`): the body model is fitted to the person's 2-D COCO keypoints
   (reprojection loss plus pose and shape priors), and to its 3-D world keypoints where a person
   model gave them (they set the start orientation and settle which way the person faces); a
   person with too few labelled keypoints gets a standing body filling its box;
2. **body model** (:mod:`.body`): ``anny`` (offline, CC0 data in its wheel) or SMPL-H through
   ``smplx`` from the user's licensed files;
3. **render** (:mod:`.render`): pyrender, offscreen, to colour, depth and mask;
4. **remove the real person** (:func:`.compose.remove_person`): the grown person mask is
   filled with background — in videos first from the frames where the camera saw it
   (:meth:`Avatars.plate`), the rest inpainted (OpenCV, or the diffusion inpainter when weights
   are given);
5. **merge** (:func:`.compose.merge`) by the rendered mask and depth;
6. **refine** (optional): a low-strength diffusion pass over the avatars.

Every avatar has an :class:`Identity` (shape, skin and clothing colours) drawn from a seed and
the person's track key, so a tracked person keeps one identity for a whole clip; in videos the
fitted poses of a track are warm-started frame to frame and smoothed over time.

Privacy: an avatar's fully covered pixels depend on the person's keypoints and box (its pose
and place) and on the seed, never on a real pixel value; the pipeline marks them public under
MaskDP (like the region mask, the pose is not protected). The avatar's anti-aliased edge blends
in the background, which reads the real surroundings: both stay sensitive, and so do refined
avatars.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch

from jaxpriv.anonymize.avatar import compose, pose
from jaxpriv.anonymize.avatar.body import BodyModel
from jaxpriv.anonymize.avatar.camera import Camera
from jaxpriv.anonymize.avatar.pose import FittedPose
from jaxpriv.anonymize.avatar.render import Renderer
from jaxpriv.anonymize.readers import Person

SMOOTHING_WINDOW = 5  # frames of the temporal pose smoothing in videos
# Weight of the frame-to-frame changes when a track's frames are fitted together: without it,
# frames pick different 3-D solutions of the same 2-D keypoints, which smoothing would average.
TEMPORAL = 0.01
# L-BFGS iterations of a pose fit. On the bundled photographs 20 instead of 40 moves the fitted
# keypoints by under a pixel (mean reprojection error 5.8 against 5.2 px, most of it the gap
# between MediaPipe's keypoints and the body model's) for half the time.
FIT_STEPS = 20
SHAPE_SPREAD = 0.2  # standard deviation of an identity's shape around the body's neutral shape
PARTS = ("skin", "top", "bottom", "shoes")
# The COCO bones and the part of the body around each: vertices take the part of the nearest
# bone of the standing body; those below the ankles are shoes.
_BONES = (
    ((0, 0), "skin"),  # the head, around the nose
    ((5, 6), "top"),
    ((5, 11), "top"),
    ((6, 12), "top"),
    ((11, 12), "bottom"),
    ((5, 7), "top"),
    ((6, 8), "top"),
    ((7, 9), "skin"),  # forearms and hands: short sleeves
    ((8, 10), "skin"),
    ((11, 13), "bottom"),
    ((12, 14), "bottom"),
    ((13, 15), "bottom"),
    ((14, 16), "bottom"),
)
_SKIN_TONES = np.array(  # sRGB 0..1, light to dark
    [
        [0.96, 0.80, 0.69],
        [0.88, 0.67, 0.52],
        [0.76, 0.54, 0.38],
        [0.55, 0.38, 0.26],
        [0.36, 0.24, 0.16],
    ]
)


@dataclasses.dataclass(frozen=True)
class Identity:
    """What stays fixed for one person across frames: body shape and colours."""

    shape: torch.Tensor  # float [num_shape]
    colours: dict[str, tuple[float, float, float]]  # part name -> sRGB in 0..1


def key_rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def draw_identity(body: BodyModel, seed: int, key: str) -> Identity:
    """A random identity for the person ``key`` (the same key always gets the same one)."""
    rng = key_rng(seed, key)
    spread = torch.as_tensor(rng.normal(0.0, SHAPE_SPREAD, body.num_shape), dtype=torch.float32)
    colours = {
        "skin": tuple(_SKIN_TONES[rng.integers(len(_SKIN_TONES))]),
        "top": tuple(rng.uniform(0.1, 0.9, 3)),
        "bottom": tuple(rng.uniform(0.05, 0.6, 3)),
        "shoes": tuple(rng.uniform(0.0, 0.3) * np.ones(3)),
    }
    return Identity(body.neutral_shape + spread, colours)


def _distance_to_segments(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Distances float [P, S] from points [P, 3] to the segments starts[S, 3]–ends[S, 3]."""
    direction = ends - starts
    length2 = np.maximum((direction**2).sum(-1), 1e-12)
    t = np.clip(((points[:, None] - starts) * direction).sum(-1) / length2, 0.0, 1.0)
    closest = starts + t[..., None] * direction
    return np.linalg.norm(points[:, None] - closest, axis=-1)


def part_labels(body: BodyModel) -> np.ndarray:
    """int [V]: the index in PARTS of each vertex, from the nearest bone of the standing body."""
    with torch.no_grad():
        outputs = body(body.neutral_pose[None], body.neutral_shape[None], torch.zeros(1, 3))
    vertices, keypoints = (array[0].numpy() for array in outputs)
    bones = np.array([bone for bone, _ in _BONES])
    distances = _distance_to_segments(vertices, keypoints[bones[:, 0]], keypoints[bones[:, 1]])
    part_of_bone = np.array([PARTS.index(part) for _, part in _BONES])
    labels = part_of_bone[distances.argmin(1)]
    labels[vertices[:, 1] > keypoints[15:17, 1].max()] = PARTS.index("shoes")  # y points down
    return labels


Planned = list[tuple[FittedPose, Identity]]  # the avatars of one image


def _world_keypoints(person: Person) -> np.ndarray:
    """The person's world keypoints, NaN where it has none (annotated persons)."""
    if person.world_keypoints is None:
        return np.full((17, 3), np.nan, np.float32)
    return person.world_keypoints


@dataclasses.dataclass
class Avatars:
    """Replaces the persons of images or video frames by avatars (see the module docstring).

    ``background``: an ``inpaint(image, mask, seed=) -> image`` for step 4 (default OpenCV);
    ``refine``: a ``refine(image, mask, seed=) -> image`` for step 6 (default none).
    """

    body: BodyModel
    seed: int = 0
    background: Callable[..., np.ndarray] | None = None
    refine: Callable[..., np.ndarray] | None = None
    dilate: int = 2  # px the person mask grows before the background is inpainted
    renderer: Renderer = dataclasses.field(default_factory=Renderer)

    def __post_init__(self) -> None:
        self.parts = part_labels(self.body)

    def colours(self, identity: Identity) -> np.ndarray:
        """float [V, 3]: the identity's colour at every vertex."""
        palette = np.array([identity.colours[part] for part in PARTS])
        return palette[self.parts]

    def fit(
        self, persons: Sequence[Person], camera: Camera, shapes: torch.Tensor, temporal: float = 0.0
    ) -> FittedPose:
        """The poses of ``persons`` with the shapes ``[N, num_shape]``: fitted to their keypoints
        (all in one batch; ``temporal``: they are the frames of one track, see
        `pose.fit_pose`), or standing bodies in their boxes for those with too few."""
        fits = [
            p.keypoints is not None and pose.count_visible(p.keypoints) >= pose.MIN_VISIBLE
            for p in persons
        ]
        fitted_ones = [i for i, f in enumerate(fits) if f]
        boxed_ones = [i for i, f in enumerate(fits) if not f]
        poses = {}
        if fitted_ones:
            keypoints = np.stack([persons[i].keypoints for i in fitted_ones])
            world = np.stack([_world_keypoints(persons[i]) for i in fitted_ones])
            fitted = pose.fit_pose(
                self.body,
                keypoints,
                camera,
                shape=shapes[fitted_ones],
                world=world,
                steps=FIT_STEPS,
                temporal=temporal,
            )
            poses.update((i, fitted[k]) for k, i in enumerate(fitted_ones))
        if boxed_ones:
            boxes = np.array([persons[i].box for i in boxed_ones], np.float32)
            placed = pose.place_in_box(self.body, boxes, camera, shape=shapes[boxed_ones])
            poses.update((i, placed[k]) for k, i in enumerate(boxed_ones))
        return FittedPose.cat([poses[i] for i in range(len(persons))])

    def plan(self, shape: tuple[int, ...], persons: Sequence[Person], key: str) -> Planned:
        """The avatars of one image named ``key``: one per person (crowds excepted)."""
        persons = [p for p in persons if not p.crowd]
        if not persons:
            return []
        identities = [
            draw_identity(self.body, self.seed, f"{key}#{i}") for i in range(len(persons))
        ]
        shapes = torch.stack([identity.shape for identity in identities])
        fitted = self.fit(persons, Camera.for_image(*shape[:2]), shapes)
        return [(fitted[i], identity) for i, identity in enumerate(identities)]

    def plan_video(
        self, frames: Sequence[Sequence[Person]], shape: tuple[int, ...], key: str
    ) -> list[Planned]:
        """The avatars of every frame of a video: one identity per track, the track's poses
        fitted together (all its frames in one batch, kept close from frame to frame) and
        smoothed over time."""
        camera = Camera.for_image(*shape[:2])
        tracks: dict[int, list[tuple[int, Person]]] = {}
        for index, persons in enumerate(frames):
            for number, person in enumerate(p for p in persons if not p.crowd):
                track = person.track_id if person.track_id is not None else -1 - number
                tracks.setdefault(track, []).append((index, person))
        plan: list[Planned] = [[] for _ in frames]
        for track, seen in tracks.items():
            identity = draw_identity(self.body, self.seed, f"{key}@{track}")
            shapes = identity.shape.expand(len(seen), -1)
            fitted = self.fit([person for _, person in seen], camera, shapes, TEMPORAL)
            smoothed = pose.smooth_poses([fitted[i] for i in range(len(seen))], SMOOTHING_WINDOW)
            for (index, _), fitted_pose in zip(seen, smoothed):
                plan[index].append((fitted_pose, identity))
        return plan

    def plate(self, frames: Sequence[np.ndarray], regions: Sequence[np.ndarray]) -> compose.Plate:
        """The background of a video's sampled ``frames`` (`compose.clean_plate`), the person
        ``regions`` grown as step 4 grows them."""
        return compose.clean_plate(frames, [compose.grow(r, self.dilate) for r in regions])

    def meshes(self, planned: Planned) -> list:
        """The camera-frame meshes of the planned avatars, coloured by their identities."""
        with torch.no_grad():
            return [
                (fitted.posed(self.body)[0][0].numpy(), self.body.faces, self.colours(who))
                for fitted, who in planned
            ]

    def paint(
        self,
        image: np.ndarray,
        region: np.ndarray,
        planned: Planned,
        seed: int,
        plate: compose.Plate | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steps 3–6 for one image: (uint8 [H, W, 3], bool [H, W] public avatar pixels, see
        `compose.merge`). ``plate``: the video's background (:meth:`plate`) for step 4."""
        height, width = image.shape[:2]
        meshes = self.meshes(planned)
        rendering = self.renderer.render(meshes, Camera.for_image(height, width), height, width)
        method = (
            "opencv" if self.background is None else functools.partial(self.background, seed=seed)
        )
        background = compose.remove_person(
            image, region, dilate=self.dilate, method=method, plate=plate
        )
        merged, public = compose.merge(background, rendering)
        if self.refine is not None:
            changed = compose.grow(region, self.dilate) | rendering.mask
            refined = self.refine(merged, rendering.mask, seed=seed)
            merged = np.where(changed[..., None], refined, merged)
        return merged, public
