"""Accounting parity: jaxpriv's ε (dp-accounting RDP and PLD) against Opacus' RDP and PRV.

All four accountants bound the same mechanism, the Poisson-subsampled Gaussian
composed over the steps (add/remove adjacency), so they differ only in how they
bound it:

* RDP, both sides: the Rényi divergences of the subsampled Gaussian (Mironov et al.
  2019) and the same conversion to (ε, δ) (Balle et al. 2020). At integer orders both
  compute the same exact value. At fractional orders the divergence is an alternating
  series: Opacus sums the signed terms (the exact value), dp-accounting sums their
  absolute values (an upper bound), so jaxpriv's RDP ε can be slightly larger when the
  best order is fractional. The two "integer orders" columns restrict both to the orders
  2 … 63: they agree to rounding, so any gap is that series, not the analysis.
* PLD (jaxpriv) and PRV (Opacus) are both numerical, near-exact upper bounds of
  the same privacy curve. They differ by their discretisation: jaxpriv's PLD
  rounds pessimistically on a 1e-3 grid, Opacus' PRV returns the upper end of an
  interval of width ``eps_error`` (0.01 here).
* RDP is looser than PLD/PRV by design (it bounds the curve through moments).
"""

import math
from typing import NamedTuple

from dp_accounting import dp_event, rdp

from jaxpriv.dp import accounting

PRV_EPS_ERROR = 0.01
INTEGER_ORDERS = tuple(range(2, 64))


class Schedule(NamedTuple):
    name: str
    noise_multiplier: float
    sampling_rate: float
    steps: int
    delta: float


SCHEDULES = (
    Schedule("MNIST scale: 600 of 60k, σ=4, 100 epochs", 4.0, 600 / 60_000, 10_000, 1e-5),
    Schedule("MNIST scale: 600 of 60k, σ=2, 100 epochs", 2.0, 600 / 60_000, 10_000, 1e-5),
    Schedule("CIFAR-10 scale: 4096 of 50k, σ=3, 2500 steps", 3.0, 4096 / 50_000, 2500, 1e-5),
    Schedule("jaxpriv demo (ε=4)", 1.176, 256 / 4096, 160, 1e-5),
    Schedule("Study 2, ε=0.5", 2.659, 64 / 4096, 512, 1e-5),
    Schedule("Study 2, ε=8", 0.610, 64 / 4096, 512, 1e-5),
)


def _opacus_accountant(schedule: Schedule, accountant: str):
    """Opacus' ``"rdp"`` or ``"prv"`` accountant with ``schedule``'s steps in its history."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant not in ("rdp", "prv"):
        raise ValueError(f"Opacus accountant must be 'rdp' or 'prv', got {accountant!r}")
    opacus = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    opacus.history = [(schedule.noise_multiplier, schedule.sampling_rate, schedule.steps)]
    return opacus


def opacus_epsilon(schedule: Schedule, accountant: str) -> float:
    """ε of ``schedule`` from Opacus' ``"rdp"`` or ``"prv"`` accountant."""
    opacus = _opacus_accountant(schedule, accountant)
    if accountant == "rdp":
        return float(opacus.get_epsilon(schedule.delta))
    return float(opacus.get_epsilon(schedule.delta, eps_error=PRV_EPS_ERROR))


def jaxpriv_epsilon(schedule: Schedule, accountant: str) -> float:
    """ε of ``schedule`` from ``jaxpriv.dp.accounting`` (dp-accounting ``"rdp"`` or ``"pld"``)."""
    return accounting.epsilon(
        noise_multiplier=schedule.noise_multiplier,
        sampling_rate=schedule.sampling_rate,
        steps=schedule.steps,
        delta=schedule.delta,
        accountant=accountant,
    )


def rdp_on_integer_orders(schedule: Schedule) -> tuple[float, float]:
    """(jaxpriv's, Opacus') RDP ε of ``schedule`` using only the orders ``INTEGER_ORDERS``."""
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(
            schedule.sampling_rate, dp_event.GaussianDpEvent(schedule.noise_multiplier)
        ),
        schedule.steps,
    )
    jaxpriv = rdp.RdpAccountant(orders=INTEGER_ORDERS).compose(event).get_epsilon(schedule.delta)
    opacus = _opacus_accountant(schedule, "rdp")
    return float(jaxpriv), float(opacus.get_epsilon(schedule.delta, alphas=INTEGER_ORDERS))


def accounting_parity(schedules=SCHEDULES) -> list[dict]:
    """One row per schedule: ε from jaxpriv's RDP and PLD and from Opacus' RDP and PRV."""
    rows = []
    for s in schedules:
        jaxpriv_integer, opacus_integer = rdp_on_integer_orders(s)
        rows.append(
            {
                "schedule": s.name,
                "noise_multiplier": s.noise_multiplier,
                "sampling_rate": s.sampling_rate,
                "steps": s.steps,
                "delta": s.delta,
                "jaxpriv_rdp": jaxpriv_epsilon(s, "rdp"),
                "opacus_rdp": opacus_epsilon(s, "rdp"),
                "jaxpriv_rdp_integer_orders": jaxpriv_integer,
                "opacus_rdp_integer_orders": opacus_integer,
                "jaxpriv_pld": jaxpriv_epsilon(s, "pld"),
                "opacus_prv": opacus_epsilon(s, "prv"),
            }
        )
    return rows


def format_accounting_table(rows: list[dict]) -> str:
    """Markdown table of ``accounting_parity`` rows with the differences."""
    lines = [
        "| schedule | σ | q | steps | δ | jaxpriv RDP | Opacus RDP | jaxpriv RDP, integer orders "
        "| Opacus RDP, integer orders | jaxpriv PLD | Opacus PRV | PLD − PRV |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['schedule']} | {r['noise_multiplier']:g} | {r['sampling_rate']:.4g} "
            f"| {r['steps']} | {r['delta']:g} | {r['jaxpriv_rdp']:.4f} | {r['opacus_rdp']:.4f} "
            f"| {r['jaxpriv_rdp_integer_orders']:.4f} | {r['opacus_rdp_integer_orders']:.4f} "
            f"| {r['jaxpriv_pld']:.4f} "
            f"| {r['opacus_prv']:.4f} | {_signed(r['jaxpriv_pld'] - r['opacus_prv'])} |"
        )
    return "\n".join(lines)


def _signed(x: float) -> str:
    return "0" if math.isclose(x, 0.0, abs_tol=5e-5) else f"{x:+.4f}"
