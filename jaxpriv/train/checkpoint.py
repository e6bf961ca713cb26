"""Checkpoints of a training run: the state pytree plus JSON metadata, saved asynchronously by Orbax.

Every process calls every method (Orbax synchronises the processes and writes shared
files from the primary one). A checkpoint becomes visible only once it is fully written:
Orbax writes into a temporary directory and commits it atomically, so a run killed while
saving leaves its previous checkpoint as the latest one. Orbax stores typed PRNG key
arrays (``jax.random.key``) itself, restoring them from ShapeDtypeStructs since 0.11.27.
"""

import json
import os
from typing import Any

import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy


def _json_copy(value):
    """A deep copy through JSON: what reading the value back from a checkpoint gives."""
    return json.loads(json.dumps(value))


def _describe_differences(saved: dict, current: dict) -> str:
    def show(config, key):
        return repr(config[key]) if key in config else "(absent)"

    return "; ".join(
        f"{key}: {show(saved, key)} (checkpoint) vs {show(current, key)} (now)"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key, ...) != current.get(key, ...)
    )


class Checkpointer:
    """Periodic, asynchronous checkpoints of a training run in `directory`, keeping the last `max_to_keep`."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        fingerprint: dict,
        max_to_keep: int = 3,
        save_every_steps: int = 100,
    ):
        """`fingerprint`: a JSON-serialisable dict (the flattened config) that a checkpoint must match to be restored."""
        directory = os.fspath(directory)
        self.directory = directory if "://" in directory else os.path.abspath(directory)
        self.fingerprint = _json_copy(fingerprint)
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=save_decision_policy.AnySavePolicy(
                [
                    save_decision_policy.FixedIntervalPolicy(save_every_steps),
                    save_decision_policy.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=preservation_policy.LatestN(max_to_keep),
            cleanup_tmp_directories=True,  # unfinished saves of killed runs
            enable_async_checkpointing=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def restore(self, abstract_state) -> tuple[Any, dict] | None:
        """The latest checkpoint as (state, metadata), or None when there is none.

        `abstract_state`: a pytree of jax.ShapeDtypeStruct (with .sharding) or arrays like the
        state, giving the shapes, dtypes and shardings to restore to. The metadata comes back as
        JSON gives it (tuples as lists). Raises ValueError, naming the differing keys, when the
        checkpoint was written with another fingerprint.
        """
        self._manager.wait_until_finished()
        step = self._manager.latest_step()
        if step is None:
            return None
        meta_args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        saved = self._manager.restore(step, args=meta_args)["meta"]
        if saved["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"checkpoint in {self.directory} was written by a different config or dataset: "
                f"{_describe_differences(saved['fingerprint'], self.fingerprint)}. "
                f"Use another workdir or delete {self.directory} to start over."
            )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"], saved["metadata"]

    def save(self, step: int, state, metadata: dict, *, force: bool = False) -> bool:
        """Saves asynchronously when `step` is due (every save_every_steps) or force; returns whether it saved.

        Also saves at a JAX preemption sync point (multi-process runs with a preemption
        service). A step that is already saved is skipped. `metadata` must be JSON-serialisable;
        the arrays of `state` are copied before this returns, so the caller may donate them.
        """
        step = int(step)
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            return False
        meta = {"fingerprint": self.fingerprint, "metadata": _json_copy(metadata)}
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=force,
        )

    def wait(self) -> None:
        """Blocks until pending saves are written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's resources."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
