"""Step-time and memory benchmark: non-private vs DP-SGD vs MaskDP, same model and batch.

    python launch/bench_step.py [--config configs/video_maskdp.py] [--config.key=value ...]

Prints the median step time of each mode and its ratio to the non-private step (measured in
this one process), on one device and, when there are several, data-parallel on all of them
(the same global batch); then the compiled step's memory for two logical batch sizes at the
same micro-batch size: XLA's working (temporary) buffers, and the arguments (state + batch).
"""

import argparse
import statistics
import time

import jax
import numpy as np

from jaxpriv import config as config_lib
from jaxpriv.data import synthetic
from jaxpriv.train import parallel
from jaxpriv.train.loop import Plan, build_step

MODES = ("none", "dpsgd", "maskdp")


def synthetic_batch(config, size: int) -> dict:
    data = synthetic.generate(size, seed=0, kind=config.data.kind, frames=config.data.frames)
    pixels = synthetic.KINDS[config.data.kind]
    return {
        pixels: data[pixels],
        "label": data["label"].astype(np.int32),
        "sensitive": data["sensitive"].astype(bool),
        "weight": np.ones(size, np.float32),
    }, pixels


def make_step(config, mode: str, batch_size: int, pixels: str, example, mesh):
    config = config.copy_and_resolve_references()
    config.dp.mode = mode
    plan = Plan(
        dataset_size=10 * batch_size,
        batch_size=batch_size,
        sampling_rate=0.1,
        steps=100,
        steps_per_epoch=10,
        capacity=batch_size,
        microbatch_size=min(config.train.microbatch_size, batch_size // mesh.size),
        noise_multiplier=0.0 if mode == "none" else 1.0,
    )
    _, state, step = build_step(config, plan, synthetic.NUM_CLASSES, example, pixels, mesh)
    return state, step


def sharded(batch: dict, mesh) -> dict:
    size = len(batch["weight"])
    return parallel.to_global(
        {k: parallel.spread(v, mesh.size) for k, v in batch.items()}, mesh, size
    )


def median_step_times(config, batch: dict, pixels: str, repeats: int, mesh) -> dict:
    """Median step time of each mode; the modes take turns, so that drift in the machine's
    speed affects them alike."""
    size, example = len(batch["weight"]), batch[pixels][:1]
    batch = sharded(batch, mesh)
    runs = {}
    for mode in MODES:
        state, step = make_step(config, mode, size, pixels, example, mesh)
        state, metrics = step(state, batch)  # compile
        jax.block_until_ready(metrics)
        runs[mode] = [state, step, []]
    for _ in range(repeats):
        for run in runs.values():
            start = time.perf_counter()
            run[0], metrics = run[1](run[0], batch)
            jax.block_until_ready((run[0], metrics))
            run[2].append(time.perf_counter() - start)
    return {mode: statistics.median(run[2]) for mode, run in runs.items()}


def memory_mib(config, mode: str, batch: dict, pixels: str, mesh) -> tuple[float, float]:
    """(working, argument) MiB per device of the compiled step, as XLA plans them."""
    state, step = make_step(config, mode, len(batch["weight"]), pixels, batch[pixels][:1], mesh)
    memory = step.lower(state, sharded(batch, mesh)).compile().memory_analysis()
    return memory.temp_size_in_bytes / 2**20, memory.argument_size_in_bytes / 2**20


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="config file (default: the embedded default)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per mode")
    parser.add_argument(
        "--memory-batch-sizes",
        default="256,4096",
        help="logical batch sizes for the peak-memory table",
    )
    args, overrides = parser.parse_known_args()
    config = (
        config_lib.load_config(args.config, overrides)
        if args.config
        else config_lib.default_config()
    )
    if not args.config:
        for override in overrides:
            config_lib.apply_override(config, override)
    batch, pixels = synthetic_batch(config, config.train.batch_size)
    print(
        f"{config.model.name} {dict(config.model.kwargs)}, batch {config.train.batch_size}, "
        f"micro-batch {config.train.microbatch_size} per device, {jax.devices()[0].device_kind}"
    )
    meshes = {"1 device": parallel.data_mesh(jax.devices()[:1])}
    if jax.device_count() > 1:
        meshes[f"{jax.device_count()} devices"] = parallel.data_mesh()
    print(f"{'mode':<8} {'devices':<11} {'median step (ms)':>17} {'/ non-private':>14}")
    for name, mesh in meshes.items():
        times = median_step_times(config, batch, pixels, args.repeats, mesh)
        for mode in MODES:
            ratio = times[mode] / times["none"]
            print(f"{mode:<8} {name:<11} {1000 * times[mode]:>17.1f} {ratio:>14.2f}")
    sizes = [int(s) for s in args.memory_batch_sizes.split(",")]
    mesh = meshes["1 device"]
    print(
        f"\nmemory of the compiled step on 1 device (MiB, working / arguments), "
        f"micro-batch {config.train.microbatch_size}"
    )
    print(f"{'mode':<8}" + "".join(f"{f'batch {s}':>18}" for s in sizes))
    memory_batches = {s: synthetic_batch(config, s)[0] for s in sizes}
    for mode in MODES:
        row = [memory_mib(config, mode, memory_batches[s], pixels, mesh) for s in sizes]
        print(f"{mode:<8}" + "".join(f"{f'{w:.1f} / {a:.1f}':>18}" for w, a in row))


if __name__ == "__main__":
    main()
