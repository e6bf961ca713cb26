"""The train loop: data → plan (σ, steps) → jitted steps → eval, ε, metrics per epoch."""

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import secrets
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxpriv import config as config_lib
from jaxpriv import files
from jaxpriv.data import pipeline, schema, tfds_builder
from jaxpriv.dp import accounting, sampling
from jaxpriv.dp import mechanism as mechanism_lib
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.models import MODELS, build_model, pretrained
from jaxpriv.train import memory, parallel
from jaxpriv.train.checkpoint import Checkpointer
from jaxpriv.train.metrics import MetricsLog, public_config, read_jsonl
from jaxpriv.train.step import TrainState, make_eval_step, make_loss_fn, make_train_step


@dataclasses.dataclass(frozen=True)
class Plan:
    """The schedule of a run, fixed before it starts."""

    dataset_size: int
    batch_size: int  # expected (Poisson) or fixed (shuffle) batch size B
    sampling_rate: float  # q = B / N
    steps: int
    steps_per_epoch: int
    capacity: int  # physical private batch: the fixed shape every step is compiled for
    microbatch_size: int
    noise_multiplier: float  # σ; 0 for non-private training
    public_capacity: int = 0  # physical public batch (MaskDP): B padded to whole micro-batches


def accounting_options(dp: ml_collections.ConfigDict, dataset_size: int) -> dict:
    """The accountant settings of ``dp`` (everything ``accounting.epsilon`` needs but σ, q, T)."""
    return dict(
        delta=dp.delta,
        accountant=dp.accountant,
        sampling=dp.sampling,
        dataset_size=dataset_size,
        neighboring=dp.neighboring,
    )


class DeltaWarning(UserWarning):
    """δ too large for the dataset size to mean anything."""


def plan_run(
    config: ml_collections.ConfigDict,
    dataset_size: int,
    num_devices: int = 1,
    microbatch_size: int | None = None,
) -> Plan:
    """Sampling rate, σ (calibrated to dp.epsilon, or fixed), steps and batch shapes.

    The physical batch splits evenly over ``num_devices``, each device's share into
    micro-batches of ``microbatch_size`` (default ``train.microbatch_size``).
    """
    train, dp = config.train, config.dp
    if dp.mode not in mechanism_lib.MODES:
        raise ValueError(f"unknown dp.mode {dp.mode!r}; choose one of {mechanism_lib.MODES}")
    if not 0 < train.batch_size <= dataset_size:
        raise ValueError(
            f"train.batch_size must be in [1, {dataset_size}] (the dataset size), "
            f"got {train.batch_size}"
        )
    if not train.epochs > 0:
        raise ValueError(f"train.epochs must be positive, got {train.epochs}")
    if dp.mode != "none" and not 0 < dp.delta < 1:
        raise ValueError(f"dp.delta must be in (0, 1), got {dp.delta}")
    if dp.mode != "none" and dp.delta >= 1 / dataset_size:
        warnings.warn(
            f"dp.delta={dp.delta:g} is not below 1/N = {1 / dataset_size:.3g} (N = "
            f"{dataset_size}): a mechanism that publishes one random example whole meets "
            f"(0, δ)-DP at δ = 1/N, so this guarantee is meaningless; use dp.delta ≤ "
            f"{0.1 / dataset_size:.1g}",
            DeltaWarning,
            stacklevel=2,
        )
    if dp.mode != "none" and dp.sampling == "shuffle":
        raise ValueError(
            "dp.sampling='shuffle' trains on disjoint batches of one shuffle per epoch, which the "
            "sampling-without-replacement accounting (an independent batch every step) does not "
            "cover; use dp.sampling='poisson' for DP training"
        )
    q = train.batch_size / dataset_size
    steps = max(1, math.ceil(train.epochs * dataset_size / train.batch_size))
    sigma = 0.0
    if dp.mode != "none":
        options = accounting_options(dp, dataset_size)
        if dp.noise_multiplier > 0:
            sigma = dp.noise_multiplier
            steps = min(
                steps,
                accounting.max_steps(
                    noise_multiplier=sigma, sampling_rate=q, target_epsilon=dp.epsilon, **options
                ),
            )
            if steps == 0:
                raise accounting.UnreachableBudgetError(
                    f"a single step with σ={sigma} and q={q:.4g} already spends more than "
                    f"ε={dp.epsilon} at δ={dp.delta}; raise dp.noise_multiplier or dp.epsilon"
                )
        else:
            sigma = accounting.calibrate_noise_multiplier(
                target_epsilon=dp.epsilon, sampling_rate=q, steps=steps, **options
            )
    microbatch = min(microbatch_size or train.microbatch_size, train.batch_size)
    if microbatch < 1:
        raise ValueError(
            f"train.microbatch_size must be positive, or 0 to choose it from "
            f"train.memory_budget_mb; got {train.microbatch_size}"
        )
    shard = microbatch * num_devices
    public_capacity = math.ceil(train.batch_size / shard) * shard if dp.mode == "maskdp" else 0
    if dp.sampling == "poisson":
        capacity = sampling.physical_batch_size(dataset_size, q, multiple_of=shard)
    elif train.batch_size % shard:
        raise ValueError(
            f"with fixed-size batches, train.batch_size ({train.batch_size}) must be a multiple "
            f"of train.microbatch_size ({microbatch}) times the {num_devices} device(s)"
        )
    else:
        capacity = train.batch_size
    return Plan(
        dataset_size,
        train.batch_size,
        q,
        steps,
        max(1, round(1 / q)),
        capacity,
        microbatch,
        sigma,
        public_capacity,
    )


