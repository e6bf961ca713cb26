"""Audit jaxpriv's DP-SGD and MaskDP empirically, in one training run per configuration.

Threat model: white-box, every iterate θ_0, …, θ_T released, and the public randomness (MaskDP's
public batches) known. The accounting (the composition of T subsampled Gaussian steps) covers
exactly that release, so any function of the iterates is post-processing and the lower bound of
``jaxpriv.audit.bound`` holds against the claimed (ε, δ). The auditor knows the m candidate
canaries and their IN/OUT versions, but not which are IN, nor the private batches or the noise.

Training is the real mechanism: a ``DpMechanism`` (σ calibrated to the target ε by
``calibrate_noise_multiplier``; σ = 0 for the noise-off self-test) and ``make_train_step`` on a
one-device mesh, with its Poisson and public samplers, then plain SGD. The one exception is the
``maskdp-coupled`` self-test: the same step fed the private batch S as its public batch — the
flawed design that summed the public gradients over S (``jaxpriv.dp.mechanism``). It exists
only here, to show that the audit catches it.

Scores (per step t, from θ_t, θ_{t+1} and the public batch S'_t only). Scaled by B/η, the update
is Δ_t = Σ_{j∈S'} pub_j + Σ_{i∈S} priv_i + N(0, σ²C²I), with pub = clip(p, C_pub) of the public
view and priv = clip(g − p, C) (DP-SGD: clip(g, C), no public part). At θ_t the auditor computes
each canary's contributions, IN and OUT: U_i = priv_i(IN) − priv_i(OUT), the private change that
membership makes when i is sampled, and A_i = pub_i(IN) − pub_i(OUT), the public one.

* "ridge" (DP-SGD, MaskDP): the public batch is known, so Σ_{j∈S'} pub_j(OUT) is subtracted, and
  Δ' is regressed on the rows U_1..U_m and A_j (j ∈ S'): â = (R Rᵀ + Λ)⁻¹ R Δ' with Λ = 2σ²C²/q
  on the U rows (the linear MMSE estimate given the noise and a prior usage of q/2 per step) plus
  a small ridge 1e-4·mean ‖U_i‖² for conditioning. Score: Σ_t â_i (U and A rows of i).
* "decoded" (the coupled design, where S' = S is unknown): first decode who was sampled from the
  OUT parts O_i = pub_i(OUT) + priv_i(OUT) (a regression of Δ on the O rows, Ŝ = {â > 1/2}),
  then, on Δ − Σ_{Ŝ} O_i, estimate each sampled canary's membership x_i from the U rows of Ŝ.
  Score: Σ_t over the steps where i ∈ Ŝ of (x_i − 1/2)·‖U_i‖², the Gaussian log-likelihood
  ratio of IN against OUT up to σ²C².

With the fixed MaskDP the OUT version of a sensitive canary contributes nothing private and the
same public view as the IN one, so after subtracting the known public batch only the private
sum is left, whose best attack is the ridge regression. Without noise, or when the public part
shows who was sampled, these decode membership almost exactly; projecting on each U_i alone (a
matched filter) fails here, since the canaries' gradients overlap far more than the noise.
"""

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from scipy import linalg

from jaxpriv.audit.bound import bound_from_scores
from jaxpriv.audit.canaries import Canaries, draw_membership, make_canaries, training_set
from jaxpriv.audit.spec import LEAK_FOUND, PATCH, AuditSpec
from jaxpriv.data.pipeline import public_view
from jaxpriv.dp import accounting, clipping, sampling
from jaxpriv.dp.mechanism import DpMechanism
from jaxpriv.models import build_model
from jaxpriv.train import parallel
from jaxpriv.train.step import TrainState, make_loss_fn, make_train_step


def noise_multiplier(spec: AuditSpec) -> float:
    """σ calibrated to ``spec.epsilon`` for the schedule, 0 when the noise is off."""
    if math.isinf(spec.epsilon):
        return 0.0
    return accounting.calibrate_noise_multiplier(
        target_epsilon=spec.epsilon,
        delta=spec.delta,
        sampling_rate=spec.sampling_rate,
        steps=spec.steps,
    )


