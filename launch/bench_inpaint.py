"""How well, and how fast, offline inpainters fill a person-sized hole in a photograph.

    python launch/bench_inpaint.py [--repeats 3]

The holes are person silhouettes (a head over a body with arms, grown by 4 px as
`compose.remove_person` grows a mask), a third or two thirds of the height of scikit-image's
photographs (coffee, chelsea, rocket, astronaut's background corner; also doubled in size, with
a large person), where the true background is known. Per method: PSNR inside the hole (dB, against the true pixels), texture (mean gradient
magnitude inside the hole divided by the truth's: a smear is well below 1) and the median time.
Methods: OpenCV's Telea at full resolution and Navier-Stokes, jaxpriv's Telea
(`compose.telea`: large holes at reduced resolution), and, where ``cv2.xphoto`` exists (the
``opencv-contrib-python-headless`` build installed in place of ``opencv-python-headless``), the
FSR inpainting (fast and best; best takes seconds per hole).
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import skimage.data

from jaxpriv.anonymize.avatar import compose

RADIUS = 3  # px, as compose.remove_person
GROW = 4  # px


def silhouette(height: int, width: int, centre_x: int, tall: int) -> np.ndarray:
    """Bool mask of a standing person ``tall`` px tall, feet at 90 % of the height."""
    mask = np.zeros((height, width), np.uint8)
    feet = int(0.9 * height)
    head = tall // 8
    top = feet - tall
    cv2.circle(mask, (centre_x, top + head), head, 1, -1)
    body = np.array(
        [
            (centre_x - tall // 6, top + 2 * head),
            (centre_x + tall // 6, top + 2 * head),
            (centre_x + tall // 4, top + tall // 2),  # arms out
            (centre_x + tall // 8, top + tall // 2),
            (centre_x + tall // 8, feet),
            (centre_x - tall // 8, feet),
            (centre_x - tall // 8, top + tall // 2),
            (centre_x - tall // 4, top + tall // 2),
        ],
        np.int32,
    )
    cv2.fillPoly(mask, [body], 1)
    mask = cv2.dilate(mask, np.ones((2 * GROW + 1, 2 * GROW + 1), np.uint8))
    return mask.astype(bool)


def scenes() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB image, hole) of each test photograph."""
    out = []
    for name in ("coffee", "chelsea", "rocket"):
        image = getattr(skimage.data, name)()
        height, width = image.shape[:2]
        for offset in (0.3, 0.7):
            hole = silhouette(height, width, int(offset * width), height // 3)
            out.append((f"{name}@{offset}", image, hole))
        hole = silhouette(height, width, width // 2, 2 * height // 3)
        out.append((f"{name} large", image, hole))
        # Doubled, so that the hole (~4 × 20,000 px) is one `compose.telea` shrinks.
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LANCZOS4)
        hole = silhouette(2 * height, 2 * width, width, 4 * height // 3)
        out.append((f"{name} ×2 large", image, hole))
    astronaut = skimage.data.astronaut()[:256, 256:]  # the background behind her shoulder
    out.append(("astronaut corner", astronaut, silhouette(256, 256, 200, 256 // 3)))
    return out


def telea(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    return cv2.inpaint(image, hole.astype(np.uint8), RADIUS, cv2.INPAINT_TELEA)


def navier_stokes(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    return cv2.inpaint(image, hole.astype(np.uint8), RADIUS, cv2.INPAINT_NS)


def fsr(quality: int):
    def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        out = np.zeros_like(image)
        valid = (~hole).astype(np.uint8)  # xphoto: 1 marks a known pixel
        cv2.xphoto.inpaint(image, valid, out, quality)
        return out

    return inpaint


def methods() -> dict:
    found = {"telea": telea, "jaxpriv telea": compose.telea, "navier-stokes": navier_stokes}
    if hasattr(cv2, "xphoto"):
        found["fsr fast"] = fsr(cv2.xphoto.INPAINT_FSR_FAST)
        found["fsr best"] = fsr(cv2.xphoto.INPAINT_FSR_BEST)
    return found


def gradient(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def score(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> tuple[float, float]:
    """(PSNR inside the hole in dB, texture ratio)."""
    error = (result[hole].astype(np.float64) - truth[hole]) ** 2
    psnr = 10 * np.log10(255**2 / max(error.mean(), 1e-12))
    inner = cv2.erode(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return psnr, float(gradient(result)[inner].mean() / gradient(truth)[inner].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and photo")
    args = parser.parse_args()
    print(f"OpenCV {cv2.__version__}, xphoto {'yes' if hasattr(cv2, 'xphoto') else 'no'}")
    rows = {}
    for scene, image, hole in scenes():
        holed = np.where(hole[..., None], 0, image).astype(np.uint8)
        for name, inpaint in methods().items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = inpaint(holed, hole)
                times.append(time.perf_counter() - start)
            psnr, texture = score(result, image, hole)
            rows.setdefault(name, []).append((psnr, texture, statistics.median(times)))
            print(
                f"  {scene:18s} {name:15s} PSNR {psnr:5.2f} dB  texture {texture:4.2f}  "
                f"{1000 * statistics.median(times):7.1f} ms  (hole {hole.sum()} px)"
            )
    print("method           mean PSNR  mean texture  mean ms")
    for name, values in rows.items():
        psnr, texture, seconds = (statistics.mean(v) for v in zip(*values))
        print(f"{name:15s}  {psnr:8.2f}  {texture:12.2f}  {1000 * seconds:7.1f}")


if __name__ == "__main__":
    main()
