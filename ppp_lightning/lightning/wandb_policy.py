"""W&B without surprises: offline when not logged in, and a failed run finished as failed."""

from __future__ import annotations

import contextlib
import io
import netrc
import os
import sys
from urllib.parse import urlparse

from pytorch_lightning.utilities import rank_zero_info

__all__ = ["finish_wandb", "use_offline_wandb_unless_logged_in"]


def use_offline_wandb_unless_logged_in() -> None:
    """Set ``WANDB_MODE=offline`` when W&B has no credentials and no mode was chosen.

    Without an API key ``wandb.init`` fails at once; offline runs keep everything on disk and can
    be uploaded later with ``wandb sync``.
    """
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        credentials = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        credentials = None
    if credentials is None:
        os.environ["WANDB_MODE"] = "offline"
        rank_zero_info("W&B: not logged in, logging offline (upload later with `wandb sync`).")


def finish_wandb(quiet: bool) -> None:
    """Finish the process's W&B run, if any, as failed.

    Args:
        quiet: swallow W&B's closing notes (when the run's folder is about to be removed).
    """
    # sys.modules, not an import: a process that never imported wandb has no run to finish.
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    sink = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(sink or sys.stdout), contextlib.redirect_stderr(sink or sys.stderr):
        wandb.finish(exit_code=1)