def _seed(spec: AuditSpec, purpose: int) -> int:
    """An independent seed per purpose (secret, public batches, initialisation) from spec.seed."""
    return int(np.random.default_rng([spec.seed, 100 + purpose]).integers(2**31))


def build_mechanism(spec: AuditSpec, sigma: float) -> DpMechanism:
    """The audited mechanism over the m canary rows (q = B/m exactly), with noise σ."""
    batch_size = round(spec.sampling_rate * spec.canaries)
    if not math.isclose(batch_size, spec.sampling_rate * spec.canaries):
        raise ValueError(
            f"sampling_rate × canaries must be a whole batch size, got "
            f"{spec.sampling_rate} × {spec.canaries}"
        )
    capacity = sampling.physical_batch_size(
        spec.canaries, spec.sampling_rate, multiple_of=spec.microbatch_size
    )
    return DpMechanism(
        mode="dpsgd" if spec.mode == "dpsgd" else "maskdp",
        clip_norm=spec.clip_norm,
        noise_multiplier=sigma,
        dataset_size=spec.canaries,
        batch_size=batch_size,
        capacity=capacity,
        public_capacity=capacity,
        public_clip_norm=spec.public_clip_norm,
        delta=spec.delta,
        public_seed=_seed(spec, 1),
        clipping_method="ghost",  # the default for the audited ViT (dp.clipping="auto")
        secret=_seed(spec, 0),
    )