def build_mechanism(config: ml_collections.ConfigDict, plan: Plan, secret: int) -> DpMechanism:
    """The run's ``DpMechanism``: the one place where the config and the plan become C, σ, B,
    the samplers and the noise key. ``secret`` seeds the private sampler and the noise."""
    dp = config.dp
    return DpMechanism(
        mode=dp.mode,
        clip_norm=dp.clip_norm,
        noise_multiplier=plan.noise_multiplier,
        dataset_size=plan.dataset_size,
        batch_size=plan.batch_size,
        capacity=plan.capacity,
        public_capacity=plan.public_capacity,
        public_clip_norm=None if math.isinf(dp.public_clip_norm) else dp.public_clip_norm,
        sampling=dp.sampling,
        delta=dp.delta,
        accountant=dp.accountant,
        neighboring=dp.neighboring,
        public_seed=config.seed,
        clipping_method=clipping_method(config),
        secret=secret,
    )


def clipping_method(config: ml_collections.ConfigDict) -> str:
    """``dp.clipping`` with "auto" resolved from measurements (README, Benchmark): "ghost" for
    token models, "vmap" for convolutional ones, whose per-example convolution gradients the
    ghost path forms layer by layer at no gain."""
    if config.dp.clipping != "auto":
        return config.dp.clipping
    model = MODELS.get(config.model.name)
    return "vmap" if model is None or model.convolutional else "ghost"


def load_data(data: ml_collections.ConfigDict):
    """(train source, test source, number of classes) of the configured dataset.

    The test split comes from ``data.test_name`` when set (e.g. the original data of an
    anonymized training set), which must have the same classes. Process 0 writes the synthetic
    dataset first (when missing); the others find it complete on a shared data_dir, or write
    their own copy on a local one.
    """
    dataset = dataset_folder(data, data.name)
    test_dataset = dataset_folder(data, data.test_name) if data.test_name else dataset
    train = pipeline.load_source(dataset, "train", data.cache_mb)
    test = pipeline.load_source(test_dataset, "test", data.cache_mb)
    classes = train.dataset_info.features[schema.LABEL].names
    test_classes = test.dataset_info.features[schema.LABEL].names
    if test_classes != classes:
        raise ValueError(
            f"data.test_name={data.test_name!r} has the classes {test_classes}, but the training "
            f"data {data.name!r} has {classes}; the test labels would mean other classes"
        )
    return train, test, len(classes)


