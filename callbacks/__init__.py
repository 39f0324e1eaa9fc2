"""Lightning callbacks of ppp-lightning: they schedule, capture, call ``ppp_lightning`` and log."""

from callbacks.gradient_inversion import GradientInversionAttack
from callbacks.leakage_audit import LeakageAudit
from callbacks.partial_perturbation import PartialPerturbation

__all__: list[str] = ["GradientInversionAttack", "LeakageAudit", "PartialPerturbation"]
