"""The one-run lower bound on ε (Steinke, Nasr & Jagielski 2023, "Privacy Auditing with One (1)
Training Run", Theorem 3 and its Appendix D code).

m canaries are each put in the training set independently with probability 1/2; the auditor
guesses IN or OUT for r of them and v guesses are right. If training is (ε, δ)-DP then, with
W ~ Binomial(r, p) and p = e^ε / (1 + e^ε),

    P[V ≥ v] ≤ P[W ≥ v] + 2mδ · max_{i=1..v} P[v − i ≤ W < v] / i.

That bound is the p-value of the hypothesis "(ε, δ)-DP"; ``epsilon_lower_bound`` is the largest ε
it rejects at the given confidence. The guesses must not be tuned on the outcome:
``bound_from_scores`` guesses the top-k scores IN and the bottom-k OUT for a fixed set of k and
splits the confidence over them (Bonferroni), so the best k is a valid bound too.
"""

import math

import numpy as np
from scipy import special, stats

# k = fraction · m canaries guessed IN (top scores) and as many OUT (bottom scores).
GUESS_FRACTIONS = (1 / 40, 1 / 20, 1 / 10, 1 / 4)


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise ValueError(
            f"need 0 ≤ v ≤ r ≤ m (correct guesses ≤ guesses ≤ canaries), got m={m}, r={r}, v={v}"
        )


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """Upper bound on P[V ≥ v] for an (eps, delta)-DP algorithm (Theorem 3), capped at 1.

    Non-decreasing in ``eps`` whenever 2mδ ≤ 1 (each term's derivative in p is then ≥ 0).
    """
    _check_counts(m, r, v)
    _check_delta(delta)
    if not eps >= 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")
    p = special.expit(eps)
    tail = stats.binom.sf(v - 1, r, p)  # P[W ≥ v]
    if delta > 0 and v > 0:
        below = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, p))  # P[v−i ≤ W < v]
        tail += 2 * m * delta * np.max(below / np.arange(1, v + 1))
    return float(min(tail, 1.0))


def epsilon_lower_bound(
    m: int, r: int, v: int, delta: float = 0.0, confidence: float = 0.95, tol: float = 1e-7
) -> float:
    """The largest ε whose p-value is ≤ 1 − ``confidence`` (0 when even ε = 0 is not rejected).

    Bisection keeps ``p_value(lo) ≤ β``, so the result is always a valid lower bound (exact when
    2mδ ≤ 1, where the p-value is monotone in ε). Above logit(β^{1/r}) nothing is rejected, since
    P[W ≥ v] ≥ P[W = r] = p^r > β there: that is the largest ε̂ that r guesses can show.
    """
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    beta = 1 - confidence
    if r == 0 or p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    log_root = math.log(beta) / r  # log β^{1/r}
    lo, hi = 0.0, log_root - math.log(-math.expm1(log_root))  # logit(β^{1/r})
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) <= beta else (lo, mid)
    return lo


def guess_sizes(m: int, fractions=GUESS_FRACTIONS) -> list[int]:
    """The distinct k = max(1, ⌊fraction · m⌋) with 2k ≤ m, fixed before any score is seen."""
    return sorted({max(1, int(f * m)) for f in fractions if 2 * max(1, int(f * m)) <= m})


def bound_from_scores(
    scores: np.ndarray | dict[str, np.ndarray],
    included: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    fractions=GUESS_FRACTIONS,
) -> dict:
    """Guesses IN for the k highest scores and OUT for the k lowest, for each k of ``guess_sizes``
    and each named score of ``scores`` (one array, or {name: array}); returns the guess with the
    largest ε̂, each tested at confidence 1 − (1 − confidence)/(#k · #scores) (Bonferroni).

    ``scores`` and ``included`` (the true membership) are [m]; ties are broken by index.
    """
    named = scores if isinstance(scores, dict) else {"score": scores}
    included = np.asarray(included, bool)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    for values in named.values():
        if np.shape(values) != included.shape or included.ndim != 1:
            raise ValueError(
                f"scores {np.shape(values)} and included {included.shape} must be equal [m]"
            )
    m = len(included)
    sizes = guess_sizes(m, fractions)
    per_test = 1 - (1 - confidence) / max(1, len(sizes) * len(named))
    best = {"k": 0, "r": 0, "v": 0, "precision": math.nan, "epsilon_lower_bound": 0.0}
    for name, values in named.items():
        order = np.argsort(np.asarray(values), kind="stable")
        for k in sizes:
            v = int(included[order[-k:]].sum() + (~included[order[:k]]).sum())
            eps = epsilon_lower_bound(m, 2 * k, v, delta, per_test)
            if eps > best["epsilon_lower_bound"] or best["k"] == 0:
                best = {
                    "score": name,
                    "k": k,
                    "r": 2 * k,
                    "v": v,
                    "precision": v / (2 * k),
                    "epsilon_lower_bound": eps,
                }
    return best | {"confidence": confidence}
