"""Pretrained weights from a local path, merged into a freshly initialised model.

Accepted formats (nothing is ever downloaded):

* an ``.npz`` file written by :func:`save_params`: one array per leaf, named by the
  ``/``-joined keys of the parameter pytree (``params/block0/Dense_0/kernel``);
* a checkpoint of ``jaxpriv train``: ``WORKDIR``, ``WORKDIR/checkpoints`` (its latest step)
  or ``WORKDIR/checkpoints/<step>``. Only the parameters are read, not the optimizer state.

The names are those of jaxpriv's Flax modules. Converting third-party weights (e.g. a timm or
Hugging Face ViT) into an ``.npz`` with these names and shapes is the user's job.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxpriv import files


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flatten(tree) -> dict:
    """``{'/'-joined path: leaf}`` of a pytree."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(_key_name(k) for k in path): leaf for path, leaf in leaves}


def save_params(path: str | os.PathLike, params) -> None:
    """Writes ``params`` (a pytree of arrays) to the ``.npz`` file ``path``, atomically."""
    path = os.fspath(path)
    arrays = {}
    for name, leaf in _flatten(params).items():
        array = np.asarray(jax.device_get(leaf))
        if array.dtype.kind == "V":  # bfloat16 & co. (ml_dtypes): float32 holds them exactly
            array = array.astype(np.float32)
        arrays[name] = array
    with files.atomic_path(path) as temporary, open(temporary, "wb") as f:
        np.savez(f, **arrays)


def _checkpoint_state_dir(path: str) -> str:
    """The Orbax directory of the train state in a workdir, checkpoints dir or step dir."""
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    if not os.path.isdir(os.path.join(path, "state")):
        steps = ocp.utils.checkpoint_steps(path)
        if not steps:
            raise ValueError(
                f"{path} is neither an .npz file nor a jaxpriv checkpoint (a workdir, its "
                "checkpoints directory or one <step> directory in it)"
            )
        path = os.path.join(path, str(max(steps)))
    return os.path.join(path, "state")


def _load_checkpoint(path: str) -> dict:
    state_dir = epath.Path(_checkpoint_state_dir(path))
    handler = ocp.PyTreeCheckpointHandler()
    try:
        tree = handler.metadata(state_dir).tree
        if not isinstance(tree, dict) or "params" not in tree:
            raise ValueError(f"the checkpoint in {state_dir} holds no 'params'")
        item = {"params": tree["params"]}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        restored = handler.restore(
            state_dir,
            args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
        )
    finally:
        handler.close()
    return _flatten(restored["params"])


def load_params(path: str | os.PathLike) -> dict:
    """Flat ``{name: np.ndarray}`` from an ``.npz`` of :func:`save_params` or a checkpoint."""
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    if os.path.isdir(path):
        return _load_checkpoint(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, AttributeError, TypeError) as e:
        raise ValueError(
            f"{path} is not an .npz file of parameters (written by "
            f"jaxpriv.models.pretrained.save_params): {e}"
        ) from e


def _as_leaf(value: np.ndarray, like):
    """``value`` with the dtype (and, for a concrete jax.Array, the sharding) of ``like``."""
    value = np.asarray(value).astype(like.dtype)
    if isinstance(like, jax.core.Tracer):
        return jnp.asarray(value)
    if isinstance(like, jax.Array):
        return jax.make_array_from_callback(value.shape, like.sharding, lambda index: value[index])
    return value


def merge(params, pretrained: dict, *, source: str = "") -> tuple:
    """Copies the ``pretrained`` leaves whose name and shape match into ``params``.

    Returns ``(new params, report)``; report: ``loaded`` (count), ``kept_init`` (model leaves
    left at their initial values: absent from ``pretrained`` or of another shape, e.g. a
    classifier head for another number of classes) and ``unused`` (``pretrained`` entries not
    loaded). Raises ValueError when nothing matches: a wrong file must not train from scratch.
    """
    paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    leaves, loaded, kept_init, shapes = [], set(), [], {}
    for path, leaf in paths:
        name = "/".join(_key_name(k) for k in path)
        shapes[name] = tuple(leaf.shape)
        value = pretrained.get(name)
        if value is not None and tuple(np.shape(value)) == shapes[name]:
            leaves.append(_as_leaf(value, leaf))
            loaded.add(name)
        else:
            leaves.append(leaf)
            kept_init.append(name)
    if not loaded:

        def some(names, shape_of):
            listed = ", ".join(f"{n} {shape_of(n)}" for n in names[:4])
            return f"{listed}{', ...' if len(names) > 4 else ''} ({len(names)} in all)"

        raise ValueError(
            f"no parameter of the pretrained weights {source or '(given)'} matches the model in "
            f"name and shape. Model: {some(list(shapes), shapes.get)}. Weights: "
            f"{some(sorted(pretrained), lambda n: tuple(np.shape(pretrained[n])))}"
        )
    report = {
        "loaded": len(loaded),
        "kept_init": kept_init,
        "unused": sorted(set(pretrained) - loaded),
    }
    return jax.tree_util.tree_unflatten(treedef, leaves), report
