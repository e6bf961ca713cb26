"""Every CPU core by default: the jaxpriv program splits its steps over one host device per core."""

import os
import subprocess
import sys

from jaxpriv import host_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_host_device_per_core_unless_the_user_set_a_count():
    environ = {}
    assert host_devices.use_every_core(environ) == host_devices.cores()
    assert environ == {"XLA_FLAGS": f"{host_devices.FLAG}={host_devices.cores()}"}
    environ = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    host_devices.use_every_core(environ)
    assert environ["XLA_FLAGS"] == (
        f"--xla_cpu_enable_fast_math=false {host_devices.FLAG}={host_devices.cores()}"
    )
    environ = {"XLA_FLAGS": f"{host_devices.FLAG}=3"}
    assert host_devices.use_every_core(environ) is None
    assert environ == {"XLA_FLAGS": f"{host_devices.FLAG}=3"}


def devices_seen_by_the_program(**env) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | env
    code = (  # the program's entry point, with a main that reports jax's devices
        "import jax; from jaxpriv import cli; "
        "cli.main = lambda: print(jax.device_count()); cli.entry()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_program_starts_jax_with_every_core():
    assert devices_seen_by_the_program() == str(host_devices.cores())
    assert devices_seen_by_the_program(XLA_FLAGS=f"{host_devices.FLAG}=3") == "3"
