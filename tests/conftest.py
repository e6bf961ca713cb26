import os

# Tests that need several devices set their own XLA_FLAGS in a subprocess; keep this process at 1.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
