"""Step-time and memory benchmark: non-private vs DP-SGD vs MaskDP, same model and batch.

    python launch/bench_step.py [--config configs/video_maskdp.py] [--config.key=value ...]

Prints the median step time of each mode, the DP modes with each clipping method
(``dp.clipping``: vmap, ghost), and its ratio to the non-private step (measured in this one
process), on one device and data-parallel on one host device per core (``jaxpriv.host_devices``;
the same global batch); then the compiled step's memory for two logical batch sizes at the same
micro-batch size: XLA's working (temporary) buffers, and the arguments (state + batch).
"""

import argparse

from jaxpriv import host_devices

host_devices.use_every_core()  # before jax starts its CPU backend

import jax  # noqa: E402

from jaxpriv import config as config_lib  # noqa: E402
from jaxpriv.dp import clipping  # noqa: E402
from jaxpriv.train import parallel  # noqa: E402
from jaxpriv.train.benchmark import (  # noqa: E402
    jax_runner,
    median_times,
    memory_mib,
    synthetic_batch,
    widest_mesh,
)

VARIANTS = [("none", "vmap")] + [
    (mode, method) for mode in ("dpsgd", "maskdp") for method in clipping.METHODS
]


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
    config = config_lib.load_config(args.config, overrides)
    batch, pixels = synthetic_batch(config, config.train.batch_size)
    print(
        f"{config.model.name} {dict(config.model.kwargs)}, batch {config.train.batch_size}, "
        f"micro-batch {config.train.microbatch_size} per device, {jax.devices()[0].device_kind}"
    )
    meshes = {"1 device": parallel.data_mesh(jax.devices()[:1])}
    widest = widest_mesh(config.train.batch_size)
    if widest.size > 1:
        meshes[f"{widest.size} devices"] = widest
    print(
        f"{'mode':<8} {'clipping':<9} {'devices':<11} {'median step (ms)':>17} {'/ non-private':>14}"
    )
    for name, mesh in meshes.items():
        runners = {
            (mode, method): jax_runner(with_clipping(config, method), mode, batch, pixels, mesh)
            for mode, method in VARIANTS
        }
        times = median_times(runners, args.repeats)
        for mode, method in VARIANTS:
            ratio = times[mode, method] / times["none", "vmap"]
            clip = "-" if mode == "none" else method
            ms = 1000 * times[mode, method]
            print(f"{mode:<8} {clip:<9} {name:<11} {ms:>17.1f} {ratio:>14.2f}")
    sizes = [int(s) for s in args.memory_batch_sizes.split(",")]
    mesh = meshes["1 device"]
    print(
        f"\nmemory of the compiled step on 1 device (MiB, working / arguments), "
        f"micro-batch {config.train.microbatch_size}"
    )
    print(f"{'mode':<8} {'clipping':<9}" + "".join(f"{f'batch {s}':>18}" for s in sizes))
    memory_batches = {s: synthetic_batch(config, s)[0] for s in sizes}
    for mode, method in VARIANTS:
        variant = with_clipping(config, method)
        row = [memory_mib(variant, mode, memory_batches[s], pixels, mesh) for s in sizes]
        clip = "-" if mode == "none" else method
        print(f"{mode:<8} {clip:<9}" + "".join(f"{f'{w:.1f} / {a:.1f}':>18}" for w, a in row))


def with_clipping(config, method: str):
    """A copy of ``config`` with ``dp.clipping = method``."""
    config = config.copy_and_resolve_references()
    config.dp.clipping = method
    return config


if __name__ == "__main__":
    main()
