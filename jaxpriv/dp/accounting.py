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

Bounded PLD: a PLD's grid spans the privacy losses of the whole schedule, ~1/(2σ²)
per sampled step, so small σ would need petabytes at interval 1e-3. ``account``
estimates that span first (dp-accounting's loss bounds and Chernoff truncation, on a
coarse grid) and widens the interval so the composition keeps at most
``PLD_MAX_GRID_POINTS`` points: pessimistic rounding on a coarser grid is still an
upper bound, and close to the fine one. When that needs an interval above
``PLD_MAX_INTERVAL`` (e.g. σ = 1e-4 at q = 0.01, 100 steps), ε is RDP's; on a widened
grid, the smaller of PLD's and RDP's. ``account`` says which accountant gave ε, with
a note; ``epsilon`` returns ε alone and warns ``AccountingFallbackWarning``;
``calibrate`` returns σ with the ε it spends, which is below the target when the
search floor ``MIN_NOISE_MULTIPLIER`` already meets it. dp-accounting's log warnings
(absl: RDP orders left out) are dropped during these calls.
"""

import contextlib
import contextvars
import dataclasses
import functools
import logging
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterator

import dp_accounting
import numpy as np
from dp_accounting import dp_event, pld, privacy_accountant, rdp
from dp_accounting.pld import common as pld_common
from dp_accounting.pld import privacy_loss_distribution, privacy_loss_mechanism
from scipy import optimize

ACCOUNTANTS = ("pld", "rdp")
SAMPLINGS = ("poisson", "shuffle")
NEIGHBORINGS = ("add_remove", "replace_one")
PLD_VALUE_DISCRETIZATION_INTERVAL = 1e-3
PLD_MAX_GRID_POINTS = 2**21  # most points of a composed PLD (its FFT takes ~64 bytes a point)
PLD_MAX_INTERVAL = 10.0  # coarsest PLD grid; schedules that need a coarser one use RDP
MIN_ACCOUNTED_NOISE_MULTIPLIER = 1e-100  # below, ε = ∞ (dp-accounting's RDP says 0 at 1e-152)
MIN_NOISE_MULTIPLIER = 2.0**-3  # calibration searches σ in [1/8, 1024]
MAX_NOISE_MULTIPLIER = 2.0**10
MAX_STEPS = 2**40  # max_steps stops searching here

_Relation = privacy_accountant.NeighboringRelation
_Adjacency = privacy_loss_mechanism.AdjacencyType
_PLD_TAIL_MASS_TRUNCATION = 1e-15  # what dp-accounting's self-composition truncates
_PLD_ESTIMATE_POINTS = 4096  # grid of the PLD that sizes the real one
_PLD_ESTIMATE_MARGIN = 1.25  # slack for the estimate's own rounding
_PLD_SPARSE_POINTS = 1000  # dp-accounting keeps PMFs of at most this many points sparse
_PLD_SPARSE_MAX_BITS = 2**20  # points**steps of up to this size is quick to compute
_COARSENED = "PLD grid coarsened to bound its memory; ε stays a pessimistic upper bound"
_RDP_FALLBACK = "ε is the RDP accountant's (a valid, usually looser upper bound), not PLD's"
_INFINITE = "ε = ∞ reported, as dp-accounting cannot compute it"


class UnreachableBudgetError(ValueError):
    """No noise multiplier in range meets the (ε, δ) target for the schedule."""


class AccountingFallbackWarning(UserWarning):
    """``epsilon()`` coarsened the PLD grid or answered with the RDP accountant."""


@dataclasses.dataclass(frozen=True)
class Accounting:
    """What ``account()`` found: ε, the accountant that gave it and why, if not the one asked."""

    epsilon: float
    accountant: str  # "pld" or "rdp"
    note: str = ""  # "" when computed as asked (PLD on its default grid, or RDP)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What ``calibrate()`` found: σ and the ε it really spends (≤ the target)."""

    noise_multiplier: float
    epsilon: float  # spent at noise_multiplier; below the target at the search floor
    accountant: str
    note: str = ""


_QUIET = contextvars.ContextVar("jaxpriv_quiet_dp_accounting", default=False)
_DP_ACCOUNTING_DIR = os.path.dirname(os.path.abspath(dp_accounting.__file__)) + os.sep


class _DropDpAccountingRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            _QUIET.get() and os.path.abspath(record.pathname).startswith(_DP_ACCOUNTING_DIR)
        )


_LOG_FILTER = _DropDpAccountingRecords()


