"""Avatar rendering and compositing: the mask is the mesh's projection, the nearest avatar wins,
no original pixel of the person survives, and a still video's own frames fill the background."""

import cv2
import numpy as np
import pytest
import torch
import trimesh

from jaxpriv.anonymize.avatar import compose, render
from jaxpriv.anonymize.avatar.camera import Camera
from jaxpriv.anonymize.avatar.compose import grow, merge, remove_person
from jaxpriv.anonymize.avatar.render import Renderer

H, W = 48, 64
CAMERA = Camera(focal=60.0, cx=31.3, cy=22.8)  # off-centre, fractional principal point
SPHERE = trimesh.creation.icosphere(subdivisions=2, radius=0.5)  # 320 outward triangles


@pytest.fixture(scope="module")
def renderer():
    with Renderer() as shared:
        yield shared


def quad(left, top, right, bottom, z):
    """A fronto-parallel rectangle (camera frame, m), facing the camera: vertices [4, 3], faces."""
    vertices = np.array([[left, top, z], [left, bottom, z], [right, bottom, z], [right, top, z]])
    return vertices, np.array([[0, 1, 2], [0, 2, 3]])


def sphere(x, y, z):
    return SPHERE.vertices + [x, y, z], SPHERE.faces


def projected(vertices, faces):
    """Pixel coordinates of the triangles' corners, float [F, 3, 2]."""
    return CAMERA.project(torch.as_tensor(vertices)).numpy()[faces]


def centres_inside(vertices, faces):
    """Bool [H, W]: pixel centres inside the projection of some triangle, either winding."""
    corners = projected(vertices, faces)
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    points = np.stack([j, i], -1).reshape(-1, 1, 2)  # [P, 1, 2]

    def side(start, end):  # [P, F]: > 0 when the point is left of the edge
        edge, offset = end - start, points - start
        return edge[..., 0] * offset[..., 1] - edge[..., 1] * offset[..., 0]

    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    sides = np.stack([side(a, b), side(b, c), side(c, a)])
    inside = (sides >= 0).all(0) | (sides <= 0).all(0)
    return inside.any(1).reshape(H, W)


def distance_to_edges(points, corners):
    """Distance (px) from each point [N, 2] to the nearest triangle edge of corners [F, 3, 2]."""
    start = corners.reshape(-1, 2)
    edge = np.roll(corners, -1, axis=1).reshape(-1, 2) - start
    offset = points[:, None] - start  # [N, E, 2]
    t = np.clip((offset * edge).sum(-1) / (edge * edge).sum(-1), 0, 1)
    return np.linalg.norm(offset - t[..., None] * edge, axis=-1).min(1)


TILTED = np.array([[-0.6, -0.3, 1.8], [-0.5, 0.45, 2.0], [0.5, 0.4, 2.2], [0.45, -0.35, 1.9]])


@pytest.mark.parametrize(
    "mesh",
    [
        sphere(0.13, -0.07, 2.3),
        (TILTED, np.array([[0, 1, 2], [0, 2, 3]])),
        (TILTED, np.array([[0, 2, 1], [0, 3, 2]])),  # facing away from the camera
    ],
    ids=["sphere", "tilted quad", "back-facing quad"],
)
def test_rendered_mask_is_the_projection_of_the_mesh(renderer, mesh):
    vertices, faces = mesh
    rendering = renderer.render([(vertices, faces, (0.9, 0.5, 0.2))], CAMERA, H, W)
    expected = centres_inside(vertices, faces)
    assert rendering.mask.shape == (H, W) and 100 < expected.sum() < H * W - 100
    rows, cols = np.nonzero(rendering.mask != expected)
    # Only a pixel centre lying on an edge (within GL's fixed-point precision) may differ.
    points = np.stack([cols + 0.5, rows + 0.5], -1)
    assert np.all(distance_to_edges(points, projected(vertices, faces)) < 0.01)
    assert len(rows) <= 0.01 * expected.sum()
    assert np.array_equal(rendering.ids, np.where(rendering.mask, 0, -1))
    assert np.array_equal(rendering.depth > 0, rendering.mask)


