"""Realistic anonymization (diffusion inpainting) on tiny random pipelines: nothing is downloaded."""

import re

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import diffusion_fixtures as fixtures  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionInpaintPipeline,
)

from jaxpriv.anonymize import realistic  # noqa: E402
from jaxpriv.anonymize.traditional import dilate  # noqa: E402

STEPS = 4
FEATHER = 3
SHOULDERS = {0: (15.5, 4.5), 5: (10.5, 10.5), 6: (20.5, 10.5)}  # COCO nose, shoulders: x, y


@pytest.fixture(scope="module", autouse=True)
def small_model_kernels():
    """One thread and no oneDNN: the tiny models run fastest that way on a busy CPU (oneDNN
    compiles kernels for each new shape; a second thread mostly waits for a shared core)."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    yield
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return fixtures.inpaint_pipeline(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def control_pipe(pipe):
    return fixtures.controlnet_pipeline(pipe, fixtures.controlnet())


@pytest.fixture(scope="module")
def scene():
    """A 48×64 noise image with two rectangular persons."""
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    region = np.zeros((48, 64), dtype=bool)
    region[10:22, 8:20] = True
    region[30:40, 40:56] = True
    return image, region


def far_from(region: np.ndarray, feather: int) -> np.ndarray:
    return ~dilate(torch.from_numpy(region)[None], feather)[0].numpy()


def keypoints(points: dict[int, tuple[float, float]]) -> np.ndarray:
    """COCO ``[17, 3]`` with the given keypoints labelled (visibility 2), the others 0."""
    array = np.zeros((17, 3))
    array[9] = (5.5, 30.5, 0)  # a position without a label: never drawn
    for index, xy in points.items():
        array[index] = (*xy, 2)
    return array


def inpainter(pipe, **options):
    return realistic.Inpainter(pipe, steps=STEPS, feather=FEATHER, margin=0.25, **options)


def test_inpainter_replaces_region_only_and_is_seeded(pipe, scene):
    image, region = scene
    out = inpainter(pipe)(image, region, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out != image).any(-1)[region].mean() > 0.9
    far = far_from(region, FEATHER)
    np.testing.assert_array_equal(out[far], image[far])
    assert (out != image).any(-1)[~region & ~far].any()  # the soft band mixes
    np.testing.assert_array_equal(inpainter(pipe)(image, region, seed=3), out)
    assert (inpainter(pipe)(image, region, seed=4) != out).any(-1)[region].mean() > 0.5


def test_batch_size_does_not_change_the_output(pipe, scene):
    image, region = scene
    one = inpainter(pipe, batch_size=1)(image, region, seed=1)
    np.testing.assert_array_equal(inpainter(pipe, batch_size=2)(image, region, seed=1), one)


def test_empty_region_returns_the_image(pipe, scene):
    image, region = scene
    out = inpainter(pipe)(image, np.zeros_like(region))
    np.testing.assert_array_equal(out, image)


def test_crop_box_is_a_square_with_margin_inside_the_image():
    person = np.zeros((48, 64), dtype=bool)
    person[10:22, 2:10] = True  # 8 wide, 12 high, near the left edge
    x0, y0, x1, y1 = realistic.crop_box(person, margin=0.25, pad=2)
    assert (x1 - x0, y1 - y0) == (18, 18)  # 12 + 2 · 3
    assert x0 == 0 and y0 <= 7 and y1 >= 25
    assert realistic.crop_box(person, margin=4.0) == (0, 0, 64, 48)  # larger than the image


def test_pose_image_draws_the_skeleton():
    canvas = realistic.pose_image([keypoints(SHOULDERS)], (0, 0, 32, 32), 32)
    assert canvas.shape == (32, 32, 3) and canvas.dtype == np.uint8
    joints = {(4, 15): (255, 0, 0), (10, 15): (255, 85, 0), (10, 20): (255, 170, 0)}
    joints[(10, 10)] = (85, 255, 0)  # nose, neck (between the shoulders), right, left shoulder
    limbs = {(10, 18): (153, 0, 0), (10, 12): (153, 51, 0), (7, 15): (0, 0, 153)}
    for (y, x), colour in {**joints, **limbs}.items():
        assert tuple(canvas[y, x]) == colour, (y, x)
    assert not canvas[:3].any() and not canvas[13:].any() and not canvas[:, 23:].any()


def test_pose_image_maps_keypoints_into_the_crop():
    """A crop of 16 px drawn at 32 px: image (14.25, 25.75) lands on crop pixel (8, 11)."""
    canvas = realistic.pose_image([keypoints({0: (14.25, 25.75)})], (10, 20, 26, 36), 32)
    assert tuple(canvas[11, 8]) == (255, 0, 0)
    ys, xs = np.nonzero(canvas.any(-1))
    assert (ys.min() + ys.max(), xs.min() + xs.max()) == (22, 16)  # centred on it
    no_neck = realistic.pose_image([keypoints({5: (10.5, 10.5)})], (0, 0, 32, 32), 32)
    assert not no_neck[10, 12:].any()  # one shoulder: no neck, no limb
    assert not realistic.pose_image(None, (0, 0, 32, 32), 32).any()


def person_keypoints() -> np.ndarray:
    """A skeleton in the scene's first person."""
    return keypoints({k: (x + 1, y + 8) for k, (x, y) in SHOULDERS.items()})


