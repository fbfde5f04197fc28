"""Plugins: user modules that register data sets, models, losses, optimizers or schedulers.

segkit imports them before it builds anything, from three places:

- a config's ``imports: [my_package.my_module]`` list;
- the command line: ``segkit --import my_package.my_module train ...`` (or after the command);
- installed packages that declare an entry point in the ``segkit.plugins`` group, e.g. in
  ``setup.cfg``::

      [options.entry_points]
      segkit.plugins =
          my_plugin = my_package.segkit_plugin

  The entry point names a module (imported) or a function (imported and called).

A model trained with a plugin records the modules it needs in its spec (``spec.imports``);
loading the checkpoint imports them first and names the one that is missing.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from segkit.errors import ConfigError

logger = logging.getLogger(__name__)

#: the entry-point group installed packages register their plugins under
ENTRY_POINT_GROUP = "segkit.plugins"

_entry_points_loaded = False


class PluginError(ConfigError):
    """A plugin module named by a config, the command line or a checkpoint cannot be imported."""


def import_module(name: str, where: str = "imports") -> None:
    """Import one plugin module by its dotted name.

    A module that is not found on ``sys.path`` is looked for in the current directory too
    (a ``my_plugin.py`` beside the config), as ``python -m`` would.

    Raises:
        PluginError: the module (or one it imports) is missing or fails to import, naming
            the module, who asked for it and what to do.
    """
    name = str(name).strip()
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise PluginError(
            f"{where}: {name!r} is not a module name; give a dotted import path such as "
            "my_package.my_module (not a file path)."
        )
    if name in sys.modules:
        return
    try:
        _import_with_cwd(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or name
        if missing == name or name.startswith(f"{missing}."):
            raise PluginError(
                f"Cannot import the plugin module {name!r} named by {where}: no such module. "
                "Install the package that provides it, or add its folder to PYTHONPATH."
            ) from None
        raise PluginError(
            f"The plugin module {name!r} named by {where} imports {missing!r}, which is not "
            f"installed. Install {missing!r}."
        ) from None
    except ConfigError:
        raise
    except Exception as exc:  # a plugin's own bug: say which plugin, keep the cause
        raise PluginError(
            f"Importing the plugin module {name!r} named by {where} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _import_with_cwd(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd = str(Path.cwd())
        top = name.split(".")[0]
        if exc.name not in (name, top) or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.import_module(name)


def load_entry_points() -> list[str]:
    """Import every installed package's ``segkit.plugins`` entry point (once per process).

    Returns:
        The entry point names loaded by this call (empty when they were loaded before).
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:
            raise PluginError(
                f"The installed plugin {ep.name!r} ({ep.value}, entry point group "
                f"{ENTRY_POINT_GROUP!r}) fails to import: {type(exc).__name__}: {exc}. "
                "Fix or uninstall the package that provides it."
            ) from exc
        if callable(target) and not isinstance(target, type):
            target()
        loaded.append(ep.name)
    if loaded:
        logger.info("loaded segkit plugins: %s", ", ".join(loaded))
    return loaded


def import_plugins(modules: Iterable[str] | None = (), where: str = "imports") -> None:
    """Load the installed entry points, then import ``modules`` (a config's ``imports``).

    Raises:
        PluginError: see :func:`import_module`.
    """
    load_entry_points()
    for name in modules or ():
        import_module(name, where)
