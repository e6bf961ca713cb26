"""Data parallelism: 8 fake CPU devices, 2 processes, bounded memory (checks run in subprocesses
so that this process keeps its single device; see multidevice.py)."""

import functools
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxpriv.train import parallel

SCRIPT = os.path.join(os.path.dirname(__file__), "multidevice.py")


def run_check(*args, devices=8, extra_env=None, wait=True):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env.update(extra_env or {})
    process = subprocess.Popen(
        [sys.executable, SCRIPT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return finish(process) if wait else process


def finish(process) -> dict:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()[-3000:]
    line = [line for line in out.decode().splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(line.removeprefix("RESULT "))


def test_eight_devices_give_the_one_device_update():
    """Same batch, same noise key: the update does not depend on the device count — so the
    noise is added once to the global sum (per-device noise would differ by a factor √8)."""
    results = run_check("same_update")
    assert sorted(results) == ["dpsgd ghost", "dpsgd vmap", "maskdp ghost", "maskdp vmap"]
    for name, result in results.items():
        assert result["max_abs_diff"] <= 1e-5 * result["max_abs"], name


def test_noise_std_of_the_aggregated_update_is_sigma_c_over_b():
    result = run_check("noise_std")
    # Relative standard error of a std estimate from n samples is 1/sqrt(2n) (~1% here).
    assert result["n"] > 4000
    assert result["std"] == pytest.approx(result["expected"], rel=5 / np.sqrt(2 * result["n"]))
    assert result["std"] < result["expected"] * np.sqrt(8) / 2  # not √8 times too large


@pytest.mark.parametrize("clipping", ["vmap", "ghost"])
def test_step_memory_does_not_grow_with_the_logical_batch(clipping):
    result = memory_result()
    small, large = result[f"{clipping} 256"], result[f"{clipping} 4096"]
    assert large["temp"] <= 1.25 * small["temp"]
    assert large["arguments"] > 8 * small["arguments"] / 2  # the batch itself did grow 16x


@functools.cache
def memory_result() -> dict:
    return run_check("memory", devices=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_and_agree(tmp_path):
    address = f"localhost:{free_port()}"
    processes = [
        run_check(
            "train",
            str(tmp_path),
            devices=1,
            wait=False,
            extra_env={
                "JAX_COORDINATOR_ADDRESS": address,
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    results = [finish(p) for p in processes]
    assert [(r["process"], r["processes"], r["devices"]) for r in results] == [(0, 2, 2), (1, 2, 2)]
    first, second = (r["record"] for r in results)
    assert first["params_sha256"] == second["params_sha256"]
    assert first == {**second, "wall_time": first["wall_time"], "step_time": first["step_time"]}
    assert 0 < first["epsilon"] <= 8.0 * (1 + 1e-3)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # written by process 0 only


def test_spread_deals_rows_round_robin():
    rows = np.arange(12)
    np.testing.assert_array_equal(parallel.spread(rows, 3), [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])
    with pytest.raises(ValueError, match="does not split into 5 shards"):
        parallel.spread(rows, 5)


def test_one_process_loads_every_row():
    mesh = parallel.data_mesh()
    assert parallel.local_rows(mesh, 8 * mesh.size) == slice(0, 8 * mesh.size)
