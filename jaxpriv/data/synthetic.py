"""Embedded default dataset: a synthetic avatar performing an action in a scene.

Each example shows a solid-coloured, person-like figure (head, torso, arms,
legs; 18-21 px tall) over a textured background. The action decides the
figure's motion over the frames *and* its limb pose, so that a single frame
still shows it:

* ``walk_right`` / ``walk_left``: moves sideways (1-2 px per frame), one arm
  stretched forward, legs alternating between apart and together;
* ``jump``: both arms up, hops vertically (at most 4 px high);
* ``wave``: stays in place, one arm up, waving sideways.

The context decides the static background texture: ``indoor`` has horizontal
stripes in warm colours, ``outdoor`` vertical stripes in cool colours with a
top-to-bottom brightness gradient. Colour ranges overlap, so the texture
orientation, not a single pixel, tells the contexts apart. The background
gets fresh uniform noise in every frame; the figure is one exact colour.

``label = action * NUM_CONTEXTS + context``: the class depends on both the
figure and the background. The ``sensitive`` mask follows a policy of
`jaxpriv.data.sensitivity`: ``"real"`` (the background is real and
sensitive, the figure is a public synthetic avatar), ``"all"`` or ``"none"``.

The figure's solid 10x12 px torso and its motion of at most 2 px per frame
leave several 4x4 patches (and 2-frame tubelets) entirely inside the figure.
"""

from __future__ import annotations

import numpy as np

from jaxpriv.data import schema
from jaxpriv.data import sensitivity as sensitivity_rule

ACTIONS = ("walk_right", "walk_left", "jump", "wave")
CONTEXTS = ("indoor", "outdoor")
NUM_ACTIONS = len(ACTIONS)
NUM_CONTEXTS = len(CONTEXTS)
CLASS_NAMES = tuple(f"{action}_{context}" for action in ACTIONS for context in CONTEXTS)
NUM_CLASSES = NUM_ACTIONS * NUM_CONTEXTS
KINDS = {"video": schema.VIDEO, "image": schema.IMAGE}
DEFAULT_FRAMES = 8
DEFAULT_SIZE = 32

MAX_SPEED = 2.0  # walking speed, px per frame
MAX_HOP = 4.0  # jump height, px
HOP_PERIOD = 8.0  # frames per hop
NOISE = 12  # background noise: uniform integers in [-NOISE, NOISE]
MIN_STRIPE_CONTRAST = 50.0  # grey levels between a stripe and the next
_CHUNK = 256  # examples rendered at once (bounds memory)

# Figure parts as rectangles (row0, row1, col0, col1), half-open, relative to
# (top of the head, horizontal centre), drawn for the right-facing figure.
_HEAD = (0, 4, -2, 2)
_HEAD_FORWARD = (0, 4, -1, 3)
_TORSO = (4, 14, -6, 6)
_LEGS_TOGETHER = (14, 18, -5, 5)
_LEGS_APART = ((14, 18, -6, -2), (14, 18, 2, 6))
_ARM_LEFT_DOWN = (4, 12, -8, -6)
_ARM_LEFT_UP = (-3, 5, -8, -6)
_ARM_RIGHT_UP = (-3, 5, 6, 8)
_ARM_RIGHT_FORWARD = (5, 7, 6, 10)
_ARM_RIGHT_WAVING = ((-3, 3, 8, 10), (3, 5, 6, 10))


def _mirror(parts):
    """Mirrors rectangles about the figure's vertical axis."""
    return [(r0, r1, -c1, -c0) for r0, r1, c0, c1 in parts]


def _pose_table() -> np.ndarray:
    """Figure rectangles: int32 [NUM_ACTIONS, 2 pose phases, parts, 4].

    Shorter part lists are padded with empty rectangles.
    """
    walk = [
        [_HEAD_FORWARD, _TORSO, _ARM_RIGHT_FORWARD, *_LEGS_APART],
        [_HEAD_FORWARD, _TORSO, _ARM_RIGHT_FORWARD, _LEGS_TOGETHER],
    ]
    jump = [_HEAD, _TORSO, _ARM_LEFT_UP, _ARM_RIGHT_UP, _LEGS_TOGETHER]
    wave = [
        [_HEAD, _TORSO, _ARM_LEFT_DOWN, _ARM_RIGHT_UP, _LEGS_TOGETHER],
        [_HEAD, _TORSO, _ARM_LEFT_DOWN, *_ARM_RIGHT_WAVING, _LEGS_TOGETHER],
    ]
    poses = [walk, [_mirror(phase) for phase in walk], [jump, jump], wave]
    num_parts = max(len(phase) for action in poses for phase in action)
    empty = (0, 0, 0, 0)
    return np.array(
        [[phase + [empty] * (num_parts - len(phase)) for phase in action] for action in poses],
        dtype=np.int32,
    )


