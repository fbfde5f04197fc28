"""Writing files atomically: a temporary name beside the target, then a rename into place.

At the bottom of segkit's layers (with :mod:`segkit.errors`), so that data, engine and viz
all write the same way.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def replace_atomically(path: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Have ``fill(tmp)`` write a temporary file beside ``path``, then rename it to ``path``.

    An interrupted or failed write leaves ``path`` as it was (or absent), never half-written,
    and removes the temporary file. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fill(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))
