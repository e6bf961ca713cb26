"""Per-image time of avatar anonymization on CPU, step by step.

    python launch/bench_avatar.py [--repeats 3] [--clips 16]

Two kinds of input: the bundled photographs (scikit-image's astronaut, 512×512, and
matplotlib's Grace Hopper, 600×512), each twice — end to end from the pixels, the person found
by the person model (its 2-D and world keypoints and mask), and from the hand-made person
polygons and keypoints of ``tests/photo_fixtures.py`` —, and the embedded synthetic clips (32×32
frames, one figure each, each clip's track fitted in one batch). Prints the median seconds per
image of each step — people (the person model), pose fit, render, background inpainting plus
merge — and images/s. The body model (anny), the person model and the renderer are loaded and
warmed up first, untimed. Needs the person model that ``bash launch/setup.sh`` builds.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from photo_fixtures import PHOTOS, photo_person  # noqa: E402

from jaxpriv.anonymize import pipeline, readers  # noqa: E402
from jaxpriv.anonymize.avatar import anonymizer, body, compose  # noqa: E402
from jaxpriv.anonymize.avatar.camera import Camera  # noqa: E402
from jaxpriv.anonymize.person_model import PersonModel  # noqa: E402


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def steps(avatars, image, region, planned) -> dict[str, float]:
    """Seconds of render and of background removal + merge for one image (as `paint` runs them)."""
    height, width = image.shape[:2]
    meshes = avatars.meshes(planned)
    rendering, render_s = timed(
        avatars.renderer.render, meshes, Camera.for_image(height, width), height, width
    )
    start = time.perf_counter()
    background = compose.remove_person(image, region, dilate=avatars.dilate)
    compose.merge(background, rendering)
    return {"render": render_s, "inpaint+merge": time.perf_counter() - start}


def photographs(avatars, people, repeats: int) -> None:
    for name in PHOTOS:
        image, annotated = photo_person(name)
        size = f"{image.shape[1]}×{image.shape[0]}"
        for source in ("person model", "annotations"):
            times: dict[str, list[float]] = {}
            for _ in range(repeats):
                if source == "person model":
                    (persons, _), people_s = timed(pipeline.model_people, image, people)
                    times.setdefault("people", []).append(people_s)
                else:
                    persons = [annotated]
                planned, fit_s = timed(avatars.plan, image.shape, persons, name)
                region = np.any([p.mask for p in persons], axis=0)
                for step, seconds in {
                    "fit": fit_s,
                    **steps(avatars, image, region, planned),
                }.items():
                    times.setdefault(step, []).append(seconds)
            report(f"{name} {size}, {source}", times)


def synthetic(avatars, clips: int) -> None:
    times: dict[str, list[float]] = {}
    for video in readers.read_synthetic(clips, seed=0, frames=4, size=32):
        shape = video.frames.shape[1:]
        plan, fit_s = timed(avatars.plan_video, video.persons, shape, video.key)
        times.setdefault("fit", []).extend([fit_s / len(plan)] * len(plan))
        for frame, persons, planned in zip(video.frames, video.persons, plan):
            for step, seconds in steps(avatars, frame, persons[0].mask, planned).items():
                times.setdefault(step, []).append(seconds)
    report(f"synthetic 32×32 ({clips} clips × 4 frames)", times)


def report(what: str, times: dict[str, list[float]]) -> None:
    medians = {step: statistics.median(values) for step, values in times.items()}
    total = sum(medians.values())
    parts = "  ".join(f"{step} {seconds * 1000:.0f} ms" for step, seconds in medians.items())
    print(f"{what}: {total:.3f} s/image ({1 / total:.1f} images/s)  [{parts}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per photograph (median)")
    parser.add_argument("--clips", type=int, default=16, help="synthetic clips of 4 frames")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (each anonymization worker has 1)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    avatars = anonymizer.Avatars(body.make_body("anny"))
    with PersonModel() as people:
        warm_up(avatars, people)
        photographs(avatars, people, args.repeats)
    synthetic(avatars, args.clips)


def warm_up(avatars, people) -> None:
    """One untimed pass: the renderer compiles its shaders, the person model loads."""
    image, person = photo_person(next(iter(PHOTOS)))
    pipeline.model_people(image, people)
    steps(avatars, image, person.mask, avatars.plan(image.shape, [person], "warm-up"))


if __name__ == "__main__":
    main()