_POSES = _pose_table()
# Bounding box (row0, row1, col0, col1) of each action over its pose phases.
_EXTENT = np.stack(
    [
        _POSES[..., 0].min(axis=(1, 2)),
        _POSES[..., 1].max(axis=(1, 2)),
        _POSES[..., 2].min(axis=(1, 2)),
        _POSES[..., 3].max(axis=(1, 2)),
    ],
    axis=-1,
)


def _uniform(rng, low, high):
    """Uniform floats in [low, high], elementwise over arrays of one shape."""
    return low + (high - low) * rng.random(np.shape(low))


def _sample_scenes(rng, num_examples: int, frames: int, size: int) -> dict:
    """Draws every per-example random choice except the pixel noise."""
    n = num_examples
    label = rng.permutation(np.arange(n) % NUM_CLASSES)
    action, context = np.divmod(label, NUM_CONTEXTS)
    row0, row1, col0, col1 = _EXTENT[action].T
    t = np.arange(frames)

    # Walkers move `velocity` px per frame and stay inside the frame.
    direction = np.select([action == 0, action == 1], [1.0, -1.0], 0.0)
    max_speed = np.minimum(MAX_SPEED, (size - (col1 - col0)) / max(frames - 1, 1))
    velocity = direction * _uniform(rng, max_speed / 2, max_speed)
    travel = velocity * (frames - 1)
    x0 = _uniform(rng, -col0 - np.minimum(travel, 0), size - col1 - np.maximum(travel, 0))
    centre = np.rint(x0[:, None] + velocity[:, None] * t)

    # Jumpers hop along |sin| arcs; the hop never leaves the frame.
    hop = np.where(action == 2, _uniform(rng, np.full(n, MAX_HOP / 2), MAX_HOP), 0.0)
    hop_phase = rng.random((n, 1))
    y0 = _uniform(rng, hop - row0, size - row1)
    top = np.rint(y0[:, None] - hop[:, None] * np.abs(np.sin(np.pi * (t / HOP_PERIOD + hop_phase))))

    # Stripes alternate between a base colour and a darker shade of it.
    warm = rng.uniform([110, 70, 40], [250, 200, 170], size=(n, 3))
    cool = rng.uniform([40, 70, 110], [170, 200, 250], size=(n, 3))
    base = np.where((context == 0)[:, None], warm, cool)
    contrast = rng.uniform(MIN_STRIPE_CONTRAST, 2 * MIN_STRIPE_CONTRAST, size=(n, 1))
    shade = np.clip(base - contrast, 0, None)
    return dict(
        label=label,
        action=action,
        context=context,
        top=top.astype(np.int32),
        centre=centre.astype(np.int32),
        pose_phase=(rng.integers(0, 2, size=(n, 1)) + t) % 2,
        figure_colour=rng.integers(0, 256, size=(n, 3)).astype(np.uint8),
        palette=np.stack([base, shade], axis=1).astype(np.float32),
        stripe_frequency=rng.uniform(1 / 8, 1 / 4, size=n).astype(np.float32),
        stripe_phase=rng.random(n, dtype=np.float32),
    )


def _figure_masks(scenes: dict, size: int) -> np.ndarray:
    """Rasterises the figures: bool [N, T, size, size], True on the figure."""
    rects = _POSES[scenes["action"][:, None], scenes["pose_phase"]]  # N,T,K,4
    rows = rects[..., 0:2] + scenes["top"][..., None, None]
    cols = rects[..., 2:4] + scenes["centre"][..., None, None]
    grid = np.arange(size)
    in_rows = (grid >= rows[..., :1]) & (grid < rows[..., 1:])  # N,T,K,H
    in_cols = (grid >= cols[..., :1]) & (grid < cols[..., 1:])  # N,T,K,W
    hits = np.matmul(in_rows.swapaxes(-1, -2).astype(np.float32), in_cols.astype(np.float32))
    return hits > 0


