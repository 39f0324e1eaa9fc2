"""Lightning callbacks of ppp-lightning: they schedule, capture, call ``ppp_lightning`` and log."""

__all__: list[str] = []
