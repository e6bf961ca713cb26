"""Empirical privacy auditing in one training run (Steinke, Nasr & Jagielski 2023).

``audit(AuditSpec(...))`` trains one model with jaxpriv's DP-SGD or MaskDP on random canaries and
returns a lower bound ε̂ on the ε it achieves; ``audit_suite`` runs the four standard checks and
``format_table`` prints them (``passed``/``check``: whether each found what it should). ``bound`` holds the statistics alone.
"""

from jaxpriv.audit.bound import bound_from_scores, epsilon_lower_bound, p_value
from jaxpriv.audit.run import AuditSpec, audit, audit_suite, check, format_table, passed

__all__ = [
    "AuditSpec",
    "audit",
    "audit_suite",
    "bound_from_scores",
    "check",
    "epsilon_lower_bound",
    "format_table",
    "p_value",
    "passed",
]