SYNTHETIC_ONLY = ("kind", "frames", "num_train", "num_test", "sensitivity", "seed")


def check_generation_keys(data: ml_collections.ConfigDict) -> None:
    """Refuses settings of the synthetic data's generation on a prepared dataset, where they
    would be silently ignored (its size and masks are what was written)."""
    if data.name == "synthetic":
        return
    defaults = config_lib.default_config().data
    changed = [key for key in SYNTHETIC_ONLY if data[key] != defaults[key]]
    if changed:
        raise ValueError(
            f"data.{', data.'.join(changed)} only configure the generated synthetic data; "
            f"data.name={data.name!r} is a prepared dataset, used whole as written"
        )


def dataset_folder(data: ml_collections.ConfigDict, name: str):
    """The prepared TFDS dataset called ``name``: "synthetic" (written here) or a folder."""
    if name == "synthetic":
        if jax.process_index() > 0:
            multihost_utils.sync_global_devices("jaxpriv: synthetic data written by process 0")
        dataset = tfds_builder.prepare_synthetic(
            os.path.expanduser(data.data_dir),
            kind=data.kind,
            frames=data.frames,
            num_train=data.num_train,
            num_test=data.num_test,
            seed=data.seed,
            sensitivity=data.sensitivity,
        )
        if jax.process_index() == 0 and jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxpriv: synthetic data written by process 0")
        return dataset
    folder = os.path.expanduser(name)
    if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
        raise FileNotFoundError(
            f"dataset {name!r} is neither 'synthetic' nor a prepared TFDS dataset folder "
            "(the folder holding dataset_info.json, e.g. the 'TFDS dataset' that jaxpriv "
            "anonymize prints)"
        )
    return folder


def learning_rate_schedule(train: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    """Linear warm-up to ``train.learning_rate``, then cosine decay to a tenth of it."""
    return optax.warmup_cosine_decay_schedule(
        0.0,
        train.learning_rate,
        train.warmup_steps,
        max(steps, train.warmup_steps + 1),
        end_value=0.1 * train.learning_rate,
    )


def make_optimizer(train: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(train, steps)
    if train.optimizer == "adam":
        return optax.adam(schedule)
    if train.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=train.weight_decay)
    if train.optimizer == "sgd":
        return optax.sgd(schedule, momentum=train.momentum)
    raise ValueError(f"unknown train.optimizer {train.optimizer!r}; choose adam, adamw or sgd")


def build_step(
    config: ml_collections.ConfigDict,
    plan: Plan,
    mechanism: DpMechanism,
    num_classes: int,
    example: np.ndarray,
    pixels: str,
    mesh: Mesh,
):
    """(model, initial TrainState replicated over ``mesh``, jitted data-parallel train step)."""
    model = build_model(config.model.name, num_classes, **config.model.kwargs)
    optimizer = make_optimizer(config.train, plan.steps)

    def init(noise_key):  # the key is an argument: the secret never becomes a constant
        params = model.init(jax.random.key(config.seed), example)
        return TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params), noise_key)

    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(mechanism.noise_key_data())
    train_step = make_train_step(
        mechanism,
        make_loss_fn(model, pixels),
        optimizer,
        mesh,
        microbatch_size=plan.microbatch_size,
        unroll_microbatches=unroll_microbatches(config.train, model),
    )
    return model, state, train_step


def unroll_microbatches(train: ml_collections.ConfigDict, model: nn.Module) -> bool:
    """Whether ``train.microbatch_loop`` (see the default config) unrolls ``model``'s
    micro-batches."""
    loop_kind = train.microbatch_loop
    if loop_kind == "auto":
        return model.convolutional and jax.default_backend() == "cpu"
    if loop_kind not in ("scan", "unroll"):
        raise ValueError(
            f"train.microbatch_loop must be 'auto', 'scan' or 'unroll', got {loop_kind!r}"
        )
    return loop_kind == "unroll"


