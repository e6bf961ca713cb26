"""Privacy accounting: pinned ε values, calibration, max_steps, the sampling schemes and
bounded PLD (fallbacks, the ε spent at the σ floor, quiet dp-accounting logs)."""

import logging
import math
import time

import numpy as np
import pytest
from dp_accounting import dp_event, pld, privacy_accountant, rdp
from dp_accounting.pld import common as pld_common
from scipy import special, stats

from jaxpriv.dp import accounting
from jaxpriv.dp.accounting import UnreachableBudgetError

# (noise_multiplier, sampling_rate, steps, delta) -> ε measured with dp-accounting 0.6.0.
SMALL_Q = dict(noise_multiplier=1.0, sampling_rate=0.01, steps=1000, delta=1e-5)
LARGE_Q = dict(noise_multiplier=3.0, sampling_rate=0.1, steps=512, delta=1e-6)
PINNED = [
    (SMALL_Q, "rdp", 2.1014),
    (SMALL_Q, "pld", 1.8289),
    (LARGE_Q, "rdp", 4.0510),
    (LARGE_Q, "pld", 3.7700),
]
SHUFFLE = dict(sampling="shuffle", dataset_size=60_000, neighboring="replace_one")


def eps(accountant="pld", **kwargs):
    return accounting.epsilon(**{**SMALL_Q, "accountant": accountant, **kwargs})


@pytest.mark.parametrize("schedule,accountant,expected", PINNED)
def test_pinned_values(schedule, accountant, expected):
    assert accounting.epsilon(**schedule, accountant=accountant) == pytest.approx(
        expected, abs=0.02
    )


@pytest.mark.parametrize("schedule", [SMALL_Q, LARGE_Q])
def test_rdp_bounds_pld_and_agrees_within_20_percent(schedule):
    rdp_eps = accounting.epsilon(**schedule, accountant="rdp")
    pld_eps = accounting.epsilon(**schedule, accountant="pld")
    assert pld_eps <= rdp_eps <= 1.2 * pld_eps