def test_fronto_parallel_quad_has_its_depth_and_colour(renderer):
    vertices, faces = quad(-0.6, -0.3, 0.5, 0.45, 1.9)
    color = np.array([0.9, 0.5, 0.2])
    rendering = renderer.render([(vertices, faces, color)], CAMERA, H, W)
    mask = rendering.mask
    np.testing.assert_allclose(rendering.depth[mask], 1.9, rtol=1e-5)
    assert np.all(rendering.depth[~mask] == 0)
    # Lit from the camera, a surface facing it shows about its own colour.
    interior = rendering.alpha == 1
    assert interior.sum() > 0.8 * mask.sum() and np.all(interior <= mask)
    assert np.abs(rendering.color[interior] - color * 255).max() <= 12
    assert np.all(rendering.color[rendering.alpha == 0] == 0)  # flat black background
    assert np.all(rendering.alpha[mask] >= 0.25)
    # Per-vertex colours: left edge red, right edge blue.
    per_vertex = np.array([[1.0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]])
    left_right = renderer.render([(vertices, faces, per_vertex)], CAMERA, H, W).color
    red, blue = left_right[H // 2, 15].astype(int), left_right[H // 2, 44].astype(int)
    assert red[0] > red[2] + 100 and blue[2] > blue[0] + 100


@pytest.mark.parametrize("near_first", [True, False])
def test_nearest_of_overlapping_meshes_wins(renderer, near_first):
    near = (*quad(-0.5, -0.3, 0.1, 0.3, 1.5), (1.0, 0.0, 0.0))
    far = (*quad(-0.1, -0.2, 0.6, 0.2, 2.5), (0.0, 0.0, 1.0))
    meshes, near_id = ([near, far], 0) if near_first else ([far, near], 1)
    rendering = renderer.render(meshes, CAMERA, H, W)
    alone = [renderer.render([mesh], CAMERA, H, W) for mesh in meshes]
    both = alone[0].mask & alone[1].mask
    assert both.sum() > 50
    assert np.all(rendering.ids[both] == near_id)
    np.testing.assert_allclose(rendering.depth[both], 1.5, rtol=1e-5)
    assert np.array_equal(rendering.mask, alone[0].mask | alone[1].mask)
    image, public = merge(np.zeros((H, W, 3), np.uint8), rendering)
    solid = both & (alone[near_id].alpha == 1)  # not on the near edge, where the far one shows
    assert np.array_equal(image[solid], alone[near_id].color[solid])
    assert np.all(image[solid][:, 0] > 200) and np.all(public[solid])


def test_public_avatar_pixels_do_not_depend_on_the_background(renderer):
    """One rendering over different backgrounds: no public pixel changes, and every other avatar
    pixel (the anti-aliased edge, 0 < alpha < 1) shows the background and is not public."""
    rendering = renderer.render([(*sphere(0.13, -0.07, 2.3), (0.9, 0.5, 0.2))], CAMERA, H, W)
    edge = rendering.mask & (rendering.alpha > 0) & (rendering.alpha < 1)
    assert edge.sum() > 10
    rng = np.random.default_rng(0)
    backgrounds = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2)]
    backgrounds += [np.zeros((H, W, 3), np.uint8), np.full((H, W, 3), 255, np.uint8)]
    (first, public), *others = [merge(background, rendering) for background in backgrounds]
    assert public.sum() > 0.5 * rendering.mask.sum() and not (public & edge).any()
    for out, same in others:
        assert np.array_equal(same, public) and np.array_equal(out[public], first[public])
    black, white = others[-2][0], others[-1][0]
    shows_background = np.any(black != white, axis=-1)
    assert np.array_equal(rendering.mask & shows_background, rendering.mask & ~public)


def test_no_meshes_renders_nothing(renderer):
    rendering = renderer.render([], CAMERA, H, W)
    assert not rendering.mask.any() and np.all(rendering.ids == -1)
    assert rendering.color.shape == (H, W, 3) and rendering.depth.shape == (H, W)


PERSON, HALO = (250, 5, 250), (5, 250, 5)  # colours found nowhere else in the scene