@contextlib.contextmanager
def quiet_dp_accounting() -> Iterator[None]:
    """Drops the log records that dp-accounting's own code emits inside this context (this
    thread/task only): absl warnings from ``RdpAccountant`` (orders whose series do not
    converge are left out, which keeps ε an upper bound) and the PLD module's root-logger
    warnings. Other records pass. NumPy floating-point warnings are off in the context."""
    for logger in (logging.getLogger("absl"), logging.getLogger()):
        logger.addFilter(_LOG_FILTER)  # idempotent; inert outside the context
    token = _QUIET.set(True)
    try:
        with np.errstate(all="ignore"):  # overflow to ∞ ε is pessimistic; NaN is checked
            yield
    finally:
        _QUIET.reset(token)


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
        raise ValueError(
            f"noise_multiplier must be finite and ≥ 0 (0: no noise, ε = ∞), got {noise_multiplier}"
        )


def _check_schedule(sampling_rate: float, steps: int) -> None:
    if not 0 < sampling_rate <= 1:
        raise ValueError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    whole = isinstance(steps, numbers.Integral) or (
        isinstance(steps, numbers.Real) and math.isfinite(steps) and float(steps).is_integer()
    )
    if not whole or steps < 0:
        raise ValueError(f"steps must be an integer ≥ 0, got {steps}")


def _batch_size(sampling_rate: float, dataset_size: int) -> int:
    batch_size = round(sampling_rate * dataset_size)
    if batch_size < 1 or not math.isclose(batch_size, sampling_rate * dataset_size, rel_tol=1e-9):
        raise ValueError(
            f"sampling='shuffle' needs sampling_rate * dataset_size to be a whole batch "
            f"size ≥ 1, got {sampling_rate} * {dataset_size}"
        )
    return batch_size


def _relation(neighboring: str) -> privacy_accountant.NeighboringRelation:
    return _Relation.REPLACE_ONE if neighboring == "replace_one" else _Relation.ADD_OR_REMOVE_ONE


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
    return (
        lambda: pld.PLDAccountant(_relation(neighboring), PLD_VALUE_DISCRETIZATION_INTERVAL),
        _poisson_gaussian,
    )


def _composed_span(
    noise_multiplier: float, sampling_rate: float, steps: int, neighboring: str, width: float
) -> float:
    """The privacy losses (in ε units) that dp-accounting's self-composition keeps, by its own
    Chernoff truncation bounds on a ``_PLD_ESTIMATE_POINTS`` grid (they hardly depend on
    the grid); ``steps × width`` (no truncation) if its internals differ from 0.6's."""
    coarse = width / _PLD_ESTIMATE_POINTS
    span = width
    try:
        estimate = privacy_loss_distribution.from_gaussian_mechanism(
            noise_multiplier,
            value_discretization_interval=coarse,
            sampling_prob=sampling_rate,
            neighboring_relation=_relation(neighboring),
        )
        for pmf in (estimate._pmf_remove, estimate._pmf_add):
            low, high = pld_common.compute_self_convolve_bounds(
                pmf.to_dense_pmf()._probs, steps, _PLD_TAIL_MASS_TRUNCATION
            )
            span = max(span, (high - low + 2) * coarse)
    except (AttributeError, ArithmeticError, ValueError):
        span = steps * width
    return span


def _pld_interval(
    noise_multiplier: float, sampling_rate: float, steps: int, neighboring: str
) -> float | None:
    """The PLD grid interval for ``steps`` Poisson-subsampled Gaussian steps: the default, or
    one that keeps the composed PLD within ``PLD_MAX_GRID_POINTS``; None when that would
    need an interval above ``PLD_MAX_INTERVAL``.

    A step's privacy losses span ε_upper - ε_lower of dp-accounting's connect-the-dots
    bounds (no allocation), the composition ``_composed_span``; points = span / interval.
    """
    adjacencies = (
        (_Adjacency.REPLACE,)
        if neighboring == "replace_one"
        else (_Adjacency.REMOVE, _Adjacency.ADD)
    )
    bounds = [
        privacy_loss_mechanism.GaussianPrivacyLoss(
            noise_multiplier, sampling_prob=sampling_rate, adjacency_type=adjacency
        ).connect_dots_bounds()
        for adjacency in adjacencies
    ]
    width = max(b.epsilon_upper - b.epsilon_lower for b in bounds)
    if not width <= PLD_MAX_GRID_POINTS * PLD_MAX_INTERVAL:  # one step is already too large
        return None
    span = None

    def fits(interval: float) -> bool:
        nonlocal span
        if steps * (width / interval + 2) <= PLD_MAX_GRID_POINTS:  # even without truncation
            return True
        if span is None:
            span = _composed_span(noise_multiplier, sampling_rate, steps, neighboring, width)
        return _PLD_ESTIMATE_MARGIN * span / interval <= PLD_MAX_GRID_POINTS

    interval = PLD_VALUE_DISCRETIZATION_INTERVAL
    if not fits(interval):
        interval = _PLD_ESTIMATE_MARGIN * span / PLD_MAX_GRID_POINTS
    # dp-accounting self-composes a step of ≤ 1000 points "sparsely", and first computes
    # points**steps exactly: hours for millions of steps. A finer grid makes it dense.
    points = width / interval + 2
    if points <= _PLD_SPARSE_POINTS and steps * math.log2(points) > _PLD_SPARSE_MAX_BITS:
        interval = width / (2 * _PLD_SPARSE_POINTS)
        if not (interval > 0 and fits(interval)):
            return None
    return interval if interval <= PLD_MAX_INTERVAL else None