def test_pld_discretization_is_pessimistic_and_accurate():
    """The 1e-3 interval stays above dp-accounting's default (1e-4) and within 2e-3 of it."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.0)), 1000
    )
    fine = pld.PLDAccountant().compose(event).get_epsilon(1e-5)
    assert fine <= eps() <= fine + 2e-3


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
def test_edge_cases(accountant):
    assert eps(accountant, noise_multiplier=0.0) == math.inf
    assert eps(accountant, steps=0) == 0.0
    assert eps(accountant, steps=0, noise_multiplier=0.0) == 0.0
    assert eps(accountant, steps=10) < eps(accountant, steps=100) < eps(accountant)
    assert eps(accountant, noise_multiplier=2.0) < eps(accountant)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampling_rate=0.0), "sampling_rate"),
        (dict(sampling_rate=1.5), "sampling_rate"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(noise_multiplier=math.nan), "noise_multiplier"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(accountant="moments"), "accountant"),
        (dict(sampling="uniform"), "sampling"),
        (dict(neighboring="swap"), "neighboring"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eps(**kwargs)


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
def test_calibration_round_trip(accountant):
    schedule = dict(sampling_rate=0.01, steps=1000, delta=1e-5, accountant=accountant)
    sigma = accounting.calibrate_noise_multiplier(target_epsilon=2.0, **schedule)
    assert 2.0 - 0.01 <= accounting.epsilon(noise_multiplier=sigma, **schedule) <= 2.0
    assert accounting.epsilon(noise_multiplier=sigma - 0.01, **schedule) > 2.0


def test_calibration_replace_one_needs_more_noise():
    schedule = dict(target_epsilon=2.0, sampling_rate=0.01, steps=1000, delta=1e-5)
    add_remove = accounting.calibrate_noise_multiplier(**schedule)
    replace_one = accounting.calibrate_noise_multiplier(**schedule, neighboring="replace_one")
    assert replace_one > add_remove
    assert eps(noise_multiplier=replace_one, neighboring="replace_one") <= 2.0


def test_calibration_zero_steps_needs_no_noise():
    assert (
        accounting.calibrate_noise_multiplier(
            target_epsilon=1.0, delta=1e-5, sampling_rate=0.01, steps=0
        )
        == 0.0
    )


def test_unreachable_target_says_what_to_change():
    with pytest.raises(UnreachableBudgetError) as error:
        accounting.calibrate_noise_multiplier(
            target_epsilon=0.01, delta=1e-5, sampling_rate=1.0, steps=1000, accountant="rdp"
        )
    message = str(error.value)
    for part in [
        "ε=0.01",
        "sampling_rate=1.0",
        "steps=1000",
        "noise_multiplier > 1024",
        "fewer steps",
        "smaller sampling rate",
        "larger epsilon",
    ]:
        assert part in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    "target_epsilon,delta", [(0.0, 1e-5), (-1.0, 1e-5), (1.0, 0.0), (1.0, 1.0)]
)
def test_invalid_target_is_unreachable(target_epsilon, delta):
    with pytest.raises(UnreachableBudgetError, match="larger epsilon or delta"):
        accounting.calibrate_noise_multiplier(
            target_epsilon=target_epsilon, delta=delta, sampling_rate=0.01, steps=100
        )


@pytest.mark.parametrize("accountant,expected", [("pld", 1201), ("rdp", 881)])
def test_max_steps_is_the_boundary(accountant, expected):
    schedule = dict(noise_multiplier=1.0, sampling_rate=0.01, delta=1e-5, accountant=accountant)
    steps = accounting.max_steps(target_epsilon=2.0, **schedule)
    assert steps == expected
    assert accounting.epsilon(steps=steps, **schedule) <= 2.0
    assert accounting.epsilon(steps=steps + 1, **schedule) > 2.0


def test_max_steps_zero_when_one_step_exceeds_budget():
    assert (
        accounting.max_steps(
            noise_multiplier=0.3, sampling_rate=1.0, target_epsilon=1.0, delta=1e-5
        )
        == 0
    )
    assert (
        accounting.max_steps(
            noise_multiplier=0.0, sampling_rate=0.01, target_epsilon=1.0, delta=1e-5
        )
        == 0
    )


def test_shuffle_uses_sampling_without_replacement():
    """Batches of qN = 600 out of 60000, σ/2 against RDP's replace-one sensitivity (2C)."""
    expected = (
        rdp.RdpAccountant(neighboring_relation=privacy_accountant.NeighboringRelation.REPLACE_ONE)
        .compose(
            dp_event.SelfComposedDpEvent(
                dp_event.SampledWithoutReplacementDpEvent(
                    60_000, 600, dp_event.GaussianDpEvent(0.5)
                ),
                1000,
            )
        )
        .get_epsilon(1e-5)
    )
    shuffle = eps("rdp", **SHUFFLE)
    assert shuffle == expected
    # A documented, different value than Poisson sampling (add/remove: 2.10, replace-one: 15.47).
    assert shuffle == pytest.approx(20.987, abs=0.02)
    assert eps("rdp", neighboring="replace_one") == pytest.approx(15.472, abs=0.02)


def test_full_batch_shuffle_is_the_gaussian_with_sensitivity_2c():
    full = dict(sampling_rate=1.0, steps=10, noise_multiplier=4.0)
    shuffle = eps("rdp", **full, **SHUFFLE)
    assert shuffle == eps("rdp", **full, neighboring="replace_one")
    assert shuffle == eps("rdp", **{**full, "noise_multiplier": 2.0})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(sampling="shuffle", neighboring="replace_one"), "needs dataset_size"),
        (
            dict(sampling="shuffle", dataset_size=60_000),
            "only accounted under neighboring='replace_one'",
        ),
        (dict(**SHUFFLE, accountant="pld"), "PLDAccountant does not support"),
        (dict(**SHUFFLE, sampling_rate=0.01001), "whole batch size"),
    ],
)
def test_shuffle_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        accounting.epsilon(**{**SMALL_Q, "accountant": "rdp", **kwargs})


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
def test_replace_one_costs_more_than_add_remove(accountant):
    assert eps(accountant, neighboring="replace_one") > eps(accountant)


