"""Dataset registry: adding a data set is one class plus one ``@register_dataset`` line.

segkit's own data sets are listed by name in :data:`BUILTIN_DATASETS` and their modules imported
when the name is first looked up, so that what never reads a data set (``segkit predict``) does
not import every reader (and albumentations, pandas, pycocotools with them). Plugins register
with the decorator as before.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from segkit.data.meta import DatasetMeta
from segkit.errors import PLUGIN_HINT, ConfigError, suggest, unknown_name

_DATASETS: dict[str, type] = {}

#: segkit's own data sets: name -> the module whose ``@register_dataset`` registers it
#: (imported on first look-up; tests/test_data_folder.py keeps the two in step)
BUILTIN_DATASETS = {
    "helen": "segkit.data.helen",
    "carvana": "segkit.data.carvana",
    "folder": "segkit.data.folder",
    "camvid": "segkit.data.formats.camvid",
    "cityscapes": "segkit.data.formats.cityscapes",
    "coco": "segkit.data.formats.coco",
    "color_masks": "segkit.data.formats.color_masks",
    "cvat_mask": "segkit.data.formats.cvat_mask",
    "labelme": "segkit.data.formats.labelme",
    "multilabel": "segkit.data.formats.multilabel",
    "raster": "segkit.data.formats.raster",
    "voc": "segkit.data.formats.voc",
    "yolo_seg": "segkit.data.formats.yolo_seg",
}

T = TypeVar("T", bound=type)


def register_dataset(name: str) -> Callable[[T], T]:
    """Class decorator that makes a dataset buildable by name.

    The class is called as ``cls(root, split=split, transform=transform, **options)``. Its
    ``meta`` (a :class:`~segkit.data.meta.DatasetMeta`) says what segkit needs to know about
    its labels (a ``SegmentationDataset`` subclass in the older style has its ``class_names``
    / ``flip_pairs`` attributes folded into it); ``register_dataset`` fills in its name.

    Example:
        >>> @register_dataset("my_set")
        ... class MySet(SegmentationDataset): ...
    """

    def decorator(cls: T) -> T:
        builtin = BUILTIN_DATASETS.get(name)
        old = _registered(name) if builtin != cls.__module__ else _DATASETS.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ConfigError(
                f"Dataset name {name!r} is already registered by {old.__module__}.{old.__name__}; "
                "pick another name."
            )
        meta = getattr(cls, "meta", None)
        cls.meta = (meta if isinstance(meta, DatasetMeta) else DatasetMeta()).replace(dataset=name)
        _DATASETS[name] = cls
        return cls

    return decorator


def _registered(name: str) -> type | None:
    """The class registered as ``name``, importing segkit's own module for it first."""
    if name not in _DATASETS and name in BUILTIN_DATASETS:
        importlib.import_module(BUILTIN_DATASETS[name])
    return _DATASETS.get(name)


def _names() -> set[str]:
    return {*_DATASETS, *BUILTIN_DATASETS}


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching an fnmatch ``pattern``, sorted (imports nothing)."""
    return sorted(n for n in _names() if fnmatch.fnmatch(n, pattern))


def get_dataset_meta(name: str) -> DatasetMeta:
    """The :class:`~segkit.data.meta.DatasetMeta` the data set ``name`` declares."""
    return get_dataset_class(name).meta


def dataset_metas() -> dict[str, DatasetMeta]:
    """Every registered data set's declared metadata, by name (imports every reader)."""
    for name in BUILTIN_DATASETS:
        _registered(name)
    return {name: cls.meta for name, cls in sorted(_DATASETS.items())}


def meta_for_classes(class_names: Sequence[str]) -> DatasetMeta:
    """The declared metadata of the registered data set with exactly these classes, else
    metadata that only knows the names (flip pairs found from left/right names).

    Used where nothing recorded the data set: ``segkit score --classes N`` and checkpoints
    written before the metadata travelled with them.
    """
    names = [str(n) for n in class_names]
    for meta in dataset_metas().values():
        if meta.classes and list(meta.classes) == names:
            return meta
    return DatasetMeta(classes=tuple(names))


def get_dataset_class(name: str) -> type:
    """The class registered as ``name``; unknown names raise ConfigError with suggestions."""
    cls = _registered(name)
    if cls is None:
        raise ConfigError(
            unknown_name("dataset", name, _names()) + " See `list_datasets()`." + PLUGIN_HINT
        )
    return cls


def build_dataset(
    name: str,
    root: str | Path,
    split: str | None = "train",
    transform: Callable[..., dict[str, Any]] | None = None,
    **options: Any,
) -> Any:
    """Build a registered dataset.

    Args:
        name: registered name (``helen``, ``carvana``, ``folder``, ...).
        root: data set root folder.
        split: split folder / subset name (``train``, ``test``, ...).
        transform: albumentations pipeline, or None for raw uint8 arrays.
        **options: further keyword arguments of the dataset class.

    Raises:
        ConfigError: unknown dataset name or unknown option (with suggestions).
    """
    cls = get_dataset_class(name)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = [p for p in params if p not in ("self", "root", "split", "transform")]
    for key in options:
        if not takes_any and key not in valid:
            hint = suggest(key, valid) or (f" Valid options: {', '.join(valid)}." if valid else "")
            raise ConfigError(f"Dataset {name!r} has no option {key!r}.{hint}")
    return cls(root, split=split, transform=transform, **options)


def step_options(step: Callable[..., Any]) -> tuple[str, ...] | None:
    """The options a data set's ``prepare`` / ``synth`` step takes: the parameters of its
    signature that have a default or are keyword-only (None: it takes any, ``**options``)."""
    params = inspect.signature(step).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return tuple(
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        or (p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not p.empty)
    )


def dataset_step(kind: str, name: str) -> Callable[..., Any]:
    """The ``prepare`` or ``synth`` step data set ``name`` declares (its ``DatasetMeta``).

    Raises:
        ConfigError: no registered data set of that name has such a step (with suggestions).
    """
    able = {n: getattr(m, kind) for n, m in dataset_metas().items() if getattr(m, kind)}
    if name not in able:
        raise ConfigError(unknown_name(f"data set with a {kind} step", name, able))
    return able[name]


def run_dataset_step(kind: str, name: str, *args: Any, **options: Any) -> Any:
    """Run data set ``name``'s ``prepare`` (``args``: src, dst) or ``synth`` (dst) step with
    ``options``, the ones the user gave (``segkit prepare`` / ``segkit synth`` options).

    Raises:
        ConfigError: no such step, or an option the step does not take; the one-line message
            names the options it takes and the data sets whose step takes the unknown one.
    """
    step = dataset_step(kind, name)
    takes = step_options(step)
    unknown = [key for key in options if takes is not None and key not in takes]
    if unknown:
        raise ConfigError(_no_such_option(kind, name, unknown[0], takes or ()))
    return step(*args, **options)


def _no_such_option(kind: str, name: str, key: str, takes: tuple[str, ...]) -> str:
    def flag(option: str) -> str:
        return "--" + option.replace("_", "-")

    others = []
    for other, meta in dataset_metas().items():
        step = getattr(meta, kind)
        if other != name and step is not None and key in (step_options(step) or ()):
            others.append(other)
    where = f" {flag(key)} applies to {', '.join(others)} only." if others else ""
    return (
        f"data set {name!r} has no {kind} option {flag(key)}; its {kind} options: "
        f"{', '.join(flag(o) for o in takes) or 'none'}.{where}"
    )
