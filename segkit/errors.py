"""segkit's exception types and the helper that suggests close names."""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: whether messages name options as the ``segkit`` command spells them (see :func:`option`)
_COMMAND_LINE = False


class SegkitError(Exception):
    """Base class of every error segkit raises on purpose."""


class DataError(SegkitError, ValueError):
    """A data set, image or mask is missing, unreadable or inconsistent."""


class ConfigError(SegkitError, ValueError):
    """A configuration key, value or name is invalid."""


class CheckpointError(SegkitError, ValueError):
    """A checkpoint is missing, corrupt or does not match the model."""


class WeightsError(SegkitError, RuntimeError):
    """Pretrained encoder weights could not be obtained or loaded."""


class TrainingError(SegkitError, RuntimeError):
    """Training cannot go on (for example a NaN loss)."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the message says how far it got.

    A ``KeyboardInterrupt``, so code that stops on Ctrl+C stops on it too.

    Args:
        message: how far the run got and what it kept.
        signum: the signal that stopped it (the command exits with ``128 + signum``).
    """

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.signum = signum


def missing_modules(names: Iterable[str]) -> list[str]:
    """The modules of ``names`` that cannot be imported (looked up, not imported): what an
    optional extra's error line names."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def command_line() -> bool:
    """Whether the code runs for the ``segkit`` command (inside :func:`command_line_names`)."""
    return _COMMAND_LINE


def option(name: str, value: object = True) -> str:
    """How a user passes option ``name`` in the interface in use, for error messages.

    ``option("skip_bad")`` is ``skip_bad=True`` in Python and ``--skip-bad`` inside
    :func:`command_line_names` (the ``segkit`` command); ``option("max_pixels", "N")`` is
    ``max_pixels=N`` or ``--max-pixels N``.
    """
    if _COMMAND_LINE:
        flag = "--" + name.replace("_", "-")
        return flag if value is True else f"{flag} {value}"
    return f"{name}={value}"


@contextmanager
def command_line_names() -> Iterator[None]:
    """Within this block :func:`option` names options as the ``segkit`` command spells them."""
    global _COMMAND_LINE
    previous, _COMMAND_LINE = _COMMAND_LINE, True
    try:
        yield
    finally:
        _COMMAND_LINE = previous


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean 'a' or 'b'?"`` for the closest names, or ``""``.

    Args:
        name: the unknown name a user gave.
        choices: the valid names.
        n: how many suggestions at most.
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if not close:
        return ""
    names = [repr(lowered[c]) for c in close]
    return f" Did you mean {' or '.join(names)}?"


#: appended to unknown-name messages of the registries plugins extend
PLUGIN_HINT = (
    " A name registered in your own module needs that module imported first: list it in the "
    "config's imports, or pass segkit --import MODULE."
)


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> str:
    """Message for an unknown registry name: the name, suggestions, how to list them."""
    choices = sorted(choices)
    hint = suggest(name, choices)
    if not hint and len(choices) <= 12:
        hint = f" Valid names: {', '.join(choices)}."
    return f"Unknown {kind} {name!r}.{hint}"