def test_pld_replace_one_is_exact_and_tighter_than_the_rdp_fallback():
    replace_one = eps(neighboring="replace_one")
    assert replace_one == pytest.approx(2.844, abs=0.02)
    assert replace_one < eps(noise_multiplier=0.5)  # σ/2 under add/remove: a looser valid bound
    # Without subsampling, replacing is the Gaussian mechanism with sensitivity 2C.
    full = dict(sampling_rate=1.0, steps=10, noise_multiplier=4.0)
    assert eps(**full, neighboring="replace_one") == pytest.approx(
        eps(**{**full, "noise_multiplier": 2.0}), abs=0.01
    )


# --- Fail closed: bounded PLD, fallbacks said out loud, true ε at the σ floor, quiet logs ---

SMALL_SIGMA = dict(sampling_rate=0.01, steps=100, delta=1e-5)


@pytest.fixture
def fresh_caches():
    """account/epsilon/calibrate are cached: clear them around tests that patch or watch them."""

    def clear():
        for cached in (accounting.account, accounting.epsilon, accounting.calibrate):
            cached.cache_clear()

    clear()
    yield
    clear()


@pytest.fixture
def fft_lengths(monkeypatch):
    """The lengths of the PMFs that dp-accounting's PLD self-composition (FFT) works on."""
    lengths = []
    self_convolve = pld_common.self_convolve

    def recording(input_list, num_times, tail_mass_truncation=0):
        lower, output = self_convolve(input_list, num_times, tail_mass_truncation)
        lengths.append(max(len(input_list), len(output)))
        return lower, output

    monkeypatch.setattr(pld_common, "self_convolve", recording)
    return lengths


def epsilon_lower_bound(sigma, sampling_rate, steps, delta):
    """A valid lower bound on the add/remove ε(δ): a test that says "sampled" when a step's
    output reaches t, and rejects when at least k of the steps do. With the example the
    output is the mixture (1-q)N(0, σ²) + qN(1, σ²), without it N(0, σ²); Q(S) ≤ C(T, k)p0^k."""
    best = 0.0
    for t in [1 - f * sigma for f in range(5)]:
        log_p0 = stats.norm.logsf(t / sigma)
        p1 = (1 - sampling_rate) * math.exp(log_p0) + sampling_rate * stats.norm.sf((t - 1) / sigma)
        for k in range(1, 30):
            with_example = stats.binom.sf(k - 1, steps, p1)
            if with_example <= delta:
                break
            log_without = math.log(special.comb(steps, k)) + k * log_p0
            best = max(best, math.log(with_example - delta) - log_without)
    return best


