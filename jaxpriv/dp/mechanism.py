"""jaxpriv's DP mechanisms as one value: ``DpMechanism`` owns C, σ, B, the samplers and the key.

Formal guarantees
-----------------
Notation: N examples; Poisson sampling at rate q = B/N (each example independently, from a
secret seed); clipping norm C; noise multiplier σ; ``clip(v, C) = v · min(1, C/‖v‖)`` with ‖·‖
the L2 norm over the whole parameter pytree. ``g_i`` is example i's gradient on its full view,
``p_i`` on its public view (its sensitive pixels removed: token models drop every token that
touches one, convolutional models see a fixed public fill).

**DP-SGD** (``mode="dpsgd"``) releases, at every step, ĝ = (Σ_{i∈S} clip(g_i, C) + N(0, σ²C²I)) / B.
*Protected*: each whole record (pixels, label, mask). *Adjacency*: add or remove one record
(``neighboring="replace_one"``: replace one; sensitivity 2C, accounted as such).

**MaskDP** (``mode="maskdp"``) releases ĝ = (Σ_{j∈S'} clip(p_j, C_pub) + Σ_{i∈S} clip(g_i − p_i, C)
+ N(0, σ²C²I)) / B, where the private batch S is Poisson-sampled from the secret seed and the
public batch S' (B examples of a per-epoch shuffle, public seed) is drawn independently of S.
*Protected*: the sensitive pixels of each record. *Adjacency*: D' equals D except that one
record's sensitive content is removed (the record is then its own public view); its labels,
mask and public pixels are the same. Removal makes that record's residual g − p zero, so the
private sums differ by clip(r_i, C), of norm ≤ C; the public sum has the same distribution
under D and D' (the public views are equal and S' does not depend on S). Replacing one
record's sensitive content is two such steps (sensitivity 2C, ``neighboring="replace_one"``).
*Not protected*: labels, the location of the sensitive region (the mask) and the public pixels;
when a detector run on the real pixels made the mask, the guarantee holds given its output.
(An earlier design summed clip(p_i, C_pub) over S itself: p_i, un-noised, shows whether i was
sampled and voids the amplification by subsampling. ``jaxpriv audit``'s ``maskdp-coupled``
self-test shows that leak.)

*Accounting* (both modes): every step is ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``,
self-composed over the steps run, composed by dp-accounting's PLD or RDP accountant
(``jaxpriv.dp.accounting``); ``epsilon(steps)`` is the ε of ``steps`` steps at ``delta``.
*Released*: the parameters after every step (all of it is post-processing of ĝ). Training
losses on the private batch are not covered (``train.log_private_loss``).
*Privacy unit*: one record (an image or a clip). A person in many records is protected only
by group privacy.
*Secrets*: ``secret`` (≥ 128 bits from the OS) seeds the private sampler and the noise key;
anyone who knows it can replay both. It reaches jitted code only as data (``noise_key_data``).
"""

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpriv.dp import accounting, clipping, noise, sampling

PyTree = Any
MODES = ("none", "dpsgd", "maskdp")


