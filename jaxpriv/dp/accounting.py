"""Privacy accounting: ε spent by a DP-SGD / MaskDP schedule, σ calibrated to a budget.

Each training step is a subsampled Gaussian mechanism: a sum of per-example
contributions of norm ≤ C plus N(0, σ²C²). Steps are dp-accounting events,
self-composed over the schedule and composed by its RDP or PLD accountant.

The event per step, for each option (what dp-accounting 0.6 supports):

* ``sampling="poisson"``, add/remove: ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``,
  with either accountant.
* ``sampling="poisson"``, replace-one: PLD composes the same event under
  ``REPLACE_ONE`` (exact); ``RdpAccountant`` rejects Poisson events under
  ``REPLACE_ONE``, so RDP uses ``PoissonSampledDpEvent(q, GaussianDpEvent(σ/2))``
  under add/remove.
* ``sampling="shuffle"`` (fixed-size batches of qN out of N), replace-one only, RDP
  only: ``SampledWithoutReplacementDpEvent(N, qN, GaussianDpEvent(σ/2))`` under
  ``REPLACE_ONE``.

Notes:

* Fixed-size batches: dp-accounting accounts ``SampledWithoutReplacementDpEvent``
  only with ``RdpAccountant`` under ``REPLACE_ONE`` (the dataset size is public,
  so add/remove is undefined); ``PLDAccountant`` does not support it. Other
  combinations raise ``ValueError``. The event has every step draw an
  independent uniformly random batch of qN examples; shuffling once per epoch
  and cutting disjoint batches is a different mechanism, not covered.
* Replacing one example's (sensitive) content moves the sum by ≤ 2C.
  ``PLDAccountant`` measures σ against the per-example bound C and doubles the
  sensitivity itself under ``REPLACE_ONE``; ``RdpAccountant`` measures σ against
  the distance between neighbouring sums, hence σ/2. The RDP Poisson fallback
  (σ/2 under add/remove) is valid: the replaced example is sampled with
  probability q and then moves the sum by ≤ 2C, which add/remove with
  sensitivity 2C dominates (Balle et al. 2018, advanced joint convexity). It
  is much looser than PLD's exact replace-one analysis: prefer PLD there.
* Both accountants give upper bounds on ε. PLD discretizes pessimistically with
  interval 1e-3: within ~1e-3 of dp-accounting's default 1e-4 on typical
  schedules and several times faster. RDP is usually looser than PLD.
"""

import functools
import math
from collections.abc import Callable

from dp_accounting import dp_event, mechanism_calibration, pld, privacy_accountant, rdp

ACCOUNTANTS = ("pld", "rdp")
SAMPLINGS = ("poisson", "shuffle")
NEIGHBORINGS = ("add_remove", "replace_one")
PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-3
MIN_NOISE_MULTIPLIER = 2.0**-3  # calibration searches σ in [1/8, 1024]
MAX_NOISE_MULTIPLIER = 2.0**10
MAX_STEPS = 2**40  # max_steps stops searching here

_Relation = privacy_accountant.NeighboringRelation


