import os
import tempfile

# Tests that need several devices set their own XLA_FLAGS in a subprocess; keep this process at 1.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests (and their subprocesses) compile the same train steps: compile each once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxpriv-test-xla-cache")
)
# The avatar tests' anny body: built once (minutes) and kept outside the user's home.
os.environ.setdefault("JAXPRIV_ANNY_DIR", os.path.join(tempfile.gettempdir(), "jaxpriv-test-anny"))
