"""Experiment configs: ``ml_collections`` files with ``get_config()`` and command-line overrides.

A config file is a Python file whose ``get_config()`` returns a ``ConfigDict``
(as in big_vision and jax_privacy). ``default_config()`` below lists every key
with its meaning; config files start from it and change what they need.
Overrides such as ``--config.dp.mode=maskdp`` are applied on top; an unknown key
or a value of the wrong type is an error that names the key.
"""

import ast
import importlib.util
import os
from collections.abc import Callable, Sequence

import ml_collections

OVERRIDE_PREFIX = "--config."
FREE_FORM = ("model.kwargs",)  # sections whose keys the model defines


def default_config() -> ml_collections.ConfigDict:
    """The embedded default: a video ViT on the synthetic action clips."""
    c = ml_collections.ConfigDict()
    c.name = "default"  # name of the run (metrics, demo table)
    c.seed = 0  # model initialisation seed (public)

    c.data = ml_collections.ConfigDict()
    c.data.name = "synthetic"  # "synthetic" (generated here) or a prepared TFDS dataset folder
    # Evaluate on the test split of this dataset instead ("": data.name's); e.g. the original
    # data of an anonymized training set. It must have the same classes.
    c.data.test_name = ""
    c.data.data_dir = os.path.join(
        "~", ".cache", "jaxpriv", "tfds"
    )  # where synthetic data is written
    c.data.kind = "video"  # synthetic: "video" (T×H×W×3 clips) or "image" (H×W×3)
    c.data.frames = 4  # synthetic video: frames per clip
    c.data.num_train = 4096
    c.data.num_test = 1024
    c.data.sensitivity = "real"  # synthetic: "real" | "all" | "none" (jaxpriv.data.sensitivity)
    c.data.seed = 0
    # A split of at most this many MiB is decoded once and held in memory (per process); a
    # larger one is read from disk batch by batch.
    c.data.cache_mb = 1024.0

    c.model = ml_collections.ConfigDict()
    c.model.name = "video_vit"  # "vit" | "video_vit" | "resnet"
    # Pretrained weights: a local .npz in jaxpriv's parameter names or a `jaxpriv train` workdir
    # or checkpoint (models/pretrained.py); leaves of another shape (the head) keep their init.
    c.model.init_from = ""
    # Passed to the model's constructor. split_streams: public tokens never attend to private
    # ones, so the noise-free public gradient of MaskDP transfers to full inputs (models/vit.py).
    # max_kept_tokens: public views run on at most this many tokens (the synthetic 4-frame clips
    # keep ≤ 16 of 128 tubelets), which makes MaskDP's second pass cheap.
    c.model.kwargs = ml_collections.ConfigDict(
        {
            "width": 64,
            "depth": 2,
            "heads": 4,
            "mlp_dim": 128,
            "split_streams": True,
            "max_kept_tokens": 16,
        }
    )

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 10.0  # planned length; DP runs also stop when the ε budget is spent
    c.train.batch_size = 256  # expected batch size B = qN (Poisson) or the fixed batch size
    c.train.microbatch_size = 16  # examples per vmap call per device; bounds memory, not the batch
    c.train.memory_budget_mb = 2048.0  # with microbatch_size = 0: the largest that fits, per device
    # How the micro-batches run: "scan" (a loop compiled once; all-padding micro-batches skipped),
    # "unroll" (one copy per micro-batch), or "auto": unroll for convolutional models on CPU,
    # where XLA runs convolutions in loop bodies ~10x slower (jax-ml/jax#12868), else scan.
    c.train.microbatch_loop = "auto"
    c.train.optimizer = "adam"  # "adam" | "sgd" | "adamw"
    c.train.learning_rate = 3e-3
    c.train.momentum = 0.9  # sgd only
    c.train.weight_decay = 0.0  # adamw only
    c.train.warmup_steps = 0
    c.train.eval_batch_size = 256
    c.train.log_every_steps = 10  # how often the parameters are checked for NaN/inf and shown
    # Also log the training loss of the private batch (DP modes). It is computed from private
    # data and NOT covered by ε; by default MaskDP logs the public-view loss, DP-SGD no loss.
    c.train.log_private_loss = False

    # Where a run's metrics go besides <workdir>/metrics.jsonl; none of it changes the run.
    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True  # event files in <workdir> (`tensorboard --logdir runs`)
    c.log.wandb = False  # also log to Weights & Biases (needs `pip install wandb`)
    c.log.wandb_project = "jaxpriv"
    c.log.report = True  # write <workdir>/report.md when the run ends (`jaxpriv report`)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 50  # asynchronous saves to <workdir>/checkpoints; always at the end
    c.checkpoint.keep = 3  # the last N checkpoints are kept

    c.dp = ml_collections.ConfigDict()
    c.dp.mode = "none"  # "none" | "dpsgd" | "maskdp"
    c.dp.clip_norm = 1.0  # C
    # C_pub for MaskDP's public gradients; no privacy rests on it. inf (default) lets the
    # noise-free public gradient train at full strength; a finite value only stabilises.
    c.dp.public_clip_norm = float("inf")
    c.dp.epsilon = 4.0  # target ε: σ is calibrated to it unless noise_multiplier > 0
    c.dp.delta = 1e-5
    c.dp.noise_multiplier = 0.0  # σ; > 0 fixes σ and training stops when ε reaches dp.epsilon
    # Seed of the DP noise and of the private batch sampling. It must stay secret: anyone who
    # knows it can replay the noise. -1 (default) draws a fresh 128-bit one from the OS for every
    # run (kept in the checkpoints, which are therefore private); set it only to reproduce a run.
    c.dp.secret_seed = -1
    c.dp.accountant = "pld"  # "pld" | "rdp"
    c.dp.sampling = "poisson"  # "poisson"; "shuffle" (per-epoch shuffled batches): non-private only
    c.dp.neighboring = "add_remove"  # "add_remove" | "replace_one" (sensitivity 2C)
    # How per-example gradients are clipped (same values): "vmap" forms every example's whole
    # gradient; "ghost" (book-keeping) runs one batched backward pass and forms per-example
    # gradients only where cheapest, layer by layer (jaxpriv/dp/ghost.py); "auto": ghost for
    # the ViTs, vmap for the ResNet (the faster of the two for each, README: Benchmark).
    c.dp.clipping = "auto"
    return c


