"""Assessment: scores, identification, findings, verdicts, the typed record, sheets and reports."""

from ppp_lightning.assessment.assess import Assessment, assess

__all__ = ["Assessment", "assess"]