def with_pretrained(state: TrainState, path: str) -> TrainState:
    """``state`` with the parameters of the weights at ``path`` that fit the model."""
    params, report = pretrained.merge(
        state.params, pretrained.load_params(os.path.expanduser(path)), source=path
    )
    if jax.process_index() == 0:
        kept = ", ".join(report["kept_init"]) or "none"
        print(f"loaded {report['loaded']} pretrained tensors from {path}; initialised: {kept}")
    return state._replace(params=params)


def batch_spec(example: np.ndarray, pixels: str, size: int, mesh: Mesh) -> dict:
    """Shapes, dtypes and shardings of a batch of ``size`` examples like ``example`` [1, ...]."""
    sharding = parallel.batch_sharding(mesh)

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct((size, *shape), dtype, sharding=sharding)

    return {
        pixels: spec(example.shape[1:], np.uint8),
        schema.LABEL: spec((), np.int32),
        schema.SENSITIVE: spec(example.shape[1:-1], np.bool_),
        pipeline.WEIGHT: spec((), np.float32),
    }


def step_working_memory(config, plan: Plan, num_classes, example, pixels, mesh, microbatch) -> int:
    """Bytes of XLA's temporary buffers per device for the train step at ``microbatch``."""
    size = microbatch * mesh.size
    probe = dataclasses.replace(
        plan,
        capacity=size,
        public_capacity=size if plan.public_capacity else 0,
        microbatch_size=microbatch,
        batch_size=min(plan.batch_size, size),
    )
    mechanism = build_mechanism(config, probe, secret=0)
    _, state, step = build_step(config, probe, mechanism, num_classes, example, pixels, mesh)
    batches = {name: batch_spec(example, pixels, size, mesh) for name in mechanism.batch_names()}
    return step.lower(state, batches).compile().memory_analysis().temp_size_in_bytes