def load_config(
    path: str | None,
    overrides: Sequence[str] = (),
    default: Callable[[], ml_collections.ConfigDict] = default_config,
) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of the file at ``path`` (``default()`` when ``path`` is None) and
    applies ``key=value`` overrides."""
    if path is None:
        config = default()
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path!r} does not exist")
        spec = importlib.util.spec_from_file_location("_jaxpriv_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ValueError(f"config file {path!r} defines no get_config()")
        config = module.get_config()
    for override in overrides:
        apply_override(config, override)
    return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
    """Sets ``dotted.key=value`` in place; the value is a Python literal or a bare string."""
    key, sep, text = override.removeprefix(OVERRIDE_PREFIX).partition("=")
    if not sep:
        raise ValueError(f"override {override!r} must look like {OVERRIDE_PREFIX}key=value")
    *parents, leaf = key.split(".")
    node = config
    for i, name in enumerate(parents):
        node = _child(node, name, ".".join(parents[: i + 1]))
    if ".".join(parents) in FREE_FORM and leaf not in node:
        node[leaf] = _literal(text)
        return
    current = _child(node, leaf, key)
    try:
        node[leaf] = _parse(text, current)
    except (TypeError, ValueError, SyntaxError, KeyError) as error:
        raise ValueError(
            f"config key {key!r} holds a {type(current).__name__}; cannot set it to {text!r}"
        ) from error


def _parse(text: str, current):
    """The override's value, read as the type of the value it replaces."""
    if isinstance(current, str):
        return text
    if isinstance(current, bool):
        return {"true": True, "false": False}[text.lower()]
    if isinstance(current, (int, float)):
        return type(current)(text)
    return _literal(text)


def _literal(text: str):
    """A Python literal (number, tuple, None, …), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _child(node: ml_collections.ConfigDict, name: str, path: str):
    if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        raise ValueError(f"unknown config key {path!r}; valid keys here: {', '.join(valid)}")
    return node[name]


def check_known_keys(config: ml_collections.ConfigDict, reference=None, prefix: str = "") -> None:
    """Raises if ``config`` has a key that ``default_config()`` does not know (e.g. a typo)."""
    reference = default_config() if reference is None else reference
    for key, value in config.items():
        path = f"{prefix}{key}"
        if key not in reference:
            raise ValueError(
                f"unknown config key {path!r}; valid keys here: "
                f"{', '.join(sorted(reference.keys()))}"
            )
        if isinstance(value, ml_collections.ConfigDict) and path not in FREE_FORM:
            check_known_keys(value, reference[key], f"{path}.")
