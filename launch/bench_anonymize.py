"""Throughput of the traditional anonymization methods on CPU.

    python launch/bench_anonymize.py [--batch 32] [--size 512] [--repeats 5] [--threads 2]

Synthetic random images with two person-shaped regions each (an ellipse body under a round
head); prints the median images/s of each method, then checks the goal of ≥ 100 images/s for
blur and mask-out. ``--pipeline N`` also times ``jaxpriv anonymize`` end to end (decode,
regions, method, drop-in copy, records, TFDS; 2 workers) on N JPEG files with COCO annotations:
random crops of the photographs that ship with scikit-image (JPEG coding of photographs costs
what it costs on real datasets; random noise would cost ~2x more). ``--faces N`` times the
face path of a folder without annotations (the face detector on every image; 2 workers) on N
such photographs, with and without the search on turned copies where nothing is found upright,
and counts the images where faces were found only turned and where none were found.
``--tasks N`` times ``jaxpriv anonymize`` split over 1 and over N tasks (separate processes of
one worker and one thread each, started together, as a SLURM array would run them; the last
writes the dataset) on the ``--pipeline`` photographs (default 600), with ``--tasks-method``.
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

from jaxpriv.anonymize import histogram, readers, runner, settings, traditional

GOAL = 100.0  # images/s at 512×512 on the 2-core CPU
GOAL_METHODS = ("blur", "maskout")


def person_masks(batch: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Bool ``[batch, size, size]``: two standing figures per image at random positions."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(batch, size, size, dtype=torch.bool)
    for person in range(2):
        height = size * (0.45 + 0.2 * torch.rand(batch, 1, 1, generator=generator))
        width = height / 3
        # Left and right halves of the image, so the two figures rarely overlap.
        jitter = torch.rand(batch, 1, 1, generator=generator) - 0.5
        cx = size * (0.25 + 0.5 * person + 0.1 * jitter)
        top = (size - height) * torch.rand(batch, 1, 1, generator=generator)
        head = height / 8
        cy = top + 2 * head + (height - 2 * head) / 2
        body = ((x - cx) / (width / 2)) ** 2 + ((y - cy) / ((height - 2 * head) / 2)) ** 2 <= 1
        face = (x - cx) ** 2 + (y - top - head) ** 2 <= head**2
        masks |= body | face
    return masks


def images_per_second(fn, images, masks, repeats: int) -> float:
    fn(images, masks)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(images, masks)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def write_coco_folder(root: Path, images: torch.Tensor, masks: torch.Tensor) -> Path:
    """JPEG files and a COCO json whose one annotation per image is its person mask (RLE)."""
    entries, annotations = [], []
    for i, (image, mask) in enumerate(zip(images.numpy(), masks.numpy())):
        name = f"images/{i:05d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        height, width = mask.shape
        flat = mask.T.reshape(-1)  # COCO RLE runs are column-major, starting with zeros
        changes = [0, *(flat[1:] != flat[:-1]).nonzero()[0] + 1, flat.size]
        counts = [int(b - a) for a, b in zip(changes[:-1], changes[1:])]
        counts = ([0] if flat[0] else []) + counts
        entries.append({"id": i, "file_name": name, "height": height, "width": width})
        annotations.append(
            {
                "id": i,
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [0, 0, width, height],
                "segmentation": {"size": [height, width], "counts": counts},
            }
        )
    path = root / "instances.json"
    path.write_text(
        json.dumps(
            {
                "images": entries,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    return path


def photographs(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """uint8 ``[count, size, size, 3]``: random flipped crops of scikit-image's colour photos."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    images = torch.empty(count, size, size, 3, dtype=torch.uint8)
    for i in range(count):
        photo = sources[i % len(sources)]
        scale = 1.25 * size / min(photo.shape[:2])
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        top, left = (
            int(torch.randint(0, extent - size + 1, (), generator=generator))
            for extent in photo.shape[:2]
        )
        crop = torch.from_numpy(photo[top : top + size, left : left + size])
        images[i] = crop.flip(1) if i % 2 else crop
    return images


def pipeline_images_per_second(method: str, root: Path, annotations: Path) -> float:
    samples = readers.read_coco(annotations, root)
    options = settings.Options(region="body", method=method, test_fraction=0.0)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner.run(samples, out, options, workers=2, progress=False)
        return len(samples) / (time.perf_counter() - start)


def tasks_images_per_second(method: str, root: Path, annotations: Path, tasks: int) -> float:
    """images/s of ``jaxpriv anonymize`` run as ``tasks`` processes at once, start to dataset."""
    count = len(json.loads(annotations.read_text())["images"])
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "jaxpriv.cli", "anonymize", "--format", "coco"]
        command += ["--input", str(root), "--annotations", str(annotations), "--out", out]
        command += ["--region", "body", "--method", method, "--test-fraction", "0"]
        command += ["--workers", "1", "--no-progress", "--num-tasks", str(tasks)]
        environ = {**os.environ, "OMP_NUM_THREADS": "1"}  # a core each, as a cluster gives
        start = time.perf_counter()
        running = [
            subprocess.Popen(
                [*command, "--task-index", str(i)], stdout=subprocess.DEVNULL, env=environ
            )
            for i in range(tasks)
        ]
        if any(process.wait() for process in running):
            raise RuntimeError("a task failed")
        seconds = time.perf_counter() - start
        assert (Path(out) / "summary.json").exists()
    return count / seconds


