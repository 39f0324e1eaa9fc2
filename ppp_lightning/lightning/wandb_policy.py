"""W&B without surprises: offline when not logged in, and a failed run finished as failed."""

from __future__ import annotations

import contextlib
import io
import netrc
import os
import sys
from urllib.parse import urlparse

from pytorch_lightning.utilities import rank_zero_info

__all__ = [
    "INIT_TIMEOUT_ENV",
    "INIT_TIMEOUT_S",
    "describe_wandb_network_error",
    "finish_wandb",
    "use_offline_wandb_unless_logged_in",
    "use_short_wandb_init_timeout",
    "wandb_base_url",
]

# The server of wandb releases before 0.31 (and the fallback when the installed one does not say).
CLASSIC_BASE_URL = "https://api.wandb.ai"
# wandb's own setting for how long ``wandb.init`` waits for the server (wandb's default: 90 s, then retries).
INIT_TIMEOUT_ENV = "WANDB_INIT_TIMEOUT"
# The entry points' default: an unreachable server fails the run in seconds, not minutes.
INIT_TIMEOUT_S = 20


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


def use_short_wandb_init_timeout(seconds: float = INIT_TIMEOUT_S) -> None:
    """Set ``WANDB_INIT_TIMEOUT`` to ``seconds`` unless the user set it.

    wandb waits 90 s (and more with its retries) for an unreachable server before ``wandb.init``
    fails; a few seconds tell the same. Entry points only: it sets an environment variable.
    """
    if not os.environ.get(INIT_TIMEOUT_ENV, "").strip():
        os.environ[INIT_TIMEOUT_ENV] = f"{seconds:g}"


def _network_cause(message: str) -> str:
    """The last reason in a wandb network message (``... dial tcp 127.0.0.1:9: connect: connection refused``)."""
    first_line = next(iter(message.strip().splitlines()), "").strip().rstrip(".")
    cause = first_line.rsplit(": ", 1)[-1].strip() or "no answer"
    if "timed out" in first_line.lower() and "timed out" not in cause.lower():
        cause = f"{cause}; timed out"
    return cause


def describe_wandb_network_error(err: BaseException) -> str | None:
    """A one-line message for a W&B server that could not be reached, or ``None`` for any other error.

    W&B's communication errors (``wandb.errors.CommError`` but not a refused API key) and a time-out
    raised inside wandb are told as "W&B could not reach <host> (<cause>)" with the way out:
    ``WANDB_MODE=offline`` (log on disk, ``wandb sync`` later) or the network.
    """
    wandb_errors = getattr(sys.modules.get("wandb"), "errors", None)
    comm_error = getattr(wandb_errors, "CommError", None)
    auth_error = getattr(wandb_errors, "AuthenticationError", None)
    if comm_error is None:  # wandb never imported: not its error
        return None
    if isinstance(err, comm_error):
        if auth_error is not None and isinstance(err, auth_error):
            return None
    elif not (isinstance(err, TimeoutError) and _raised_in_wandb(err)):
        return None
    url = wandb_base_url()
    host = urlparse(url).netloc or url
    return (
        f"W&B could not reach {host} ({_network_cause(str(err) or type(err).__name__)}); "
        "set WANDB_MODE=offline to log offline and sync later, or check the network"
    )


def _raised_in_wandb(err: BaseException) -> bool:
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("wandb")


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