@pytest.mark.parametrize("neighboring", accounting.NEIGHBORINGS)
@pytest.mark.parametrize("sigma", [1e-6, 1e-3, 0.01, 0.1])
def test_small_sigma_is_bounded_valid_and_says_how(sigma, neighboring, fft_lengths, fresh_caches):
    """σ=1e-6 used to ask for 3.55 PiB and σ=0.01 for 95 s and 6.5 GB (q=0.01, 100 steps)."""
    start = time.perf_counter()
    result = accounting.account(noise_multiplier=sigma, neighboring=neighboring, **SMALL_SIGMA)
    assert time.perf_counter() - start < 10
    assert max(fft_lengths, default=0) <= accounting.PLD_MAX_GRID_POINTS
    rdp_epsilon = accounting.epsilon(
        noise_multiplier=sigma, neighboring=neighboring, accountant="rdp", **SMALL_SIGMA
    )
    # Never optimistic: at least what a concrete test distinguishes, at most RDP's bound.
    assert epsilon_lower_bound(sigma, **SMALL_SIGMA) <= result.epsilon <= rdp_epsilon
    if sigma == 1e-6:  # no usable PLD grid: RDP, said so
        assert (result.accountant, result.epsilon) == ("rdp", rdp_epsilon)
        assert "RDP accountant" in result.note and "PLD needs more than" in result.note
    elif sigma == 0.1:  # fits the default grid: unchanged
        assert (result.accountant, result.note) == ("pld", "")
    else:  # a coarser grid, still tight (within 5% of the lower bound)
        assert result.accountant == "pld" and "grid coarsened" in result.note
        assert result.epsilon <= 1.05 * epsilon_lower_bound(sigma, **SMALL_SIGMA)


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
def test_sigma_beyond_dp_accounting_arithmetic_is_infinite(accountant):
    """dp-accounting's RDP reports ε = 0 at σ ≤ 1e-152 (1/σ² overflows): fail closed instead."""
    with np.errstate(all="ignore"):
        raw = rdp.RdpAccountant().compose(dp_event.SelfComposedDpEvent(_poisson(1e-160, 0.01), 100))
        assert raw.get_epsilon(1e-5) == 0.0
    result = accounting.account(noise_multiplier=1e-160, accountant=accountant, **SMALL_SIGMA)
    assert result.epsilon == math.inf and "ε = ∞" in result.note


def _poisson(sigma, q):
    return dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))


def test_epsilon_warns_when_it_falls_back(fresh_caches):
    with pytest.warns(accounting.AccountingFallbackWarning, match="RDP accountant"):
        value = accounting.epsilon(noise_multiplier=1e-6, **SMALL_SIGMA)
    assert value == accounting.account(noise_multiplier=1e-6, **SMALL_SIGMA).epsilon
    with pytest.warns(accounting.AccountingFallbackWarning, match="grid coarsened"):
        accounting.epsilon(noise_multiplier=0.01, **SMALL_SIGMA)


def test_no_fallback_no_note_and_no_warning(fresh_caches, recwarn):
    assert accounting.account(**SMALL_Q) == accounting.Accounting(
        accounting.epsilon(**SMALL_Q), "pld", ""
    )
    assert not recwarn.list


@pytest.mark.parametrize("neighboring", accounting.NEIGHBORINGS)
@pytest.mark.parametrize("schedule", [SMALL_Q, LARGE_Q])
def test_coarsened_grid_is_an_upper_bound_close_to_the_default(
    schedule, neighboring, monkeypatch, fresh_caches, fft_lengths
):
    """Forcing a 4096-point cap on schedules that fit the default grid (~2e4 points)."""
    default = accounting.account(**schedule, neighboring=neighboring)
    assert default.note == ""
    monkeypatch.setattr(accounting, "PLD_MAX_GRID_POINTS", 2**12)
    accounting.account.cache_clear()
    fft_lengths.clear()
    coarse = accounting.account(**schedule, neighboring=neighboring)
    assert coarse.accountant == "pld" and "grid coarsened" in coarse.note
    assert max(fft_lengths) <= 2**12
    assert default.epsilon <= coarse.epsilon <= 1.03 * default.epsilon


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(noise_multiplier=32.0, steps=2**40),  # a sparse step: dp-accounting's points**steps
        dict(noise_multiplier=1.0, steps=2**30),
        dict(noise_multiplier=4.0, sampling_rate=1.0, steps=10**6),
    ],
)
def test_huge_step_counts_stay_bounded(kwargs, fresh_caches, fft_lengths):
    start = time.perf_counter()
    result = accounting.account(**{**SMALL_Q, **kwargs})
    assert time.perf_counter() - start < 10
    assert max(fft_lengths, default=0) <= accounting.PLD_MAX_GRID_POINTS
    assert (
        result.epsilon <= accounting.account(**{**SMALL_Q, **kwargs, "accountant": "rdp"}).epsilon
    )


