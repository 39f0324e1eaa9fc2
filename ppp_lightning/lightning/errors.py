"""Say in one line what ended a command: the toolkit's own message, not the parser's wrapping."""

from __future__ import annotations

import re
from argparse import ArgumentError
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from pytorch_lightning.utilities.exceptions import MisconfigurationException

from ppp_lightning.lightning.wandb_policy import describe_wandb_network_error

__all__ = ["USAGE_EXIT_STATUS", "RUN_EXIT_STATUS", "describe_error", "exit_status", "mark_usage_error", "usage_errors"]

# A command-line or configuration error: the parser's, or a value a class or a command refused before any work.
USAGE_EXIT_STATUS = 2
# A failure during the run (a bad data or checkpoint file, an error in a step or an attack).
RUN_EXIT_STATUS = 1
# The attribute :func:`usage_errors` sets on the errors it lets through.
_USAGE_MARK = "ppp_lightning_usage_error"
# The errors a class or a check raises when it refuses a value.
_REFUSALS = (ValueError, MisconfigurationException)

# Modules that only wrap or re-raise errors while parsing and instantiating the configuration.
WRAPPER_MODULES = ("jsonargparse", "argparse", "pytorch_lightning.cli")
OUR_PACKAGES = ("ppp_lightning", "callbacks", "datamodules")
_PARSER_KEY = re.compile(r'^Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"^Problem with given class_path '([^']+)'")
_SHOWN_LINES = 3


def _cause_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: Optional[BaseException] = err
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _frames(err: BaseException) -> list[Any]:
    """The frames of ``err``'s traceback, outermost first."""
    frames, tb = [], err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _module(frame: Any) -> str:
    return frame.f_globals.get("__name__", "")


def _is_wrapper(err: BaseException) -> bool:
    """Whether ``err`` was raised by the parsing machinery (and only wraps the real failure)."""
    frames = _frames(err)
    return isinstance(err, ArgumentError) or bool(frames) and _module(frames[-1]).startswith(WRAPPER_MODULES)


def _config_location(wrappers: list[BaseException]) -> str:
    """The configuration key (``model.init_args.arch``) and class path jsonargparse's messages name."""
    keys: list[str] = []
    class_path, in_init_args = "", False
    for err in wrappers:
        first_line = next(iter(str(err).strip().splitlines()), "")
        if (key := _PARSER_KEY.match(first_line)) and not (keys and keys[-1].endswith(key.group(1))):
            keys.append(f"init_args.{key.group(1)}" if in_init_args else key.group(1))
            in_init_args = False
        elif path := _CLASS_PATH.match(first_line):
            class_path, in_init_args = path.group(1), True
    location = ".".join(keys)
    return f"{location} ({class_path})" if class_path else location


def _building_class(err: BaseException) -> str:
    """The class whose ``__init__`` raised ``err`` while the configuration was instantiated, or ``""``."""
    frames = _frames(err)
    wrapper_positions = [i for i, frame in enumerate(frames) if _module(frame).startswith(WRAPPER_MODULES)]
    if not wrapper_positions:
        return ""
    for frame in frames[wrapper_positions[-1] + 1 :]:
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            return type(frame.f_locals["self"]).__qualname__
    return ""


def _message(err: BaseException, wrapper: bool) -> str:
    """``err``'s text (first line for a parser message), prefixed by its type when that helps."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = "\n".join(lines[: 1 if wrapper else _SHOWN_LINES])
    ours = type(err).__module__.startswith(OUR_PACKAGES)
    if wrapper or ours or isinstance(err, (ValueError, TypeError, MisconfigurationException)):
        return text
    return f"{type(err).__name__}: {text}"


def describe_error(err: BaseException) -> str:
    """Say in one line what went wrong: the toolkit's own message, not the parser's wrapping.

    jsonargparse wraps a bad value in several layers ("Does not validate against any of the Union
    subtypes", ...). The message shown is the first exception in the cause chain that the parser
    did not raise (a class's own ``ValueError``), else the innermost parser message, prefixed by
    the configuration key or the class being built. A W&B server that could not be reached (a
    ``CommError`` or time-out from wandb anywhere in the chain) is told as such, with the way out
    (``WANDB_MODE=offline``).

    Args:
        err: the exception that ended the command.

    Returns:
        The message, at most a few lines.
    """
    chain = _cause_chain(err)
    for link in chain:
        if network := describe_wandb_network_error(link):
            return network
    wrappers = [e for e in chain if _is_wrapper(e)]
    real = next((e for e in chain if not _is_wrapper(e)), chain[-1])
    where = _config_location(wrappers) or _building_class(real)
    message = _message(real, wrapper=_is_wrapper(real))
    return f"{where}: {message}" if where else message


@contextmanager
def usage_errors() -> Iterator[None]:
    """Mark a refusal raised in the block as a usage error: a configured value was refused (exit status 2).

    A refusal is a ``ValueError`` (the toolkit's classes and checks) or a ``MisconfigurationException``
    (Lightning's classes), itself or in the cause chain of what the parser wraps it in. Wrap what
    instantiates the configuration's classes and what validates a command's arguments, never the
    run itself: a refusal raised during the run keeps exit status 1, and so does any other error
    (a missing data file) raised in the block.

    Raises:
        Exception: the block's, unchanged (marked when it is a refusal).
    """
    try:
        yield
    except Exception as err:
        mark_usage_error(err)
        raise


def mark_usage_error(err: BaseException) -> None:
    """Mark ``err`` as a usage error (exit status 2) if it is a refusal (see :func:`usage_errors`)."""
    if any(isinstance(e, _REFUSALS) for e in _cause_chain(err)):
        setattr(err, _USAGE_MARK, True)


def exit_status(err: BaseException) -> int:
    """2 for a command-line or configuration error, else 1.

    A configuration error is an ``ArgumentError`` (the parser's) or a refusal raised inside
    :func:`usage_errors` (a class refusing a configured value while the configuration is
    instantiated, a command refusing its arguments), anywhere in the cause chain.

    Args:
        err: the exception that ended the command.
    """
    usage = any(isinstance(e, ArgumentError) or getattr(e, _USAGE_MARK, False) for e in _cause_chain(err))
    return USAGE_EXIT_STATUS if usage else RUN_EXIT_STATUS