def test_controlnet_conditions_on_the_keypoints(control_pipe, scene):
    image, region = scene
    person = person_keypoints()
    posed = inpainter(control_pipe)(image, region, keypoints=[person], seed=0)
    blank = inpainter(control_pipe)(image, region, seed=0)
    far = far_from(region, FEATHER)
    np.testing.assert_array_equal(posed[far], image[far])
    first = np.zeros_like(region)
    first[10:22, 8:20] = True
    assert (posed != blank).any(-1)[first].mean() > 0.25  # the skeleton lies in its crop
    np.testing.assert_array_equal(posed[region & ~first], blank[region & ~first])  # not here


@pytest.mark.parametrize("control", [False, True])
def test_denoise_reproduces_the_pipeline(pipe, control_pipe, control):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32, generator=g)
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:20, 10:22] = 1
    latents = torch.randn(2, 4, 16, 16, generator=g)
    poses = torch.rand(2, 3, 32, 32, generator=g) if control else None
    controls = {"control_image": poses, "controlnet_conditioning_scale": 0.8} if control else {}
    chosen = control_pipe if control else pipe
    options = {"prompt": "a person", "negative_prompt": "blurry", "guidance": 5.0}

    def generators():
        return [torch.Generator().manual_seed(k) for k in range(2)]

    expected = chosen(
        [options["prompt"]] * 2,
        negative_prompt=[options["negative_prompt"]] * 2,
        image=images,
        mask_image=masks,
        latents=latents,
        num_inference_steps=STEPS,
        guidance_scale=options["guidance"],
        generator=generators(),
        output_type="pt",
        **controls,
    ).images
    cond = realistic.condition(
        chosen, images, masks, generators=generators(), poses=poses, control_scale=0.8, **options
    )
    ours = realistic.denoise(
        chosen, latents.requires_grad_(), cond, steps=STEPS, guidance=options["guidance"]
    )
    assert (ours - expected).abs().max() < 1e-3
    ours.sum().backward()  # differentiable through the checkpointed steps
    assert latents.grad.abs().sum() > 0


def test_kde_histogram_sums_to_one():
    values = torch.rand(3, 50, generator=torch.Generator().manual_seed(0))
    where = values > 0.3
    histogram = realistic.kde_histogram(values, where, torch.linspace(0, 1, 32), 0.05)
    assert histogram.shape == (3, 32)
    torch.testing.assert_close(histogram.sum(-1), torch.ones(3))


def test_wasserstein_of_point_masses_is_their_distance():
    bins = torch.linspace(0, 1, 101)
    a, b = (
        realistic.kde_histogram(torch.tensor([[v]]), torch.tensor([[True]]), bins, 0.02)
        for v in (0.2, 0.65)
    )
    assert abs(float(realistic.wasserstein_1d(a, b, 0.01)) - 0.45) < 0.01


def matching_problem(pipe):
    """Crops of reddish noise, the centre repainted, and the ring around it as the reference."""
    g = torch.Generator().manual_seed(0)
    crops = 0.3 * torch.rand(2, 3, 32, 32, generator=g)
    crops += 0.7 * torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    region = masks[:, 0] > 0
    ring = (torch.nn.functional.max_pool2d(masks, 9, 1, 4)[:, 0] > 0) & ~region
    generators = [torch.Generator().manual_seed(k) for k in range(2)]
    cond = realistic.condition(pipe, crops, masks, guidance=3.0, generators=generators)
    return torch.randn(2, 4, 16, 16, generator=g), cond, crops, region, ring


def match(pipe, problem, **matching):
    matching = realistic.Matching(lr=0.1, **matching)
    return realistic.match_latents(pipe, *problem, steps=STEPS, guidance=3.0, matching=matching)


@pytest.fixture(scope="module")
def matched(pipe):
    problem = matching_problem(pipe)
    return problem, match(pipe, problem, threshold=0.0, max_steps=3)


def test_match_latents_reduces_the_histogram_distance(pipe, matched):
    (_, cond, crops, region, ring), result = matched
    assert result.distances.shape == (4, 2)  # 3 steps
    start, best = result.distances[0], result.distances.min(0).values
    assert (best <= 0.8 * start).all()
    with torch.no_grad():  # the best latents and their images
        images = realistic.denoise(pipe, result.latents, cond, steps=STEPS, guidance=3.0)
    torch.testing.assert_close(images, result.images)
    torch.testing.assert_close(realistic.histogram_distance(images, region, crops, ring), best)


def test_match_latents_stops_below_the_threshold(pipe, matched):
    problem, result = matched
    threshold = float(result.distances[1].max()) + 1e-4  # both reached after the first step
    stopped = match(pipe, problem, threshold=threshold, max_steps=3)
    assert stopped.distances.shape == (2, 2)  # one step taken, then every distance is below
    assert (stopped.distances[-1] < threshold).all()