def test_tiny_fixed_sigma_fails_fast_in_max_steps(fresh_caches):
    assert (
        accounting.max_steps(
            noise_multiplier=1e-6, sampling_rate=0.01, target_epsilon=4.0, delta=1e-5
        )
        == 0
    )
    assert (
        accounting.max_steps(
            noise_multiplier=1.0, sampling_rate=0.01, target_epsilon=math.inf, delta=1e-5
        )
        == accounting.MAX_STEPS
    )


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
@pytest.mark.parametrize("target", [1e4, 1e9, math.inf])
def test_huge_target_reports_the_epsilon_really_spent(accountant, target):
    schedule = dict(delta=1e-5, sampling_rate=0.01, steps=100, accountant=accountant)
    result = accounting.calibrate(target_epsilon=target, **schedule)
    spent = accounting.epsilon(noise_multiplier=accounting.MIN_NOISE_MULTIPLIER, **schedule)
    assert result.noise_multiplier == accounting.MIN_NOISE_MULTIPLIER
    assert result.epsilon == spent < 1000 < target
    assert result.accountant == accountant
    assert "search floor" in result.note and f"ε={spent:.6g}" in result.note
    assert accounting.calibrate_noise_multiplier(target_epsilon=target, **schedule) == (
        accounting.MIN_NOISE_MULTIPLIER
    )


@pytest.mark.parametrize("accountant", accounting.ACCOUNTANTS)
def test_calibration_reports_its_epsilon(accountant):
    schedule = dict(sampling_rate=0.01, steps=1000, delta=1e-5, accountant=accountant)
    result = accounting.calibrate(target_epsilon=2.0, **schedule)
    assert result.note == "" and result.accountant == accountant
    assert result.epsilon == accounting.epsilon(
        noise_multiplier=result.noise_multiplier, **schedule
    )
    assert 2.0 - 0.01 <= result.epsilon <= 2.0


def test_dp_accounting_log_warnings_are_silenced(caplog, capfd, fresh_caches):
    """RDP at q=0.3 makes dp-accounting log 'failed to converge' (absl) for several orders."""
    event = dp_event.PoissonSampledDpEvent(0.3, dp_event.GaussianDpEvent(0.51))
    with caplog.at_level(logging.WARNING):
        rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
        assert any("failed to converge" in r.getMessage() for r in caplog.records)  # unfiltered
        caplog.clear()
        capfd.readouterr()
        accounting.epsilon(
            noise_multiplier=0.5, sampling_rate=0.3, steps=100, delta=1e-5, accountant="rdp"
        )
        accounting.calibrate(
            target_epsilon=8.0, delta=1e-5, sampling_rate=0.5, steps=100, accountant="rdp"
        )
        accounting.account(noise_multiplier=1e-3, **SMALL_SIGMA)  # coarse PLD and RDP
        assert caplog.records == []
        assert capfd.readouterr().err == ""
        logging.getLogger("absl").warning("not from dp-accounting")  # others still pass
        with accounting.quiet_dp_accounting():
            logging.getLogger("absl").warning("not from dp-accounting either")
    assert [r.getMessage() for r in caplog.records] == [
        "not from dp-accounting",
        "not from dp-accounting either",
    ]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(noise_multiplier=math.inf), "noise_multiplier"),
        (dict(sampling_rate=math.nan), "sampling_rate"),
        (dict(steps=math.inf), "steps"),
        (dict(steps=math.nan), "steps"),
        (dict(delta=math.nan), "delta"),
    ],
)
def test_non_finite_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eps(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(target_epsilon=math.nan), "target_epsilon"),
        (dict(tol=0.0), "tol"),
        (dict(steps=math.inf), "steps"),
        (dict(sampling_rate=math.nan), "sampling_rate"),
    ],
)
def test_calibration_non_finite_arguments_are_named(kwargs, match):
    schedule = dict(target_epsilon=2.0, delta=1e-5, sampling_rate=0.01, steps=100)
    with pytest.raises(ValueError, match=match):
        accounting.calibrate(**{**schedule, **kwargs})
