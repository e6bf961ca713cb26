"""Every CPU core by default: one XLA host device per core.

XLA's CPU backend runs one train step on about one core. Splitting the batch over one host
device per core (the data-parallel step in ``jaxpriv.train.step``) uses them all: on 2 cores a
step takes 0.63–0.71× the time of one device (the README's Benchmark section). XLA reads the
setting when its CPU backend starts, so ``use_every_core`` must run before anything asks jax
for a device. It changes nothing when ``XLA_FLAGS`` already sets a host device count (the
user's choice wins) or on GPU and TPU, whose devices it does not touch.
"""

import os

FLAG = "--xla_force_host_platform_device_count"


def cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM or taskset limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def use_every_core(environ=os.environ) -> int | None:
    """Adds ``FLAG=<cores>`` to ``XLA_FLAGS`` unless a device count is set there already;
    returns the count it set, or None."""
    flags = environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return None
    count = cores()
    environ["XLA_FLAGS"] = f"{flags} {FLAG}={count}".strip()
    return count
