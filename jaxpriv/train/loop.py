"""The train loop: data → plan (σ, steps) → jitted steps → eval, ε, metrics per epoch."""

import dataclasses
import math
import os
import secrets
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jaxpriv import config as config_lib
from jaxpriv.data import pipeline, schema, tfds_builder
from jaxpriv.dp import accounting, sampling
from jaxpriv.dp.noise import privatize_sum
from jaxpriv.models import build_model
from jaxpriv.train.metrics import JsonlWriter
from jaxpriv.train.step import MODES, TrainState, make_eval_step, make_loss_fn, make_train_step


@dataclasses.dataclass(frozen=True)
class Plan:
    """The schedule of a run, fixed before it starts."""

    dataset_size: int
    batch_size: int  # expected (Poisson) or fixed (shuffle) batch size B
    sampling_rate: float  # q = B / N
    steps: int
    steps_per_epoch: int
    capacity: int  # physical batch: the fixed shape every step is compiled for
    microbatch_size: int
    noise_multiplier: float  # σ; 0 for non-private training

    def epsilon(self, steps: int, dp: ml_collections.ConfigDict) -> float | None:
        """ε spent after ``steps`` steps; None for non-private training (ε = ∞)."""
        if self.noise_multiplier == 0:
            return None
        return accounting.epsilon(
            noise_multiplier=self.noise_multiplier,
            sampling_rate=self.sampling_rate,
            steps=steps,
            **_accounting_options(dp, self.dataset_size),
        )


def _accounting_options(dp: ml_collections.ConfigDict, dataset_size: int) -> dict:
    return dict(
        delta=dp.delta,
        accountant=dp.accountant,
        sampling=dp.sampling,
        dataset_size=dataset_size,
        neighboring=dp.neighboring,
    )


def plan_run(config: ml_collections.ConfigDict, dataset_size: int) -> Plan:
    """Sampling rate, σ (calibrated to dp.epsilon, or fixed), steps and batch shapes."""
    train, dp = config.train, config.dp
    if dp.mode not in MODES:
        raise ValueError(f"unknown dp.mode {dp.mode!r}; choose one of {MODES}")
    if not 0 < train.batch_size <= dataset_size:
        raise ValueError(
            f"train.batch_size must be in [1, {dataset_size}] (the dataset size), "
            f"got {train.batch_size}"
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
        options = _accounting_options(dp, dataset_size)
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
    microbatch = min(train.microbatch_size, train.batch_size)
    if dp.sampling == "poisson":
        capacity = sampling.physical_batch_size(dataset_size, q, multiple_of=microbatch)
    elif train.batch_size % microbatch:
        raise ValueError(
            f"with fixed-size batches, train.batch_size ({train.batch_size}) must be "
            f"a multiple of train.microbatch_size ({microbatch})"
        )
    else:
        capacity = train.batch_size
    return Plan(
        dataset_size, train.batch_size, q, steps, max(1, round(1 / q)), capacity, microbatch, sigma
    )


def load_data(data: ml_collections.ConfigDict):
    """(train source, test source, number of classes) of the configured dataset."""
    if data.name == "synthetic":
        dataset = tfds_builder.prepare_synthetic(
            os.path.expanduser(data.data_dir),
            kind=data.kind,
            frames=data.frames,
            num_train=data.num_train,
            num_test=data.num_test,
            seed=data.seed,
            sensitivity=data.sensitivity,
        )
    elif os.path.isfile(os.path.join(os.path.expanduser(data.name), "dataset_info.json")):
        dataset = os.path.expanduser(data.name)
    else:
        raise FileNotFoundError(
            f"data.name={data.name!r} is neither 'synthetic' nor a prepared TFDS dataset folder "
            "(the folder holding dataset_info.json, e.g. the 'TFDS dataset' that jaxpriv "
            "anonymize prints)"
        )
    train = pipeline.load_source(dataset, "train")
    test = pipeline.load_source(dataset, "test")
    return train, test, train.dataset_info.features[schema.LABEL].num_classes


def make_optimizer(train: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        train.learning_rate,
        train.warmup_steps,
        max(steps, train.warmup_steps + 1),
        end_value=0.1 * train.learning_rate,
    )
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
    num_classes: int,
    example: np.ndarray,
    pixels: str,
    noise_seed: int = 0,
):
    """(model, initial TrainState, jitted train step); ``noise_seed`` must be secret in real runs."""
    dp = config.dp
    model = build_model(config.model.name, num_classes, **config.model.kwargs)
    params = model.init(jax.random.key(config.seed), example)
    optimizer = optax.chain(
        privatize_sum(
            clip_norm=dp.clip_norm,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=plan.batch_size,
            seed=noise_seed,
        ),
        make_optimizer(config.train, plan.steps),
    )
    state = TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params))
    train_step = make_train_step(
        make_loss_fn(model, pixels),
        optimizer,
        mode=dp.mode,
        clip_norm=dp.clip_norm,
        public_clip_norm=None if math.isinf(dp.public_clip_norm) else dp.public_clip_norm,
        microbatch_size=plan.microbatch_size,
    )
    return model, state, train_step


