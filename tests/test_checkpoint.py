import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpriv.train.checkpoint import Checkpointer

FINGERPRINT = {"train.batch_size": 256, "dp.mode": "dpsgd", "model.widths": (8, 16)}


class State(NamedTuple):
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    key: jax.Array


def make_state(seed: int = 0) -> State:
    rng = np.random.default_rng(seed)
    params = {
        "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)},
        "head": {"bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32)},
    }
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = optimizer.update(grads, opt_state, params)  # non-zero moments and count
    return State(jnp.int32(seed + 7), params, opt_state, jax.random.split(jax.random.key(seed))[1])


def host_leaves(state) -> list[np.ndarray]:
    """Leaves as numpy arrays, typed PRNG keys as their raw key data."""
    return [
        np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for x in jax.tree.leaves(state)
    ]


def assert_identical(restored, expected) -> None:
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(expected)):
        assert got.dtype == want.dtype and got.shape == want.shape
    for got, want in zip(host_leaves(restored), host_leaves(expected)):
        np.testing.assert_array_equal(got, want, strict=True)


def abstract(state, sharding=None):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state)


def saved_steps(directory) -> list[int]:
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def test_restore_of_empty_directory_is_none(tmp_path):
    with Checkpointer(tmp_path / "ckpt", fingerprint=FINGERPRINT) as checkpointer:
        assert checkpointer.restore(abstract(make_state())) is None


def test_round_trip_is_bit_identical_with_typed_key_and_sharding(tmp_path):
    state = make_state(seed=3)
    assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)
    metadata = {
        "step": 10,
        "data_seed": 1234,
        "schedule": {"sigma": 1.1, "entries": [[0.01, 10], [0.02, 5]], "note": None},
    }
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT, save_every_steps=10) as checkpointer:
        assert checkpointer.save(10, state, metadata)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT) as checkpointer:
        restored, restored_metadata = checkpointer.restore(abstract(state, replicated))
        # Concrete arrays work as the target too.
        assert_identical(checkpointer.restore(state)[0], state)
    assert restored_metadata == metadata
    assert isinstance(restored, State)
    assert isinstance(restored.opt_state[0], optax.ScaleByAdamState)
    assert jax.random.key_impl(restored.key) == jax.random.key_impl(state.key)
    assert all(leaf.sharding == replicated for leaf in jax.tree.leaves(restored))
    assert_identical(restored, state)
    # The restored key draws the same numbers.
    np.testing.assert_array_equal(
        jax.random.uniform(restored.key, (4,)), jax.random.uniform(state.key, (4,))
    )


def test_saves_on_due_steps_unless_forced(tmp_path):
    state = make_state()
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT, save_every_steps=3) as checkpointer:
        saved = [step for step in range(1, 8) if checkpointer.save(step, state, {"step": step})]
        assert saved == [3, 6]
        assert checkpointer.save(7, state, {"step": 7}, force=True)
        # A step that is already saved (e.g. a final forced save on a due step) is skipped.
        assert not checkpointer.save(7, state, {"step": 7}, force=True)
        checkpointer.wait()
        assert saved_steps(tmp_path) == [3, 6, 7]
        assert checkpointer.restore(state)[1] == {"step": 7}


def test_state_may_be_donated_once_save_returns(tmp_path):
    state = make_state(seed=2)
    expected = host_leaves(state)
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT, save_every_steps=1) as checkpointer:
        assert checkpointer.save(1, state, {})
        for leaf in jax.tree.leaves(state):  # what a train step with donate_argnums does
            leaf.delete()
        checkpointer.wait()
        restored, _ = checkpointer.restore(abstract(make_state()))
    for got, want in zip(host_leaves(restored), expected):
        np.testing.assert_array_equal(got, want, strict=True)


def test_keeps_only_the_last_checkpoints(tmp_path):
    with Checkpointer(
        tmp_path, fingerprint=FINGERPRINT, max_to_keep=2, save_every_steps=1
    ) as checkpointer:
        for step in range(1, 6):
            assert checkpointer.save(step, make_state(step), {"step": step})
    assert saved_steps(tmp_path) == [4, 5]
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT) as checkpointer:
        state, metadata = checkpointer.restore(abstract(make_state()))
    assert metadata == {"step": 5}
    assert_identical(state, make_state(5))


def test_fingerprint_mismatch_names_keys_and_values(tmp_path):
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT, save_every_steps=1) as checkpointer:
        checkpointer.save(1, make_state(), {})
    # JSON turns tuples into lists; an equal config still matches.
    same = {**FINGERPRINT, "model.widths": [8, 16]}
    with Checkpointer(tmp_path, fingerprint=same) as checkpointer:
        assert checkpointer.restore(make_state()) is not None

    changed = {"train.batch_size": 128, "dp.mode": "dpsgd", "model.widths": [8, 16], "new": 1}
    with Checkpointer(tmp_path, fingerprint=changed) as checkpointer:
        with pytest.raises(ValueError) as error:
            checkpointer.restore(make_state())
    message = str(error.value)
    assert "different config" in message and str(tmp_path) in message
    assert "train.batch_size: 256 (checkpoint) vs 128 (now)" in message
    assert "new: (absent) (checkpoint) vs 1 (now)" in message
    assert "dp.mode" not in message and "model.widths" not in message


def test_interrupted_save_is_never_restored(tmp_path):
    # A process saves step 1, then is killed while committing step 2 (all its data written).
    script = textwrap.dedent(
        """
        import os, sys
        from orbax.checkpoint._src.path import atomicity
        from tests.test_checkpoint import FINGERPRINT, make_state
        from jaxpriv.train.checkpoint import Checkpointer

        checkpointer = Checkpointer(sys.argv[1], fingerprint=FINGERPRINT, save_every_steps=1)
        checkpointer.save(1, make_state(1), {"step": 1})
        checkpointer.wait()

        async def killed(self, *args, **kwargs):
            os._exit(3)

        atomicity.AtomicRenameTemporaryPath.finalize = killed
        checkpointer.save(2, make_state(2), {"step": 2})
        checkpointer.wait()
        """
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=root, capture_output=True, text=True
    )
    assert result.returncode == 3, result.stderr
    assert saved_steps(tmp_path) == [1]
    assert any(name.startswith("2.") for name in os.listdir(tmp_path))  # the unfinished save

    with Checkpointer(tmp_path, fingerprint=FINGERPRINT, save_every_steps=1) as checkpointer:
        state, metadata = checkpointer.restore(abstract(make_state()))
        assert metadata == {"step": 1}
        assert_identical(state, make_state(1))
        # Training resumes: step 2 is saved again over the leftover.
        assert checkpointer.save(2, make_state(2), {"step": 2})
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]
    with Checkpointer(tmp_path, fingerprint=FINGERPRINT) as checkpointer:
        assert checkpointer.restore(make_state())[1] == {"step": 2}
