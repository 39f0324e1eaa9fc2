"""W&B without surprises: offline when not logged in, and a failed run finished as failed."""

from __future__ import annotations

import contextlib
import io
import netrc
import os
import sys
from urllib.parse import urlparse

from pytorch_lightning.utilities import rank_zero_info

__all__ = ["finish_wandb", "use_offline_wandb_unless_logged_in", "wandb_base_url"]

# The server of wandb releases before 0.31 (and the fallback when the installed one does not say).
CLASSIC_BASE_URL = "https://api.wandb.ai"


def wandb_base_url() -> str:
    """The server the installed wandb logs in to: ``WANDB_BASE_URL``, else the installed release's default.

    wandb 0.31 defaults to another server than ``api.wandb.ai``; credentials are kept per server.
    """
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    try:
        from wandb.sdk.wandb_settings import Settings

        default = Settings.model_fields["base_url"].default
    except (ImportError, AttributeError, KeyError):
        return CLASSIC_BASE_URL
    return default if isinstance(default, str) and default else CLASSIC_BASE_URL


def use_offline_wandb_unless_logged_in() -> None:
    """Set ``WANDB_MODE=offline`` when W&B has no credentials and no mode was chosen.

    Without an API key ``wandb.init`` fails at once; offline runs keep everything on disk and can
    be uploaded later with ``wandb sync``. The credentials looked for (``NETRC`` or ``~/.netrc``)
    are those of the server wandb will use (:func:`wandb_base_url`). Entry points only: it sets
    an environment variable.
    """
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(wandb_base_url()).hostname
    try:
        credentials = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        credentials = None
    if credentials is None:
        os.environ["WANDB_MODE"] = "offline"
        rank_zero_info(f"W&B: not logged in to {host}, logging offline (upload later with `wandb sync`).")


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