def face_search_cost(root: Path, search: bool) -> tuple[float, list[dict]]:
    """(images/s, per-input reports) of blurring faces found by the default detector."""
    samples = readers.read_folder(root)
    options = settings.Options(method="blur", test_fraction=0.0, search_rotations=search)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        runner.run(samples, out, options, workers=2, progress=False)
        seconds = time.perf_counter() - start
        lines = (Path(out) / "inputs.jsonl").read_text().splitlines()
    return len(samples) / seconds, [json.loads(line) for line in lines]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--pipeline",
        type=int,
        default=0,
        metavar="N",
        help="also time the whole pipeline on N images (0: skip)",
    )
    parser.add_argument(
        "--faces",
        type=int,
        default=0,
        metavar="N",
        help="also time the face detector path with and without the rotated-face search on N "
        "photographs (0: skip)",
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=0,
        metavar="N",
        help="also time the command split over N tasks against one task (0: skip)",
    )
    parser.add_argument(
        "--tasks-method", default="blur", help="the method of --tasks (default blur)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.batch, args.size, args.size, 3), dtype=torch.uint8, generator=generator
    )
    masks = person_masks(args.batch, args.size, generator)
    methods = {name: method.fn for name, method in traditional.METHODS.items()}
    methods["maskout(noise)"] = functools.partial(traditional.mask_out, fill="noise")
    methods["equalize"] = histogram.equalize
    methods["match_histograms"] = histogram.match_histograms
    print(
        f"{args.batch} images {args.size}x{args.size}, two persons each "
        f"({masks.float().mean():.0%} of the pixels), torch CPU, {args.threads} threads"
    )
    rates = {}
    for name, fn in methods.items():
        rates[name] = images_per_second(fn, images, masks, args.repeats)
        print(f"  {name:18s} {rates[name]:8.1f} images/s")
    for name in GOAL_METHODS:
        verdict = "ok" if rates[name] >= GOAL else "BELOW GOAL"
        print(
            f"goal {name}: {rates[name]:.1f} / {GOAL:.0f} images/s = {rates[name] / GOAL:.2f}x "
            f"({verdict})"
        )
    if args.pipeline:
        print(f"jaxpriv anonymize end to end, {args.pipeline} JPEG photographs, 2 workers:")
        generator = torch.Generator().manual_seed(1)
        images = photographs(args.pipeline, args.size, generator)
        masks = person_masks(args.pipeline, args.size, generator)
        with tempfile.TemporaryDirectory() as root:
            annotations = write_coco_folder(Path(root), images, masks)
            for name in GOAL_METHODS:
                rate = pipeline_images_per_second(name, Path(root), annotations)
                print(f"  {name:18s} {rate:8.1f} images/s ({rate / GOAL:.2f}x the goal)")
    if args.tasks:
        count = args.pipeline or 600
        generator = torch.Generator().manual_seed(1)
        images = photographs(count, args.size, generator)
        masks = person_masks(count, args.size, generator)
        with tempfile.TemporaryDirectory() as root:
            annotations = write_coco_folder(Path(root), images, masks)
            rates = {
                tasks: tasks_images_per_second(args.tasks_method, Path(root), annotations, tasks)
                for tasks in (1, args.tasks)
            }
        print(f"jaxpriv anonymize --method {args.tasks_method}, {count} JPEG photographs:")
        for tasks, rate in rates.items():
            print(f"  {tasks} task(s) of 1 worker, 1 thread: {rate:8.1f} images/s")
        print(f"  speed-up of {args.tasks} tasks: {rates[args.tasks] / rates[1]:.2f}x")
    if args.faces:
        generator = torch.Generator().manual_seed(2)
        with tempfile.TemporaryDirectory() as root:
            for i, image in enumerate(photographs(args.faces, args.size, generator)):
                cv2.imwrite(f"{root}/{i:05d}.jpg", cv2.cvtColor(image.numpy(), cv2.COLOR_RGB2BGR))
            upright, _ = face_search_cost(Path(root), search=False)
            turned, reports = face_search_cost(Path(root), search=True)
        only_turned = sum(r.get("turns", 0) > 0 for r in reports)
        none = sum(bool(r.get("nothing_found")) for r in reports)
        print(
            f"face detector path, {args.faces} photographs {args.size}x{args.size} (crops of four "
            f"photographs, one a portrait), 2 workers: upright only {upright:.1f} images/s; with the rotated-face "
            f"search {turned:.1f} images/s ({upright / turned:.2f}x the time); faces found only "
            f"turned in {only_turned}, nothing found in {none}"
        )


if __name__ == "__main__":
    main()