class UnreachableBudgetError(ValueError):
    """No noise multiplier in range meets the (ε, δ) target for the schedule."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _check_sampling(sampling: str, dataset_size: int | None, neighboring: str) -> None:
    _check_choice("sampling", sampling, SAMPLINGS)
    _check_choice("neighboring", neighboring, NEIGHBORINGS)
    if sampling != "shuffle":
        return
    if dataset_size is None or int(dataset_size) != dataset_size or dataset_size < 1:
        raise ValueError(
            "sampling='shuffle' (fixed-size batches) needs dataset_size, a positive "
            f"integer, got {dataset_size!r}"
        )
    if neighboring != "replace_one":
        raise ValueError(
            "sampling='shuffle' (fixed-size batches, sampling without replacement) is "
            "only accounted under neighboring='replace_one': the dataset size is public"
        )


def _check_noise(noise_multiplier: float) -> None:
    if not 0 <= noise_multiplier < math.inf:
        raise ValueError(f"noise_multiplier must be finite and ≥ 0, got {noise_multiplier}")


def _check_schedule(sampling_rate: float, steps: int) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0, got {steps}")


def _batch_size(sampling_rate: float, dataset_size: int) -> int:
    batch_size = round(sampling_rate * dataset_size)
    if batch_size < 1 or not math.isclose(batch_size, sampling_rate * dataset_size, rel_tol=1e-9):
        raise ValueError(
            f"sampling='shuffle' needs sampling_rate * dataset_size to be a whole batch "
            f"size ≥ 1, got {sampling_rate} * {dataset_size}"
        )
    return batch_size


def _poisson_gaussian(noise_multiplier: float, sampling_rate: float) -> dp_event.DpEvent:
    return dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier))


def _scheme(
    accountant: str, sampling: str, dataset_size: int | None, neighboring: str
) -> tuple[
    Callable[[], privacy_accountant.PrivacyAccountant], Callable[[float, float], dp_event.DpEvent]
]:
    """(fresh accountant, step event of (σ, q)) for the options listed in the module docstring."""
    _check_choice("accountant", accountant, ACCOUNTANTS)
    _check_sampling(sampling, dataset_size, neighboring)
    if sampling == "shuffle":
        if accountant == "pld":
            raise ValueError(
                "dp-accounting's PLDAccountant does not support "
                "SampledWithoutReplacementDpEvent: use accountant='rdp' with "
                "sampling='shuffle'"
            )
        return (
            lambda: rdp.RdpAccountant(neighboring_relation=_Relation.REPLACE_ONE),
            lambda sigma, q: dp_event.SampledWithoutReplacementDpEvent(
                dataset_size, _batch_size(q, dataset_size), dp_event.GaussianDpEvent(sigma / 2)
            ),
        )
    if accountant == "rdp":
        if neighboring == "replace_one":
            return rdp.RdpAccountant, lambda sigma, q: _poisson_gaussian(sigma / 2, q)
        return rdp.RdpAccountant, _poisson_gaussian
    relation = (
        _Relation.REPLACE_ONE if neighboring == "replace_one" else _Relation.ADD_OR_REMOVE_ONE
    )
    return (
        lambda: pld.PLDAccountant(relation, PLD_VALUE_DISCRETIZATION_INTERVAL),
        _poisson_gaussian,
    )


@functools.cache  # pure: sweeps ask for the same schedules many times
def epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    sampling: str = "poisson",
    dataset_size: int | None = None,
    neighboring: str = "add_remove",
) -> float:
    """ε at ``delta`` after ``steps`` steps of noise ``noise_multiplier`` at rate ``sampling_rate``.

    ``dataset_size`` is used by ``sampling="shuffle"`` only (batch size = qN).
    ``noise_multiplier=0`` gives ∞, ``steps=0`` gives 0.
    """
    _check_noise(noise_multiplier)
    _check_schedule(sampling_rate, steps)
    make_accountant, step_event = _scheme(accountant, sampling, dataset_size, neighboring)
    _check_delta(delta)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    event = dp_event.SelfComposedDpEvent(step_event(noise_multiplier, sampling_rate), steps)
    return float(make_accountant().compose(event).get_epsilon(delta))


@functools.cache
def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
    sampling: str = "poisson",
    dataset_size: int | None = None,
    neighboring: str = "add_remove",
    tol: float = 1e-4,
) -> float:
    """The smallest noise multiplier (within ``tol``) whose ε at ``delta`` is ≤ ``target_epsilon``.

    Brackets σ between powers of two, then ``mechanism_calibration`` refines it
    (its result never exceeds the target). Returns ``MIN_NOISE_MULTIPLIER`` when
    even that meets the target and 0 when ``steps == 0``.

    Raises:
      UnreachableBudgetError: ``target_epsilon ≤ 0``, ``delta`` not in (0, 1), or
        σ would exceed ``MAX_NOISE_MULTIPLIER``.
    """
    _check_schedule(sampling_rate, steps)
    make_accountant, step_event = _scheme(accountant, sampling, dataset_size, neighboring)
    schedule = (
        f"target ε={target_epsilon} at δ={delta} with sampling_rate={sampling_rate}, "
        f"steps={steps} ({accountant}, {sampling}, {neighboring})"
    )
    if not (target_epsilon > 0 and 0 < delta < 1):
        raise UnreachableBudgetError(
            f"{schedule} is unreachable: need epsilon > 0 and delta in "
            "(0, 1); use a larger epsilon or delta"
        )
    if steps == 0:
        return 0.0

    def event(sigma: float) -> dp_event.DpEvent:
        return dp_event.SelfComposedDpEvent(step_event(sigma, sampling_rate), steps)

    def within_budget(sigma: float) -> bool:
        return make_accountant().compose(event(sigma)).get_epsilon(delta) <= target_epsilon

    high = 1.0
    while not within_budget(high):
        if high >= MAX_NOISE_MULTIPLIER:
            raise UnreachableBudgetError(
                f"{schedule} needs noise_multiplier > {MAX_NOISE_MULTIPLIER}: train for fewer steps, "
                "use a smaller sampling rate, or allow a larger epsilon or delta"
            )
        high *= 2
    low = high / 2
    while within_budget(low):
        if low <= MIN_NOISE_MULTIPLIER:
            return MIN_NOISE_MULTIPLIER
        high, low = low, low / 2
    return float(
        mechanism_calibration.calibrate_dp_mechanism(
            make_accountant,
            event,
            target_epsilon,
            delta,
            mechanism_calibration.ExplicitBracketInterval(low, high),
            tol=tol,
        )
    )


def max_steps(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    target_epsilon: float,
    delta: float,
    accountant: str = "pld",
    sampling: str = "poisson",
    dataset_size: int | None = None,
    neighboring: str = "add_remove",
) -> int:
    """The most steps whose ε at ``delta`` stays ≤ ``target_epsilon``; 0 if one step exceeds it.

    Doubles, then bisects on ``epsilon()``; stops at ``MAX_STEPS``.
    """
    if not target_epsilon >= 0:
        raise ValueError(f"target_epsilon must be ≥ 0, got {target_epsilon}")

    def within_budget(steps: int) -> bool:
        return (
            epsilon(
                noise_multiplier=noise_multiplier,
                sampling_rate=sampling_rate,
                steps=steps,
                delta=delta,
                accountant=accountant,
                sampling=sampling,
                dataset_size=dataset_size,
                neighboring=neighboring,
            )
            <= target_epsilon
        )

    if not within_budget(1):
        return 0
    low, high = 1, 2  # within_budget(low) always; not within_budget(high) once doubling stops
    while within_budget(high):
        if high >= MAX_STEPS:
            return MAX_STEPS
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if within_budget(middle) else (low, middle)
    return low