@dataclasses.dataclass(frozen=True)
class DpMechanism:
    """One training run's gradient mechanism (see the module docstring for the guarantee).

    ``batch_size`` is B: the expected size of the Poisson batch (the sum's divisor, a public
    constant) and the size of MaskDP's public batch. ``capacity`` and ``public_capacity`` are the
    padded (fixed) shapes of the private and public batches. ``public_clip_norm`` None is ∞.
    ``mode="none"`` is non-private training (σ = 0), with ``sampling`` "poisson" or "shuffle".
    ``clipping_method`` is how the per-example clipped sums are computed, "vmap" or "ghost" (same
    values; see ``jaxpriv.dp.clipping``).
    """

    mode: str
    clip_norm: float
    noise_multiplier: float
    dataset_size: int
    batch_size: int
    capacity: int
    public_capacity: int = 0
    public_clip_norm: float | None = None
    sampling: str = "poisson"
    delta: float = 1e-5
    accountant: str = "pld"
    neighboring: str = "add_remove"
    public_seed: int = 0
    clipping_method: str = "vmap"
    secret: int = dataclasses.field(default=0, repr=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown dp mode {self.mode!r}; choose one of {MODES}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")
        if not 0 <= self.noise_multiplier < math.inf:
            raise ValueError(
                f"noise_multiplier must be finite and ≥ 0, got {self.noise_multiplier}"
            )
        if not self.private and self.noise_multiplier:
            raise ValueError("non-private training (mode 'none') adds no noise: σ must be 0")
        if self.private and self.sampling != "poisson":
            raise ValueError(
                f"{self.mode} is accounted for Poisson sampling only, got sampling={self.sampling!r}"
            )
        if not 1 <= self.batch_size <= self.dataset_size or self.capacity < 1:
            raise ValueError(
                f"need 1 ≤ batch_size ≤ dataset_size and capacity ≥ 1, got {self.batch_size}, "
                f"{self.dataset_size}, {self.capacity}"
            )
        if self.mode == "maskdp" and self.public_capacity < self.batch_size:
            raise ValueError(
                f"MaskDP's public batch of {self.batch_size} needs public_capacity ≥ it, "
                f"got {self.public_capacity}"
            )
        if self.public_clip_norm is not None and not self.public_clip_norm > 0:
            raise ValueError(
                f"public_clip_norm must be > 0 or None (∞), got {self.public_clip_norm}"
            )
        if self.clipping_method not in clipping.METHODS:
            raise ValueError(
                f"unknown clipping method {self.clipping_method!r}; choose one of {clipping.METHODS}"
            )
        if self.secret < 0:
            raise ValueError("secret must be a non-negative integer")

    @property
    def private(self) -> bool:
        return self.mode != "none"

    @property
    def sampling_rate(self) -> float:
        """q = B / N."""
        return self.batch_size / self.dataset_size

    # Samplers: pure functions of (seed, step), so any step's batches can be recomputed.
    def private_indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The private batch S of ``step``: (indices [capacity], weights) from the secret."""
        if self.sampling == "poisson":
            return sampling.poisson_batch_indices(
                self.secret, step, self.dataset_size, self.sampling_rate, self.capacity
            )
        return sampling.shuffled_batch_indices(
            self.secret, step, self.dataset_size, self.batch_size, self.capacity
        )

    def public_indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """MaskDP's public batch S' of ``step``: B examples of a per-epoch shuffle drawn from
        the public seed, independently of S, padded to ``public_capacity``."""
        if self.mode != "maskdp":
            raise ValueError(f"mode {self.mode!r} has no public batch")
        return sampling.shuffled_batch_indices(
            self.public_seed, step, self.dataset_size, self.batch_size, self.public_capacity
        )

    def batch_names(self) -> tuple[str, ...]:
        """The batches each step takes: ("private",) or, for MaskDP, ("private", "public")."""
        return ("private", "public") if self.mode == "maskdp" else ("private",)

    def noise_key_data(self) -> np.ndarray:
        """The noise key as data (uint32[4]) for the train state; see ``jaxpriv.dp.noise``."""
        return noise.noise_key_data(self.secret)

    def epsilon(self, steps: int) -> float:
        """ε at ``delta`` after ``steps`` steps (∞ without noise, 0 for no step)."""
        if not self.private:
            return math.inf
        return accounting.epsilon(
            noise_multiplier=self.noise_multiplier,
            sampling_rate=self.sampling_rate,
            steps=int(steps),
            delta=self.delta,
            accountant=self.accountant,
            neighboring=self.neighboring,
        )

    def gradient_sums(
        self,
        loss_fn: clipping.LossFn,
        params: PyTree,
        batches: dict[str, dict],
        *,
        microbatch_size: int,
        unroll: bool = False,
    ) -> tuple[dict[str, PyTree], dict[str, dict]]:
        """The pre-noise sums of ``batches`` (on one device; the caller adds them over devices)
        and their summed statistics, keyed like ``batch_names()``: "private" holds
        Σ_{i∈S} clip(·, C) (plain gradients for mode "none"), "public" Σ_{j∈S'} clip(p_j, C_pub).
        """
        if self.private:
            private_sum = functools.partial(
                clipping.private_microbatch_sum,
                loss_fn,
                clip_norm=self.clip_norm,
                maskdp=self.mode == "maskdp",
                method=self.clipping_method,
            )
        else:
            private_sum = functools.partial(clipping.nonprivate_microbatch_sum, loss_fn)
        sums = {"private": (private_sum, batches["private"])}
        if self.mode == "maskdp":
            public_sum = functools.partial(
                clipping.public_microbatch_sum,
                loss_fn,
                clip_norm=self.public_clip_norm,
                method=self.clipping_method,
            )
            sums["public"] = (public_sum, batches["public"])
        results = {
            name: clipping.accumulate(fn, params, batch, microbatch_size, unroll=unroll)
            for name, (fn, batch) in sums.items()
        }
        return (
            {name: total for name, (total, _) in results.items()},
            {name: stats for name, (_, stats) in results.items()},
        )

    def privatize(self, sums: dict[str, PyTree], key_data: jax.Array, step: jax.Array) -> PyTree:
        """ĝ = (public sum + private sum + N(0, σ²C²I)) / B from the global sums: the noise is
        drawn once, from ``step``'s key, for the whole batch and every device."""
        total = sums["private"]
        if self.private:
            key = noise.step_key(key_data, step)
            stddev = self.noise_multiplier * self.clip_norm
            total = jax.tree.map(jnp.add, total, noise.gaussian_noise(key, total, stddev))
        if "public" in sums:
            total = jax.tree.map(jnp.add, total, sums["public"])
        return jax.tree.map(lambda g: g / self.batch_size, total)