def _pld_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    neighboring: str,
    interval: float,
) -> float:
    accountant = pld.PLDAccountant(_relation(neighboring), interval)
    event = dp_event.SelfComposedDpEvent(_poisson_gaussian(noise_multiplier, sampling_rate), steps)
    return float(accountant.compose(event).get_epsilon(delta))


def _account_pld(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, neighboring: str
) -> Accounting:
    """PLD on the grid of ``_pld_interval``; RDP when there is none, PLD's ε is NaN, or a
    coarsened grid gives more than RDP."""
    schedule = (noise_multiplier, sampling_rate, steps, delta, neighboring)
    try:
        interval = _pld_interval(noise_multiplier, sampling_rate, steps, neighboring)
        pld_epsilon = math.nan if interval is None else _pld_epsilon(*schedule, interval)
        failure = ""
    except (ArithmeticError, ValueError) as error:
        interval, pld_epsilon, failure = math.nan, math.nan, f"{type(error).__name__}: {error}"
    if interval == PLD_VALUE_DISCRETIZATION_INTERVAL and not math.isnan(pld_epsilon):
        return Accounting(pld_epsilon, "pld")
    rdp_epsilon = account(
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        steps=steps,
        delta=delta,
        accountant="rdp",
        neighboring=neighboring,
    ).epsilon
    if interval is None:
        return Accounting(
            rdp_epsilon,
            "rdp",
            f"{_RDP_FALLBACK}: at σ={noise_multiplier:g}, q={sampling_rate:g}, {steps} steps "
            f"the PLD needs more than {PLD_MAX_GRID_POINTS} points even at interval "
            f"{PLD_MAX_INTERVAL:g}",
        )
    if math.isnan(pld_epsilon):
        failure = failure or f"ε is not a number at interval {interval:.3g}"
        return Accounting(rdp_epsilon, "rdp", f"{_RDP_FALLBACK}: PLD failed ({failure})")
    grid = f"interval {interval:.3g} instead of {PLD_VALUE_DISCRETIZATION_INTERVAL:g}"
    if rdp_epsilon < pld_epsilon:
        return Accounting(
            rdp_epsilon,
            "rdp",
            f"{_RDP_FALLBACK}: it is below PLD's ε={pld_epsilon:.6g} on a grid coarsened to {grid}",
        )
    return Accounting(
        pld_epsilon, "pld", f"{_COARSENED}: {grid} keeps it within {PLD_MAX_GRID_POINTS} points"
    )


@functools.cache  # pure: sweeps ask for the same schedules many times
def account(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    sampling: str = "poisson",
    dataset_size: int | None = None,
    neighboring: str = "add_remove",
) -> Accounting:
    """ε at ``delta`` after ``steps`` steps of noise ``noise_multiplier`` at rate
    ``sampling_rate``: an upper bound computed in bounded memory and time, the accountant
    that gave it, and a note ("" when computed as asked) that starts with what happened.

    PLD's grid is coarsened to keep at most ``PLD_MAX_GRID_POINTS`` points (pessimistic
    rounding: still an upper bound); ε is RDP's when even ``PLD_MAX_INTERVAL`` is too fine,
    or when RDP's is smaller than a coarsened PLD's. ε = ∞ when dp-accounting cannot
    compute it (σ < ``MIN_ACCOUNTED_NOISE_MULTIPLIER``, where its RDP would say 0, or
    an arithmetic error). dp-accounting's log warnings are dropped.

    ``dataset_size`` is used by ``sampling="shuffle"`` only (batch size = qN).
    ``noise_multiplier=0`` gives ∞, ``steps=0`` gives 0.
    """
    _check_noise(noise_multiplier)
    _check_schedule(sampling_rate, steps)
    make_accountant, step_event = _scheme(accountant, sampling, dataset_size, neighboring)
    _check_delta(delta)
    if steps == 0:
        return Accounting(0.0, accountant)
    if noise_multiplier == 0:
        return Accounting(math.inf, accountant)
    if noise_multiplier < MIN_ACCOUNTED_NOISE_MULTIPLIER:
        return Accounting(
            math.inf,
            accountant,
            f"{_INFINITE}: σ={noise_multiplier:g} is below {MIN_ACCOUNTED_NOISE_MULTIPLIER:g}, "
            "where its arithmetic overflows",
        )
    steps = int(steps)
    event = dp_event.SelfComposedDpEvent(step_event(noise_multiplier, sampling_rate), steps)
    with quiet_dp_accounting():
        try:
            if accountant == "rdp":
                return Accounting(float(make_accountant().compose(event).get_epsilon(delta)), "rdp")
            return _account_pld(noise_multiplier, sampling_rate, steps, delta, neighboring)
        except (ArithmeticError, ValueError) as error:  # the arguments are checked above
            return Accounting(math.inf, accountant, f"{_INFINITE}: {type(error).__name__}: {error}")