def _ridge(rows: np.ndarray, target: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """argmin_a ‖target − rowsᵀ a‖² + Σ penalty · a², i.e. (R Rᵀ + diag(penalty))⁻¹ R target."""
    return linalg.solve(rows @ rows.T + np.diag(penalty), rows @ target, assume_a="pos")


def make_scorer(spec: AuditSpec, loss_fn: clipping.LossFn, mechanism: DpMechanism, sigma: float):
    """``score(before, after, inside, outside, in_public) -> {name: [m]}``: one step's scores
    (module docstring); ``in_public`` [m] counts each canary in S'. Contributions come from one
    jitted call; the regressions run in float64 NumPy."""
    maskdp = mechanism.mode == "maskdp"
    out_contributes = spec.placement == "public"  # else OUT adds nothing private, and MaskDP's
    # OUT public view equals the IN one: the canary region is sensitive in both, or absent

    def flat_private(params, example):
        tree, _ = clipping.private_contribution(
            loss_fn, params, example, clip_norm=spec.clip_norm, maskdp=maskdp
        )
        return ravel_pytree(tree)[0]

    def flat_public(params, example):
        # The public-view loss ignores the sensitive pixels: no need to fill them here.
        one = jax.tree.map(lambda x: x[None], example)
        tree, _ = clipping.public_microbatch_sum(
            loss_fn, params, one, clip_norm=spec.public_clip_norm
        )
        return ravel_pytree(tree)[0]

    @jax.jit
    def contributions(params, inside, outside):
        def each(fn, batch):
            return jax.vmap(lambda example: fn(params, example))(batch)

        found = {"priv_in": each(flat_private, inside)}
        if maskdp:
            found["pub_in"] = each(flat_public, inside)
        if out_contributes:
            found["priv_out"] = each(flat_private, outside)
            found["pub_out"] = each(flat_public, outside)
        return found

    def score(before, after, inside, outside, in_public):
        found = {
            k: np.asarray(v, np.float64) for k, v in contributions(before, inside, outside).items()
        }
        update = (
            np.asarray(ravel_pytree(before)[0] - ravel_pytree(after)[0], np.float64)
            * mechanism.batch_size
            / spec.learning_rate
        )
        priv_out = found.get("priv_out", 0.0)
        pub_in = found.get("pub_in", 0.0)
        pub_out = found.get("pub_out", pub_in)
        change = found["priv_in"] - priv_out  # U
        m = len(change)
        conditioning = 1e-4 * np.mean(np.sum(change**2, axis=1))
        prior = 2 * (sigma * spec.clip_norm) ** 2 / spec.sampling_rate
        if spec.coupled:  # S' = S: nothing public is known; decode S from the OUT part first
            change = change + pub_in - pub_out
            outside_part = priv_out + pub_out  # O
            sampled = _ridge(outside_part, update, np.full(m, conditioning)) > 0.5
            residual = update - outside_part[sampled].sum(axis=0)
            rows = change[sampled]
            used = _ridge(rows, residual, np.full(len(rows), conditioning))
            decoded = np.zeros(m)
            decoded[sampled] = (used - 0.5) * np.sum(rows**2, axis=1)
            return {"decoded": decoded}
        rows, penalty = change, np.full(m, prior + conditioning)
        if maskdp:  # subtract the known public batch; its canaries' IN − OUT are the A rows
            update = update - in_public @ pub_out
            members = np.flatnonzero(in_public)
            rows = np.concatenate([rows, (pub_in - pub_out)[members]])
            penalty = np.concatenate([penalty, np.full(len(members), conditioning)])
        solved = _ridge(rows, update, penalty)
        ridge = solved[:m].copy()
        if maskdp:
            np.add.at(ridge, members, solved[m:] * in_public[members])
        return {"ridge": ridge}

    return score


def build_training(spec: AuditSpec, mechanism: DpMechanism, example: np.ndarray):
    """(loss_fn, initial TrainState, jitted train step, mesh): jaxpriv's real step on one
    device, then plain SGD."""
    mesh = parallel.data_mesh(jax.devices()[:1])
    model = build_model(
        "vit",
        spec.num_classes,
        patch=(PATCH, PATCH),
        width=spec.width,
        depth=1,
        heads=2,
        mlp_dim=2 * spec.width,
    )
    optimizer = optax.sgd(spec.learning_rate)

    def init(noise_key):
        params = model.init(jax.random.key(_seed(spec, 2)), example)
        return TrainState(jnp.zeros([], jnp.int32), params, optimizer.init(params), noise_key)

    loss_fn = make_loss_fn(model, "image")
    step = make_train_step(
        mechanism, loss_fn, optimizer, mesh, microbatch_size=spec.microbatch_size
    )
    state = jax.jit(init, out_shardings=parallel.replicated(mesh))(mechanism.noise_key_data())
    return loss_fn, state, step, mesh


def _rows(data: dict, indices: np.ndarray, weights: np.ndarray) -> dict:
    """The batch of ``data``'s rows at ``indices``; a row's weight is the sampler's times its own."""
    batch = {name: x[indices] for name, x in data.items()}
    return batch | {"weight": weights * data["weight"][indices]}


def train_and_score(
    spec: AuditSpec, canaries: Canaries, included: np.ndarray, sigma: float
) -> dict[str, np.ndarray]:
    """Trains on the canaries' training set and returns the canaries' scores {name: [m]}."""
    data = training_set(canaries, included)
    mechanism = build_mechanism(spec, sigma)
    loss_fn, state, step, mesh = build_training(spec, mechanism, data["image"][:1])
    score = make_scorer(spec, loss_fn, mechanism, sigma)
    inside, outside = jax.device_put((canaries.inside, canaries.outside))
    totals = {}
    for t in range(spec.steps):
        batches = {"private": _rows(data, *mechanism.private_indices(t))}
        in_public = np.zeros(spec.canaries, np.float32)
        if spec.coupled:  # the flawed design: S itself as the public batch
            batches["public"] = public_view(batches["private"])
        elif mechanism.mode == "maskdp":
            indices, weights = mechanism.public_indices(t)
            batches["public"] = public_view(_rows(data, indices, weights))
            np.add.at(in_public, indices, weights)
        before = jax.tree.map(jnp.copy, state.params)
        state, _ = step(state, jax.device_put(batches, parallel.batch_sharding(mesh)))
        for name, value in score(before, state.params, inside, outside, in_public).items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


def audit(spec: AuditSpec) -> dict:
    """Trains one model on random canaries and returns the audit's result: the schedule, the
    claimed ε (PLD accountant), the lower bound ε̂ at ``spec.confidence`` with its guesses (k, r,
    v, precision) and the wall time."""
    start = time.perf_counter()
    canaries = make_canaries(
        spec.placement,
        spec.canaries,
        size=spec.image_size,
        num_classes=spec.num_classes,
        seed=spec.seed,
    )
    included = draw_membership(spec.canaries, spec.seed)
    sigma = noise_multiplier(spec)
    scores = train_and_score(spec, canaries, included, sigma)
    found = bound_from_scores(scores, included, delta=spec.delta, confidence=spec.confidence)
    claimed = accounting.epsilon(
        noise_multiplier=sigma, sampling_rate=spec.sampling_rate, steps=spec.steps, delta=spec.delta
    )
    return {
        "mode": spec.mode,
        "placement": spec.placement,
        "seed": spec.seed,
        "canaries": spec.canaries,
        "steps": spec.steps,
        "sampling_rate": spec.sampling_rate,
        "noise_multiplier": sigma,
        "epsilon": claimed,
        "delta": spec.delta,
        "leak_expected": spec.leak_expected,
        **found,
        "seconds": time.perf_counter() - start,
    }


# (mode, placement, noise off) of the standard audits: two that must stay within ε, and three
# self-tests that must find the leak they plant.
SUITE = (
    ("dpsgd", "example", False),
    ("dpsgd", "example", True),
    ("maskdp", "sensitive", False),
    ("maskdp", "public", False),
    ("maskdp-coupled", "sensitive", False),
)


def audit_suite(epsilon: float = 2.0, seeds=(0,), **overrides) -> list[dict]:
    """The audits of ``SUITE``, for each seed: DP-SGD at ``epsilon`` and with the noise off;
    MaskDP with canaries in sensitive pixels, and in public pixels, at ``epsilon``; the coupled
    MaskDP design at ``epsilon``. Expected (``check``): ε̂ ≤ ε for the first and third, a leak
    for the others. ``overrides`` set other ``AuditSpec`` fields."""
    return [
        audit(
            AuditSpec(
                mode=mode,
                placement=placement,
                epsilon=math.inf if noise_off else epsilon,
                seed=seed,
                **overrides,
            )
        )
        for seed in seeds
        for mode, placement, noise_off in SUITE
    ]


def passed(result: dict) -> bool:
    """Whether the audit found what it should: ε̂ ≤ ε where the claim covers the canaries; where
    it does not (noise off, public pixels, the coupled design), ε̂ above the claimed ε and above
    ``LEAK_FOUND``."""
    found, claimed = result["epsilon_lower_bound"], result["epsilon"]
    if result["leak_expected"]:
        return found > LEAK_FOUND and (math.isinf(claimed) or found > claimed)
    return found <= claimed


def check(result: dict) -> str:
    """The table's label of :func:`passed`."""
    if result["leak_expected"]:
        return "pass (leak found)" if passed(result) else "FAIL: leak missed"
    return "pass" if passed(result) else "FAIL: ε̂ > ε"


def format_table(results: list[dict]) -> str:
    """A Markdown table of audit results, one row each."""
    lines = [
        "| mode | canaries in | seed | q | steps | σ | ε (claimed) | ε̂ (lower bound) | score | r | "
        "v | precision | check | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        lines.append(
            f"| {res['mode']} | {res['placement']} | {res['seed']} | {res['sampling_rate']:g} | "
            f"{res['steps']} | {res['noise_multiplier']:.3f} | {res['epsilon']:.2f} | "
            f"{res['epsilon_lower_bound']:.2f} ({res['confidence']:.0%}) | {res['score']} | "
            f"{res['r']} | {res['v']} | {res['precision']:.3f} | {check(res)} | "
            f"{res['seconds']:.1f} |"
        )
    return "\n".join(lines)