def person_scene(seed=0):
    """Random background (channels < 200) with a person box of a unique colour and, just outside
    the detector's mask, a 2-px halo of another unique colour: image, person mask."""
    image = np.random.default_rng(seed).integers(0, 200, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[10:38, 20:36] = True
    image[grow(mask, 2)] = HALO
    image[mask] = PERSON
    return image, mask


def shows(image, color):
    return np.all(image == np.array(color, np.uint8), axis=-1)


def test_person_is_replaced_and_nothing_original_survives_in_the_region(renderer):
    image, mask = person_scene()
    dilate = 4
    background = remove_person(image, mask, dilate=dilate)
    # The avatar covers part of the person and sticks out of the region on the right.
    avatar_mesh = (*sphere(0.12, 0.0, 3.0), (0.2, 0.7, 0.4))
    rendering = renderer.render([avatar_mesh], CAMERA, H, W)
    assert (rendering.mask & mask).any() and (mask & ~rendering.mask).any()
    assert (rendering.mask & ~grow(mask, dilate)).any()
    out, public = merge(background, rendering)
    avatar = rendering.mask

    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(public, avatar & (rendering.alpha == 1))
    region = grow(mask, dilate)
    assert not (shows(out, PERSON) | shows(out, HALO)).any()  # neither the person nor its halo
    assert out[..., 0].max() < 250 and out[..., 1].max() < 250  # nor a blend of them
    solid = rendering.alpha == 1
    assert np.array_equal(out[solid], rendering.color[solid])
    assert np.array_equal(out[~region & ~avatar], image[~region & ~avatar])  # the rest untouched
    assert np.array_equal(background[~region], image[~region])


def test_custom_inpainter_fills_the_grown_mask_only():
    image, mask = person_scene()
    seen = []

    def inpaint(pixels, holes):
        seen.append(holes)
        return np.full_like(pixels, 7)  # also changes pixels outside the holes

    out = remove_person(image, mask, dilate=3, method=inpaint)
    region = grow(mask, 3)
    assert np.array_equal(seen[0], region)
    assert np.all(out[region] == 7) and np.array_equal(out[~region], image[~region])
    with pytest.raises(ValueError, match="unknown inpainting method"):
        remove_person(image, mask, method="telea")


def test_a_window_around_the_meshes_renders_what_the_full_image_would(renderer, monkeypatch):
    """Only the meshes' window is drawn; the full render (window forced to the whole image)
    covers the same pixels, with the same ids and coverage."""
    meshes = [
        (*sphere(0.13, -0.07, 2.3), (0.9, 0.5, 0.2)),
        (*sphere(-0.6, 0.2, 4.0), (0.1, 0.2, 1)),
    ]
    assert render._window(meshes, CAMERA, H, W) != (0, 0, W, H)  # a real window
    outside = sphere(40.0, 0.0, 2.0)  # projects beyond the image: nothing to draw
    assert render._window([(*outside, (1, 1, 1))], CAMERA, H, W) is None
    windowed = renderer.render(meshes, CAMERA, H, W)
    monkeypatch.setattr(render, "_window", lambda meshes, camera, height, width: (0, 0, W, H))
    full = renderer.render(meshes, CAMERA, H, W)
    assert windowed.mask.sum() > 100
    for field in ("mask", "ids", "alpha"):
        assert np.array_equal(getattr(windowed, field), getattr(full, field)), field
    assert np.abs(windowed.color.astype(int) - full.color).max() <= 1
    np.testing.assert_allclose(windowed.depth, full.depth, rtol=1e-5)


def test_large_holes_are_filled_at_reduced_resolution_without_reading_the_hole():
    """Above the size limit the fill is computed on a shrunk image, yet no hole pixel's value
    reaches it: two different contents of the hole give the same output."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 200, (600, 600, 3), dtype=np.uint8)
    holes = np.zeros((600, 600), bool)
    holes[101:480, 150:333] = True  # 69,457 px: over the limit, odd borders
    assert holes.sum() > compose._FULL_RESOLUTION_HOLE
    other = image.copy()
    other[holes] = 255
    filled = compose.telea(image, holes)
    assert np.array_equal(filled, compose.telea(other, holes))
    assert np.array_equal(filled[~holes], image[~holes])
    small = np.zeros_like(holes)
    small[200:260, 200:260] = True  # under the limit: OpenCV's Telea itself
    expected = cv2.inpaint(image, small.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    assert np.array_equal(compose.telea(image, small), expected)


def still_video(frames=8, shift=0):
    """A textured background seen by a camera that holds still (or pans ``shift`` px a frame),
    and a person box walking across it: frames, person masks, the true backgrounds."""
    rng = np.random.default_rng(2)
    world = cv2.GaussianBlur(
        rng.integers(0, 256, (H, W + 8 * frames, 3), dtype=np.uint8), (5, 5), 0
    )
    images, masks, truths = [], [], []
    for t in range(frames):
        truth = world[:, t * shift : t * shift + W].copy()
        mask = np.zeros((H, W), bool)
        mask[8:40, 4 + 6 * t : 16 + 6 * t] = True
        image = truth.copy()
        image[mask] = PERSON
        images.append(image), masks.append(mask), truths.append(truth)
    return images, masks, truths


def test_a_still_camera_video_fills_the_person_from_the_frames_that_show_the_background():
    images, masks, truths = still_video()
    holes = [grow(mask, 2) for mask in masks]
    plate = compose.clean_plate(images, holes)
    assert plate.known.all()  # the walker uncovers every pixel in some frame
    for image, mask, truth in zip(images, masks, truths):
        out = remove_person(image, mask, dilate=2, plate=plate)
        assert np.array_equal(out, truth)  # the true background, not an inpainted smear
        assert not np.array_equal(remove_person(image, mask, dilate=2), truth)
    # A pixel no frame shows is inpainted: the plate leaves it to OpenCV.
    always = np.zeros((H, W), bool)
    always[20:30, 50:60] = True
    covered = [hole | always for hole in holes]
    plate = compose.clean_plate(images, covered)
    assert not plate.known[always].any() and plate.known[~always].all()
    out = remove_person(images[0], masks[0] | always, dilate=2, plate=plate)
    assert not shows(out, PERSON).any()
    assert np.array_equal(out[holes[0] & ~grow(always, 2)], truths[0][holes[0] & ~grow(always, 2)])


def test_a_panning_camera_falls_back_to_inpainting():
    images, masks, _ = still_video(shift=3)
    plate = compose.clean_plate(images, [grow(mask, 2) for mask in masks])
    for image, mask in zip(images, masks):
        assert np.array_equal(
            remove_person(image, mask, dilate=2, plate=plate), remove_person(image, mask, dilate=2)
        )


def test_the_clean_plate_never_reads_a_hole():
    images, masks, _ = still_video()
    holes = [grow(mask, 2) for mask in masks]
    repainted = [
        np.where(hole[..., None], np.uint8(0), image) for image, hole in zip(images, holes)
    ]
    first, second = compose.clean_plate(images, holes), compose.clean_plate(repainted, holes)
    assert np.array_equal(first.pixels, second.pixels) and np.array_equal(first.known, second.known)
