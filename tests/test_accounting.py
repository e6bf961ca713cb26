"""Privacy accounting: pinned ε values, calibration, max_steps and the sampling schemes."""

import math

import pytest
from dp_accounting import dp_event, pld, privacy_accountant, rdp

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
