"""Checks that need several (fake CPU) devices or processes; `test_parallel.py` runs them in
subprocesses with XLA_FLAGS set, and asserts on the JSON they print.

    python tests/multidevice.py same_update | noise_std | memory
    python tests/multidevice.py train WORKDIR   (with JAX_COORDINATOR_ADDRESS etc. for 2 processes)
"""

import itertools
import json
import os
import sys

import jax
import numpy as np
import optax

from jaxpriv import config as config_lib
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.models import ViT
from jaxpriv.train import loop, parallel
from jaxpriv.train.step import TrainState, make_loss_fn, make_train_step

SIZE, CLASSES = 8, 3


def batch(n: int, real: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sensitive = rng.random((n, SIZE, SIZE)) < 0.5
    return {
        "image": rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8),
        "label": rng.integers(0, CLASSES, n).astype(np.int32),
        "sensitive": sensitive,
        "weight": (np.arange(n) < real).astype(np.float32),
    }


def step_and_state(
    mesh,
    mode: str,
    sigma: float,
    expected_batch: int,
    microbatch: int,
    opt,
    width: int = 8,
    clipping: str = "vmap",
):
    """(state, step, mechanism) of a tiny ViT; capacity and public capacity 64."""
    model = ViT(num_classes=CLASSES, patch=(4, 4), width=width, depth=1, heads=2, mlp_dim=width)
    params = model.init(jax.random.key(0), np.zeros((1, SIZE, SIZE, 3), np.uint8))
    mechanism = DpMechanism(
        mode,
        clip_norm=0.1,
        noise_multiplier=sigma,
        dataset_size=1 << 16,
        batch_size=expected_batch,
        capacity=64,
        public_capacity=64,
        clipping_method=clipping,
        secret=7,
    )
    state = jax.device_put(
        TrainState(np.zeros([], np.int32), params, opt.init(params), mechanism.noise_key_data()),
        parallel.replicated(mesh),
    )
    step = make_train_step(
        mechanism, make_loss_fn(model, "image"), opt, mesh, microbatch_size=microbatch
    )
    return state, step, mechanism


def global_batches(mesh, mechanism, real: int, size: int = 64) -> dict:
    """The step's batches on ``mesh``: ``real`` examples then padding, each batch its own."""
    batches = {"private": batch(size, real), "public": batch(size, real, seed=1)}
    return {
        name: parallel.to_global(
            {k: parallel.spread(v, mesh.size) for k, v in batches[name].items()}, mesh, size
        )
        for name in mechanism.batch_names()
    }


def flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def same_update() -> dict:
    """Max |Δ| between the 8-device and the 1-device updates, per mode and clipping method,
    with noise."""
    result = {}
    for mode, clipping in itertools.product(("dpsgd", "maskdp"), ("vmap", "ghost")):
        params = []
        for devices in (jax.devices(), jax.devices()[:1]):
            mesh = parallel.data_mesh(devices)
            state, step, mechanism = step_and_state(
                mesh, mode, 1.0, 24, 4, optax.sgd(0.5), clipping=clipping
            )
            data = global_batches(mesh, mechanism, 37)
            for _ in range(2):
                state, _ = step(state, data)
            params.append(flat(state.params))
        result[f"{mode} {clipping}"] = {
            "max_abs_diff": float(np.max(np.abs(params[0] - params[1]))),
            "max_abs": float(np.max(np.abs(params[0]))),
        }
    return result


def noise_std() -> dict:
    """Std of the update of an all-padding batch (pure noise / B) on 8 devices vs σC/B."""
    mesh = parallel.data_mesh()
    sigma, clip, expected = 2.0, 0.1, 16
    state, step, mechanism = step_and_state(
        mesh, "dpsgd", sigma, expected, 4, optax.sgd(1.0), width=32
    )
    before = flat(state.params)
    state, _ = step(state, global_batches(mesh, mechanism, 0))
    update = flat(state.params) - before
    return {"std": float(update.std()), "expected": sigma * clip / expected, "n": update.size}


def memory() -> dict:
    """XLA's planned temporary memory of the DP-SGD step for logical batches 256 and 4096, per
    clipping method."""
    mesh = parallel.data_mesh(jax.devices()[:1])
    result = {}
    for clipping, size in itertools.product(("vmap", "ghost"), (256, 4096)):
        state, step, mechanism = step_and_state(
            mesh, "dpsgd", 1.0, size, 32, optax.sgd(0.1), clipping=clipping
        )
        data = global_batches(mesh, mechanism, size, size)
        analysis = step.lower(state, data).compile().memory_analysis()
        result[f"{clipping} {size}"] = {
            "temp": analysis.temp_size_in_bytes,
            "arguments": analysis.argument_size_in_bytes,
        }
    return result


def train(workdir: str) -> dict:
    """A few DP steps of the tiny video model; the parameter checksum of this process."""
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        parallel.initialize_distributed()
    c = config_lib.default_config()
    c.data.data_dir = f"{workdir}/data"  # shared: process 0 writes it, the others wait
    c.data.num_train, c.data.num_test = 64, 16
    c.model.kwargs = dict(width=8, depth=1, heads=2, mlp_dim=8)
    c.train.batch_size, c.train.microbatch_size, c.train.epochs = 16, 4, 1.0
    c.train.eval_batch_size = 16
    c.dp.mode, c.dp.epsilon, c.dp.delta, c.dp.secret_seed = "maskdp", 8.0, 1e-3, -1
    record = loop.train(c, f"{workdir}/run", progress=False)
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "record": record,
    }


if __name__ == "__main__":
    check = sys.argv[1]
    print("RESULT " + json.dumps(globals()[check](*sys.argv[2:])))