@functools.cache
def epsilon(**schedule) -> float:
    """``account(**schedule).epsilon`` (the same keyword arguments); warns
    ``AccountingFallbackWarning`` (once per schedule) when ``account`` notes something: a
    coarsened PLD grid, an RDP answer, or ε = ∞."""
    result = account(**schedule)
    if result.note:
        what = result.note.split(": ", 1)[0]
        warnings.warn(
            f"σ={schedule['noise_multiplier']:g}, q={schedule['sampling_rate']:g}: {what} "
            "(accounting.account() has details)",
            AccountingFallbackWarning,
            stacklevel=2,
        )
    return result.epsilon


@functools.cache
def calibrate(
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
) -> Calibration:
    """The smallest noise multiplier (within ``tol``) whose ε at ``delta`` is ≤
    ``target_epsilon``, with the ε it really spends (``account()`` of it).

    Brackets σ between powers of two, then Brent's method refines it, keeping the end that
    meets the target. When even ``MIN_NOISE_MULTIPLIER`` meets the target it is returned
    with its own, smaller ε and a note; ``steps == 0`` gives σ = 0 and ε = 0.

    Raises:
      UnreachableBudgetError: ``target_epsilon ≤ 0``, ``delta`` not in (0, 1), or
        σ would exceed ``MAX_NOISE_MULTIPLIER``.
      ValueError: ``target_epsilon`` or ``tol`` not a number, an invalid schedule or option.
    """
    _check_schedule(sampling_rate, steps)
    _scheme(accountant, sampling, dataset_size, neighboring)  # checks the options
    if math.isnan(target_epsilon):
        raise ValueError(f"target_epsilon must be a number, got {target_epsilon}")
    if not 0 < tol < math.inf:
        raise ValueError(f"tol must be finite and > 0, got {tol}")
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
        return Calibration(0.0, 0.0, accountant)

    def spent(sigma: float) -> Accounting:
        return account(
            noise_multiplier=sigma,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
            sampling=sampling,
            dataset_size=dataset_size,
            neighboring=neighboring,
        )

    def within_budget(sigma: float) -> bool:
        return spent(sigma).epsilon <= target_epsilon

    def found(sigma: float, note: str = "") -> Calibration:
        result = spent(sigma)
        notes = "; ".join(part for part in (note, result.note) if part)
        return Calibration(sigma, result.epsilon, result.accountant, notes)

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
            floor = spent(MIN_NOISE_MULTIPLIER).epsilon
            return found(
                MIN_NOISE_MULTIPLIER,
                f"σ={MIN_NOISE_MULTIPLIER:g} is the search floor: it spends ε={floor:.6g}, less "
                f"than the target ε={target_epsilon:g}",
            )
        high, low = low, low / 2

    def gap(sigma: float) -> float:  # > 0 at low, ≤ 0 at high; finite for brentq
        return min(spent(sigma).epsilon - target_epsilon, 1e300)

    root, result = optimize.brentq(gap, low, high, xtol=tol, full_output=True, disp=False)
    candidates = (root, root + tol) if result.converged else ()
    return found(next((s for s in candidates if low < s < high and within_budget(s)), high))


def calibrate_noise_multiplier(**schedule) -> float:
    """``calibrate(**schedule).noise_multiplier`` (the same keyword arguments and errors); use
    ``calibrate`` to report the ε that σ really spends."""
    return calibrate(**schedule).noise_multiplier


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

    Doubles, then bisects on ``account()`` (no warnings); stops at ``MAX_STEPS``.
    ``target_epsilon=inf`` means no budget.
    """
    if not target_epsilon >= 0:
        raise ValueError(f"target_epsilon must be ≥ 0, got {target_epsilon}")
    if target_epsilon == math.inf:
        return MAX_STEPS

    def within_budget(steps: int) -> bool:
        spent = account(
            noise_multiplier=noise_multiplier,
            sampling_rate=sampling_rate,
            steps=steps,
            delta=delta,
            accountant=accountant,
            sampling=sampling,
            dataset_size=dataset_size,
            neighboring=neighboring,
        )
        return spent.epsilon <= target_epsilon

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