def auto_microbatch_size(config, plan: Plan, num_classes, example, pixels, mesh: Mesh) -> int:
    """The largest micro-batch size whose step fits ``train.memory_budget_mb`` per device."""
    return memory.choose_microbatch_size(
        functools.partial(step_working_memory, config, plan, num_classes, example, pixels, mesh),
        int(config.train.memory_budget_mb * 2**20),
        largest=max(1, plan.batch_size // mesh.size),
    )


def evaluate(eval_step, params, source, batch_size: int, mesh: Mesh) -> float:
    """Accuracy on the whole ``source``; each process reads its rows of every batch."""
    batch_size = math.ceil(batch_size / mesh.size) * mesh.size
    rows = parallel.local_rows(mesh, batch_size)
    correct = total = 0
    for batch in pipeline.eval_batches(source, batch_size, rows=rows):
        c, n = eval_step(params, parallel.to_global(batch, mesh, batch_size))
        correct, total = correct + int(c), total + int(n)
    return correct / total


SECRET_BITS = 128


def shared_secret(secret_seed: int) -> int:
    """``secret_seed``, or for -1 a fresh 128-bit secret from the OS, the same in every process."""
    if secret_seed >= 0:
        return secret_seed
    words = np.array([secrets.randbits(32) for _ in range(SECRET_BITS // 32)], np.uint32)
    if jax.process_count() > 1:
        words = np.asarray(multihost_utils.broadcast_one_to_all(words), np.uint32)
    return int.from_bytes(words.tobytes(), "little")


def dataset_fingerprint(source) -> dict:
    """The training data a checkpoint belongs to: its size and the SHA-256 of its files."""
    folder = source.dataset_info.data_dir
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        digest.update(name.encode() + b"\0")
        with open(os.path.join(folder, name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return {"size": len(source), "sha256": digest.hexdigest()}


def params_digest(params) -> str:
    """SHA-256 of the parameters' bytes: equal digests mean bit-identical parameters."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        digest.update(np.asarray(leaf.addressable_data(0)).tobytes())
    return digest.hexdigest()


def fingerprint(config: ml_collections.ConfigDict) -> dict:
    """The settings a checkpoint must agree with to be resumed: the whole config except the
    keys that only change how a run is observed or saved."""
    flat = {}

    def visit(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, ml_collections.ConfigDict) and name not in config_lib.FREE_FORM:
                visit(value, f"{name}.")
            elif name not in RESUMABLE_CHANGES and not name.startswith(("checkpoint.", "log.")):
                flat[name] = value.to_dict() if hasattr(value, "to_dict") else value
        return flat

    return json.loads(json.dumps(visit(config, ""), default=list))


RESUMABLE_CHANGES = ("train.log_every_steps", "train.eval_batch_size", "train.log_private_loss")


def released_losses(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The losses a run logs, as {record key: step metric}: the non-private training loss, or
    MaskDP's public-view loss; the private-batch loss only with ``train.log_private_loss``
    (outside the guarantee)."""
    mode = config.dp.mode
    losses = {"none": {"train_loss": "loss"}, "maskdp": {"public_loss": "public_loss"}}
    released = dict(losses.get(mode, {}))
    if mode != "none" and config.train.log_private_loss:
        released["private_loss"] = "private_loss"
    return released


class StepClock:
    """Mean seconds per train step between evaluations, without the first step of a process
    (it compiles) and without evaluation time. Read it after the host has waited for the
    last step (the loop reads that step's metrics first)."""

    def __init__(self):
        self.start, self.steps = None, 0

    def tick(self, state) -> None:
        if self.start is None:  # the first step: wait for it once, then start timing
            jax.block_until_ready(state)
            self.restart()
        else:
            self.steps += 1

    def restart(self) -> None:
        self.start, self.steps = time.perf_counter(), 0

    def seconds_per_step(self) -> float | None:
        """None when no step was timed (an evaluation right after the first step)."""
        return (time.perf_counter() - self.start) / self.steps if self.steps else None


def write_run_description(
    workdir: str, config, plan: Plan, clipping: str, devices: int, dataset: str
) -> None:
    """``workdir/run.json``: the config (secret seed hidden), the plan (q, σ, steps, batch
    shapes), the clipping path and the dataset folder: what ``jaxpriv report`` describes."""
    description = {
        "config": public_config(config),
        "plan": dataclasses.asdict(plan),
        "clipping": clipping if config.dp.mode != "none" else None,
        "devices": devices,
        "dataset": dataset,
    }
    with files.atomic_path(os.path.join(workdir, "run.json")) as temporary:
        temporary.write_text(json.dumps(description, indent=1))


def train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Trains as ``config`` says, data-parallel over all devices of all processes.

    Writes ``workdir/metrics.jsonl`` (process 0) and checkpoints in ``workdir/checkpoints``; a
    run whose workdir holds a checkpoint of the same config and data resumes from it (same
    parameters, step, ε, batches and noise as an uninterrupted run). Returns the last metrics
    record. The checkpoints hold the run's secret: keep them private (``jaxpriv export``
    writes what may be released).
    """
    config_lib.check_known_keys(config)
    start = time.time()
    mesh = parallel.data_mesh()
    train_source, test_source, num_classes = load_data(config.data)
    pixels = schema.pixel_feature(train_source[0])
    example = train_source[0][pixels][None]
    microbatch = config.train.microbatch_size
    if microbatch == 0:
        probe = plan_run(config, len(train_source), mesh.size, microbatch_size=1)
        microbatch = auto_microbatch_size(config, probe, num_classes, example, pixels, mesh)
    plan = plan_run(config, len(train_source), mesh.size, microbatch)
    mechanism = build_mechanism(config, plan, shared_secret(config.dp.secret_seed))
    model, state, train_step = build_step(
        config, plan, mechanism, num_classes, example, pixels, mesh
    )
    eval_step = make_eval_step(model, pixels)
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"),
        fingerprint=fingerprint(config) | {"dataset": dataset_fingerprint(train_source)},
        max_to_keep=config.checkpoint.keep,
        save_every_steps=config.checkpoint.every_steps,
    )
    first = 0
    restored = checkpointer.restore(state)
    if restored is None and config.model.init_from:  # a resumed run has its own parameters
        state = with_pretrained(state, config.model.init_from)
    if restored is not None:  # resume: the state (its noise key too) and the sampler's secret
        state, saved = restored
        first = saved["step"]
        mechanism = dataclasses.replace(mechanism, secret=int(saved["secret"]))
    lead = jax.process_index() == 0
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if lead:
        dataset = os.path.abspath(train_source.dataset_info.data_dir)
        write_run_description(workdir, config, plan, mechanism.clipping_method, mesh.size, dataset)
    if first >= plan.steps:  # finished earlier: nothing to do
        checkpointer.close()
        return read_jsonl(metrics_path)[-1] if lead else {}
    batches = pipeline.train_batches(
        train_source,
        mechanism,
        num_steps=plan.steps - first,
        start_step=first,
        num_shards=mesh.size,
        rows=functools.partial(parallel.local_rows, mesh),
    )
    shapes = {"private": plan.capacity, "public": plan.public_capacity}
    losses = released_losses(config)

    record = {}
    clock = StepClock()
    bar = tqdm.tqdm(
        range(first, plan.steps),
        initial=first,
        total=plan.steps,
        desc=config.name,
        disable=not (progress and lead),
        unit="step",
    )
    with (
        checkpointer,
        MetricsLog(workdir, config, first) if lead else contextlib.nullcontext() as log,
    ):
        for step in bar:
            step_batches = {
                name: parallel.to_global(batch, mesh, shapes[name])
                for name, batch in next(batches).items()
            }
            state, metrics = train_step(state, step_batches)
            clock.tick(state)
            done = step + 1
            end_of_epoch = done % plan.steps_per_epoch == 0 or done == plan.steps
            if done % config.train.log_every_steps == 0 or end_of_epoch:
                if not bool(metrics["params_finite"]):
                    raise FloatingPointError(
                        f"the parameters became NaN or infinite at step {done}; the run "
                        f"diverged. Lower train.learning_rate (now {config.train.learning_rate}) "
                        "or check the data. The last checkpoint holds the state before."
                    )
                shown = {key: float(metrics[metric]) for key, metric in losses.items()}
                bar.set_postfix({key: f"{value:.3f}" for key, value in shown.items()})
                if lead and not end_of_epoch:
                    log.scalars(done, shown)
            if end_of_epoch:
                step_time = clock.seconds_per_step()  # before evaluating and accounting
                epsilon = mechanism.epsilon(done)
                record = {
                    "step": done,
                    "epoch": done / plan.steps_per_epoch,
                    **shown,
                    "test_accuracy": evaluate(
                        eval_step, state.params, test_source, config.train.eval_batch_size, mesh
                    ),
                    "epsilon": None if math.isinf(epsilon) else epsilon,
                    "delta": config.dp.delta,
                    "noise_multiplier": plan.noise_multiplier,
                    "mode": config.dp.mode,
                    "step_time": step_time,
                    "params_sha256": params_digest(state.params),
                    "wall_time": time.time() - start,
                }
                if lead:
                    log.record(record)
                clock.restart()
                bar.set_postfix(
                    {key: f"{value:.3f}" for key, value in shown.items()}
                    | {
                        "acc": f"{record['test_accuracy']:.3f}",
                        "eps": "∞" if record["epsilon"] is None else f"{epsilon:.2f}",
                    }
                )
            saved = {"step": done, "secret": str(mechanism.secret)}
            checkpointer.save(done, state, saved, force=done == plan.steps)
    return record