def evaluate(eval_step, params, source, batch_size: int) -> float:
    """Accuracy on the whole ``source``."""
    correct = total = 0
    for batch in pipeline.eval_batches(source, batch_size):
        c, n = eval_step(params, batch)
        correct, total = correct + int(c), total + int(n)
    return correct / total


def train(config: ml_collections.ConfigDict, workdir: str, *, progress: bool = True) -> dict:
    """Trains as ``config`` says; writes ``workdir/metrics.jsonl``; returns the final summary."""
    config_lib.check_known_keys(config)
    start = time.time()
    train_source, test_source, num_classes = load_data(config.data)
    plan = plan_run(config, len(train_source))
    dp = config.dp
    pixels = schema.pixel_feature(train_source[0])

    secret = dp.secret_seed if dp.secret_seed >= 0 else secrets.randbits(31)
    model, state, train_step = build_step(
        config, plan, num_classes, train_source[0][pixels][None], pixels, noise_seed=secret
    )
    eval_step = make_eval_step(model, pixels)
    sampler_args = (
        dict(sampling_rate=plan.sampling_rate, capacity=plan.capacity)
        if dp.sampling == "poisson"
        else dict(batch_size=plan.batch_size)
    )
    batches = pipeline.train_batches(
        train_source,
        seed=secret + 1,
        num_steps=plan.steps,
        sampler=dp.sampling,
        **sampler_args,
    )
    writer = JsonlWriter(os.path.join(workdir, "metrics.jsonl"))

    record = {}
    bar = tqdm.trange(plan.steps, desc=config.name, disable=not progress, unit="step")
    for step in bar:
        state, metrics = train_step(state, next(batches))
        done = step + 1
        end_of_epoch = done % plan.steps_per_epoch == 0 or done == plan.steps
        if done % config.train.log_every_steps == 0 or end_of_epoch:
            loss = float(metrics["loss"])
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} at step {done}; the run diverged. Lower "
                    f"train.learning_rate (now {config.train.learning_rate}) or check the data."
                )
            bar.set_postfix(loss=f"{loss:.3f}")
        if end_of_epoch:
            record = {
                "step": done,
                "epoch": done / plan.steps_per_epoch,
                "train_loss": loss,
                "test_accuracy": evaluate(
                    eval_step, state.params, test_source, config.train.eval_batch_size
                ),
                "epsilon": plan.epsilon(done, dp),
                "delta": dp.delta,
                "noise_multiplier": plan.noise_multiplier,
                "mode": dp.mode,
                "wall_time": time.time() - start,
            }
            writer.write(record)
            bar.set_postfix(
                loss=f"{loss:.3f}",
                acc=f"{record['test_accuracy']:.3f}",
                eps="∞" if record["epsilon"] is None else f"{record['epsilon']:.2f}",
            )
    return record
