"""Writing files atomically: a temporary name beside the target, then a rename into place.

At the bottom of segkit's layers (with :mod:`segkit.errors`), so that data, engine and viz
all write the same way.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segkit._signals import signals_deferred

#: the temporary names :func:`replace_atomically` writes: ``.<name>.<8 hex digits>.tmp``
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (matches :data:`TEMP_NAME`)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def replace_atomically(path: str | Path, fill: Callable[[Path], Any]) -> Path:
    """Have ``fill(tmp)`` write a temporary file beside ``path``, then rename it to ``path``.

    A failed write leaves ``path`` as it was (or absent), never half-written, and removes the
    temporary file. SIGINT and SIGTERM wait until the write is done (an interrupt inside
    ``torch.save`` would break it); only a hard kill can leave the temporary file behind, and
    :func:`remove_stale_temp_files` clears those. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with signals_deferred():
        try:
            fill(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def remove_stale_temp_files(folder: str | Path) -> str | None:
    """Remove the temporary files a killed write left in ``folder`` (segkit's names only).

    Returns:
        One line saying what was removed, or None when nothing was.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    removed = []
    for entry in os.scandir(folder):
        if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            removed.append((entry.name, entry.stat(follow_symlinks=False).st_size))
            Path(entry.path).unlink(missing_ok=True)
    if not removed:
        return None
    names = sorted(name for name, _ in removed)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    mib = sum(size for _, size in removed) / 2**20
    return (
        f"removed {len(removed)} temporary file(s) ({mib:.1f} MiB) that an interrupted write "
        f"left in {folder}: {shown}"
    )


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`replace_atomically`)."""
    replace_atomically(path, lambda tmp: tmp.write_bytes(data))
