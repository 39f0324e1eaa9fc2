"""Say in one line what ended a command: the toolkit's own message, not the parser's wrapping."""

from __future__ import annotations

import re
from argparse import ArgumentError
from typing import Any, Optional

from pytorch_lightning.utilities.exceptions import MisconfigurationException

__all__ = ["describe_error", "exit_status"]

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
    the configuration key or the class being built.

    Args:
        err: the exception that ended the command.

    Returns:
        The message, at most a few lines.
    """
    chain = _cause_chain(err)
    wrappers = [e for e in chain if _is_wrapper(e)]
    real = next((e for e in chain if not _is_wrapper(e)), chain[-1])
    where = _config_location(wrappers) or _building_class(real)
    message = _message(real, wrapper=_is_wrapper(real))
    return f"{where}: {message}" if where else message


def exit_status(err: BaseException) -> int:
    """2 for a command-line or configuration error (an ``ArgumentError`` in the cause chain), else 1.

    Args:
        err: the exception that ended the command.
    """
    return 2 if any(isinstance(e, ArgumentError) for e in _cause_chain(err)) else 1
