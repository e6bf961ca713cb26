"""Step-time measurement: jitted train steps on one fixed synthetic batch, taking turns.

Used by ``launch/bench_step.py`` (non-private vs DP-SGD vs MaskDP) and by
``jaxpriv compare`` (against PyTorch and Opacus in the same process).
"""

import statistics
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from jaxpriv.data import pipeline, synthetic
from jaxpriv.train import parallel
from jaxpriv.train.loop import Plan, build_mechanism, build_step


def synthetic_batch(config: ml_collections.ConfigDict, size: int) -> tuple[dict, str]:
    """(a batch of ``size`` embedded synthetic examples with weight 1, its pixel feature name)."""
    data = synthetic.generate(size, seed=0, kind=config.data.kind, frames=config.data.frames)
    pixels = synthetic.KINDS[config.data.kind]
    batch = {
        pixels: data[pixels],
        "label": data["label"].astype(np.int32),
        "sensitive": data["sensitive"].astype(bool),
        "weight": np.ones(size, np.float32),
    }
    return batch, pixels


def widest_mesh(batch_size: int) -> Mesh:
    """A mesh over the most local devices that split ``batch_size`` evenly."""
    count = max(n for n in range(1, jax.local_device_count() + 1) if batch_size % n == 0)
    return parallel.data_mesh(jax.local_devices()[:count])


def make_step(config, mode: str, batch_size: int, pixels: str, example, mesh: Mesh):
    """(initial state, jitted step, the step's batch names) of ``config`` in DP ``mode`` for
    batches of ``batch_size``. The DP modes use σ = 1: the noise costs the same whatever σ is.
    """
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
        public_capacity=batch_size if mode == "maskdp" else 0,
    )
    mechanism = build_mechanism(config, plan, secret=0)
    _, state, step = build_step(
        config, plan, mechanism, synthetic.NUM_CLASSES, example, pixels, mesh
    )
    return state, step, mechanism.batch_names()


def step_batches(batch: dict, names, mesh: Mesh) -> dict:
    """The step's batches, each ``batch`` as global arrays split along ``mesh``'s data axis:
    MaskDP's public batch is its public view (the same examples, as in a benchmark)."""
    views = {"private": batch, "public": pipeline.public_view(batch)}
    return {name: sharded(views[name], mesh) for name in names}


def sharded(batch: dict, mesh: Mesh) -> dict:
    """``batch`` as global arrays split along ``mesh``'s data axis."""
    size = len(batch["weight"])
    return parallel.to_global(
        {k: parallel.spread(v, mesh.size) for k, v in batch.items()}, mesh, size
    )


def jax_runner(config, mode: str, batch: dict, pixels: str, mesh: Mesh) -> Callable[[], None]:
    """A compiled train step in ``mode`` as a no-argument callable that runs one step on
    ``batch`` and waits for it; the compilation happens here, not in the first call."""
    state, step, names = make_step(
        config, mode, len(batch["weight"]), pixels, batch[pixels][:1], mesh
    )
    batch = step_batches(batch, names, mesh)
    holder = [state]

    def run():
        holder[0], metrics = step(holder[0], batch)
        jax.block_until_ready((holder[0], metrics))

    run()
    return run


def median_times(runners: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each runner. They take turns, so that drift in the
    machine's speed affects them alike."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def memory_mib(config, mode: str, batch: dict, pixels: str, mesh: Mesh) -> tuple[float, float]:
    """(working, argument) MiB per device of the compiled step, as XLA plans them."""
    state, step, names = make_step(
        config, mode, len(batch["weight"]), pixels, batch[pixels][:1], mesh
    )
    memory = step.lower(state, step_batches(batch, names, mesh)).compile().memory_analysis()
    return memory.temp_size_in_bytes / 2**20, memory.argument_size_in_bytes / 2**20
