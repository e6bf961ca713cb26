"""Empirical privacy auditing in one training run (Steinke, Nasr & Jagielski 2023).

``jaxpriv.audit.run.audit(AuditSpec(...))`` trains one model with jaxpriv's DP-SGD or MaskDP on
random canaries and returns a lower bound ε̂ on the ε it achieves; ``run.audit_suite`` runs the
standard checks and ``run.format_table`` prints them (``run.passed``/``run.check``: whether each
found what it should). ``bound`` holds the statistics alone, ``spec`` the settings of one audit.
"""

from jaxpriv.audit.bound import bound_from_scores, epsilon_lower_bound, p_value
from jaxpriv.audit.spec import AuditSpec

__all__ = ["AuditSpec", "bound_from_scores", "epsilon_lower_bound", "p_value"]
