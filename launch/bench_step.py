"""Step-time and memory benchmark: non-private vs DP-SGD vs MaskDP, same model and batch.

    python launch/bench_step.py [--config configs/video_maskdp.py] [--config.key=value ...]

Prints the median step time of each mode and its ratio to the non-private step (measured in
this one process), on one device and, when there are several, data-parallel on all of them
(the same global batch); then the compiled step's memory for two logical batch sizes at the
same micro-batch size: XLA's working (temporary) buffers, and the arguments (state + batch).
"""

import argparse

import jax

from jaxpriv import config as config_lib
from jaxpriv.dp.mechanism import MODES
from jaxpriv.train import parallel
from jaxpriv.train.benchmark import jax_runner, median_times, memory_mib, synthetic_batch


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
    if jax.device_count() > 1:
        meshes[f"{jax.device_count()} devices"] = parallel.data_mesh()
    print(f"{'mode':<8} {'devices':<11} {'median step (ms)':>17} {'/ non-private':>14}")
    for name, mesh in meshes.items():
        runners = {mode: jax_runner(config, mode, batch, pixels, mesh) for mode in MODES}
        times = median_times(runners, args.repeats)
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