def test_latent_histogram_inpainter(pipe, scene):
    image, region = scene
    matching = realistic.Matching(ring=4, max_steps=1)
    out = inpainter(pipe, histogram="latent", matching=matching)(image, region, seed=0)
    far = far_from(region, FEATHER)
    np.testing.assert_array_equal(out[far], image[far])
    assert (out != inpainter(pipe)(image, region, seed=0)).any()


def test_region_pixels_are_read_by_refine_only(pipe, scene):
    image, region = scene
    other = image.copy()
    other[region] = 255 - image[region]
    repaint = inpainter(pipe)
    np.testing.assert_array_equal(repaint(other, region, seed=0), repaint(image, region, seed=0))
    refined = repaint.refine(image, region, seed=0, strength=0.5)
    far = far_from(region, FEATHER)
    np.testing.assert_array_equal(refined[far], image[far])
    np.testing.assert_array_equal(repaint.refine(image, region, seed=0, strength=0.5), refined)
    assert (repaint.refine(other, region, seed=0, strength=0.5) != refined).any(-1)[region].any()


@pytest.fixture(scope="module")
def saved(pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    fixtures.controlnet().save_pretrained(folder / "controlnet")
    return fixtures.save(pipe, folder / "inpainting"), folder / "controlnet"


def test_load_pipeline_from_a_local_folder(pipe, control_pipe, saved, scene):
    loaded = realistic.load_pipeline(saved[0], device="cpu")
    assert type(loaded) is StableDiffusionInpaintPipeline
    assert loaded.unet.dtype == torch.float32 and loaded.device.type == "cpu"
    assert isinstance(loaded.scheduler, DDIMScheduler) and loaded.safety_checker is None
    image, region = scene
    np.testing.assert_array_equal(inpainter(loaded)(image, region), inpainter(pipe)(image, region))
    control = realistic.load_pipeline(saved[0], controlnet=saved[1], device="cpu")
    assert type(control) is StableDiffusionControlNetInpaintPipeline
    posed = inpainter(control)(image, region, keypoints=[person_keypoints()])
    np.testing.assert_array_equal(
        posed, inpainter(control_pipe)(image, region, keypoints=[person_keypoints()])
    )


def test_load_pipeline_names_a_missing_or_wrong_folder(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-weights"):
        realistic.load_pipeline(tmp_path / "no-such-weights", device="cpu")
    with pytest.raises(ValueError, match=re.escape(f"{str(tmp_path)!r} is not a diffusers")):
        realistic.load_pipeline(tmp_path, device="cpu")
    with pytest.raises(FileNotFoundError, match="no-such-controlnet"):
        realistic.load_pipeline(saved[0], controlnet=tmp_path / "no-such-controlnet", device="cpu")


def _anonymize_coco(tmp_path, capsys, arguments: list[str]) -> list[dict]:
    """`jaxpriv anonymize` on the COCO fixture (48×64 images, keypoints): the train records."""
    from layout_fixtures import coco_arguments, make_layout

    from jaxpriv import cli
    from jaxpriv.data import pipeline as data_pipeline

    root = make_layout("coco2017", tmp_path / "coco", per_class=1)
    code = cli.main(
        [
            "anonymize",
            *coco_arguments(root),
            "--region",
            "body",
            "--size",
            "16",
            "--test-fraction",
            "0",
            "--diffusion-steps",
            "2",
            "--workers",
            "1",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
            *arguments,
        ]
    )
    assert code in (0, None)
    dataset = capsys.readouterr().out.split("TFDS dataset: ")[1].split()[0]
    return list(data_pipeline.load_source(dataset, "train"))


@pytest.mark.parametrize("histogram", ["none", "latent"])
def test_jaxpriv_anonymize_realistic_keeps_the_region_sensitive(saved, tmp_path, capsys, histogram):
    inpainting, controlnet = saved
    records = _anonymize_coco(
        tmp_path,
        capsys,
        ["--method", "realistic", "--weights", str(inpainting), "--controlnet", str(controlnet)]
        + ["--histogram", histogram],
    )
    assert len(records) == 4 and sum(r["region"].any() for r in records) == 3
    assert all(r["sensitive"].all() for r in records)  # generated from the real surroundings


def test_avatar_with_weights_inpaints_and_refines_by_diffusion(saved, tmp_path, capsys):
    records = _anonymize_coco(
        tmp_path,
        capsys,
        ["--method", "avatar", "--weights", str(saved[0]), "--refine", "0.5"],
    )
    assert len(records) == 4 and sum(r["region"].any() for r in records) == 3
    assert all(r["sensitive"].all() for r in records)  # refined avatars read their surroundings


def test_realistic_needs_local_weights(tmp_path):
    from jaxpriv.anonymize import pipeline

    with pytest.raises(ValueError, match="needs weights: a local Stable Diffusion"):
        pipeline.Options(region="body", method="realistic").check()
    with pytest.raises(ValueError, match="latent .* needs method realistic"):
        pipeline.Options(method="blur", histogram="latent").check()
    with pytest.raises(ValueError, match="refine is a pass over avatars only"):
        pipeline.Options(method="blur", refine=0.2, weights=str(tmp_path)).check()
