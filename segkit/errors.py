"""segkit's exception types and the helper that suggests close names."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> str:
    """Message for an unknown registry name: the name, suggestions, how to list them."""
    choices = sorted(choices)
    hint = suggest(name, choices)
    if not hint and len(choices) <= 12:
        hint = f" Valid names: {', '.join(choices)}."
    return f"Unknown {kind} {name!r}.{hint}"