def _backgrounds(scenes: dict, size: int) -> np.ndarray:
    """Static noise-free background per example: int16 [N, size, size, 3]."""
    grid = np.arange(size, dtype=np.float32)
    indoor = (scenes["context"] == 0)[:, None, None]
    # Indoor stripes vary along rows (horizontal stripes), outdoor along columns.
    coord = np.where(indoor, grid[:, None], grid[None, :])
    frequency, phase = (
        scenes["stripe_frequency"][:, None, None],
        scenes["stripe_phase"][:, None, None],
    )
    mix = (0.5 + 0.5 * np.sin(2 * np.pi * (coord * frequency + phase)))[..., None]
    colour_a, colour_b = scenes["palette"][:, 0, None, None], scenes["palette"][:, 1, None, None]
    texture = colour_a + (colour_b - colour_a) * mix
    gradient = np.where(indoor, 1.0, 0.8 + 0.4 * grid[:, None] / size)[..., None]
    return np.rint(texture * gradient).astype(np.int16)


def _render(rng, scenes: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels uint8 [N, T, size, size, 3] and figure masks for some scenes."""
    figure = _figure_masks(scenes, size)
    background = rng.integers(-NOISE, NOISE + 1, size=(*figure.shape, 3), dtype=np.int16)
    background += _backgrounds(scenes, size)[:, None]
    background = np.clip(background, 0, 255).astype(np.uint8)
    # The avatar wears a 2-px checked pattern that moves with it, so motion is visible
    # inside the figure too (not only at its outline).
    grid = np.arange(size)
    rows = grid[None, None, :, None] - scenes["top"][..., None, None]
    cols = grid[None, None, None, :] - scenes["centre"][..., None, None]
    dark = ((rows // 2 + cols // 2) % 2 == 1)[..., None]
    colour = scenes["figure_colour"][:, None, None, None, :]
    colour = np.where(dark, colour // 2, colour)
    return np.where(figure[..., None], colour, background), figure


def check_options(*, kind: str, sensitivity: str) -> None:
    """Raises ValueError unless `kind` and `sensitivity` are known."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    sensitivity_rule.check_policy(sensitivity)


def generate(
    num_examples: int,
    *,
    seed,
    kind: str = "video",
    frames: int = DEFAULT_FRAMES,
    size: int = DEFAULT_SIZE,
    sensitivity: str = "real",
) -> dict[str, np.ndarray]:
    """Generates a deterministic synthetic dataset.

    Args:
      num_examples: number of examples N.
      seed: anything `np.random.default_rng` accepts (int or sequence of ints).
      kind: "video" (T frames) or "image" (a single frame).
      frames: T, frames per video clip (ignored for images).
      size: height and width in pixels, at least 32.
      sensitivity: "real", "all" or "none" (see the module docstring).

    Returns:
      `{"video": uint8 [N,T,H,W,3], "label": int64 [N], "sensitive": uint8
      [N,T,H,W]}`; for images `"image"` is uint8 [N,H,W,3] and `"sensitive"`
      [N,H,W]. The classes are balanced (N // 8 or N // 8 + 1 examples each)
      and shuffled.
    """
    check_options(kind=kind, sensitivity=sensitivity)
    if size < DEFAULT_SIZE:
        raise ValueError(
            f"size must be at least {DEFAULT_SIZE} px for the figure to fit, got {size}"
        )
    frames = 1 if kind == "image" else frames
    rng = np.random.default_rng(seed)
    scenes = _sample_scenes(rng, num_examples, frames, size)
    pixels = np.empty((num_examples, frames, size, size, 3), np.uint8)
    sensitive = np.empty((num_examples, frames, size, size), np.uint8)
    for start in range(0, num_examples, _CHUNK):
        chunk = slice(start, start + _CHUNK)
        pixels[chunk], figure = _render(rng, {k: v[chunk] for k, v in scenes.items()}, size)
        sensitive[chunk] = sensitivity_rule.sensitive_mask(figure, sensitivity)
    if kind == "image":
        pixels, sensitive = pixels[:, 0], sensitive[:, 0]
    return {
        KINDS[kind]: pixels,
        schema.LABEL: scenes["label"].astype(np.int64),
        schema.SENSITIVE: sensitive,
    }


# COCO keypoints (row, col, visibility) of each action's two pose phases, relative to (top of
# the head, horizontal centre) like the parts above, for a figure facing the camera (its left side
# on the image's right). Only the nose is labelled on the face (eyes and ears are 0: the face box
# then follows the nose, as for real persons annotated with a nose only). An arm hidden behind the
# torso of a walker has visibility 1 (labelled, not visible), at the torso's side.
_EYES_EARS = [(0, 0, 0)] * 4
_SHOULDERS = [(4.5, 5, 2), (4.5, -5, 2)]
_HIPS = [(13.5, 3.5, 2), (13.5, -3.5, 2)]
_KNEES_ANKLES_TOGETHER = [(16, 2.5, 2), (16, -2.5, 2), (17.5, 2.5, 2), (17.5, -2.5, 2)]
_KNEES_ANKLES_APART = [(16, 4, 2), (16, -4, 2), (17.5, 4, 2), (17.5, -4, 2)]
# (left elbow, right elbow, left wrist, right wrist)
_ARMS_WALK = [(6, 8, 2), (8, -5, 1), (6, 9.5, 2), (11, -5, 1)]
_ARMS_JUMP = [(1, 7, 2), (1, -7, 2), (-2.5, 7, 2), (-2.5, -7, 2)]
_ARMS_WAVE = [(1, 7, 2), (8, -7, 2), (-2.5, 7, 2), (11.5, -7, 2)]
_ARMS_WAVING = [(4, 9, 2), (8, -7, 2), (-2.5, 9, 2), (11.5, -7, 2)]


def _keypoint_phase(arms, legs, head=_HEAD) -> list:
    elbows, wrists = arms[:2], arms[2:]
    nose = ((head[0] + head[1]) / 2, (head[2] + head[3]) / 2, 2)  # the head's centre
    return [nose, *_EYES_EARS, *_SHOULDERS, *elbows, *wrists, *_HIPS, *legs]


def _mirror_keypoints(phase: list) -> list:
    """The mirrored figure, still facing the camera: columns negated, left and right swapped."""
    swapped = [phase[0]] + [phase[i + 1 - 2 * ((i - 1) % 2)] for i in range(1, len(phase))]
    return [(row, -col, visibility) for row, col, visibility in swapped]


def _keypoint_table() -> np.ndarray:
    """float32 [NUM_ACTIONS, 2 pose phases, 17, 3]: (row, col, visibility) per keypoint."""
    walk = [
        _keypoint_phase(_ARMS_WALK, _KNEES_ANKLES_APART, _HEAD_FORWARD),
        _keypoint_phase(_ARMS_WALK, _KNEES_ANKLES_TOGETHER, _HEAD_FORWARD),
    ]
    jump = _keypoint_phase(_ARMS_JUMP, _KNEES_ANKLES_TOGETHER)
    wave = [
        _keypoint_phase(_ARMS_WAVE, _KNEES_ANKLES_TOGETHER),
        _keypoint_phase(_ARMS_WAVING, _KNEES_ANKLES_TOGETHER),
    ]
    poses = [walk, [_mirror_keypoints(phase) for phase in walk], [jump, jump], wave]
    return np.array(poses, dtype=np.float32)


_KEYPOINTS = _keypoint_table()


def keypoints(
    num_examples: int, *, seed, frames: int = DEFAULT_FRAMES, size: int = DEFAULT_SIZE
) -> np.ndarray:
    """COCO keypoints of the figures in the video clips of `generate` with the same arguments.

    Returns float32 [N, T, 17, 3]: (x, y, visibility) in pixel coordinates (pixel (i, j) spans
    [j, j+1) × [i, i+1)); the nose is the head's centre; unlabelled points are (0, 0, 0) as
    in COCO.
    """
    scenes = _sample_scenes(np.random.default_rng(seed), num_examples, frames, size)
    table = _KEYPOINTS[scenes["action"][:, None], scenes["pose_phase"]]  # N,T,17,3
    x = scenes["centre"][..., None] + table[..., 1]
    y = scenes["top"][..., None] + table[..., 0]
    labelled = table[..., 2] > 0
    return np.stack([x * labelled, y * labelled, table[..., 2]], axis=-1).astype(np.float32)
