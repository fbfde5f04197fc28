"""Evaluation of a checkpoint: the Predictor plus a scorer (:func:`evaluate`), and its JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from segkit.api.data import _dataset, build_datasets, resolve_data_root, scoring_split
from segkit.api.training import config_from_checkpoint
from segkit.config import Config
from segkit.data.meta import DatasetMeta
from segkit.errors import ConfigError, option

#: the options ``evaluate`` takes beside its own (``PredictOptions`` fields)
SCORING_OPTIONS = (
    "tile",
    "overlap",
    "blend",
    "tta",
    "threshold",
    "batch_size",
    "size",
    "flip_pairs",
    "runtime",
    "precision",
)


def evaluate(
    checkpoint: str | Path,
    root: str | Path | None = None,
    split: str | None = None,
    options: Any = None,
    *,
    device: str = "auto",
    json_out: str | Path | None = None,
    num_workers: int | None = None,
    report: str | Path | None = None,
    report_n: int = 8,
    boundary: float | None = None,
    **predict_options: Any,
) -> dict[str, Any]:
    """Score a checkpoint on a split (``"val"``: ``data.val_split``, or without one training's
    held-out part; ``"./val"``: the folder itself; :func:`~segkit.api.data.scoring_split`);
    the metric dict (per-class and grouped F1, IoU, ...), also written as JSON to ``json_out``
    (with the confusion matrix and its class names). ``report``: a folder for the report page
    (:mod:`segkit.inference.report`; ``report_n`` worst and best images); ``boundary``: a
    pixel tolerance for boundary IoU, boundary F and HD95 (needs ``report``).

    A :class:`~segkit.inference.Predictor` with ``options`` (or :data:`SCORING_OPTIONS` by
    name: ``tile``, ``overlap``, ``blend``, ``tta``, ``threshold`` (multi-label models),
    ``runtime``, ``precision``, ``batch_size``: default ``data.batch_size``) plus a scorer counting each image
    (:class:`~segkit.inference.scoring.Scorer`): in windows (``tile``; always for a model
    trained on ``data.crop``) at each image's own size, else at the training size.
    """
    from segkit.engine import load_checkpoint, make_loader
    from segkit.inference.report import open_report
    from segkit.inference.scoring import Scorer

    batch_size = predict_options.pop("batch_size", None)
    opts = options if options is not None else _scoring_options(predict_options)
    if json_out is not None:
        check_json_path(json_out)  # before the evaluation, not after it
    if boundary is not None and report is None:
        raise ConfigError(
            f"{option('boundary', boundary)}: boundary metrics are computed for the report; "
            "add --report DIR (report= in Python)."
        )
    state = load_checkpoint(checkpoint)  # read once: the config and the model
    cfg = _evaluation_config(state, root)
    if options is None:  # windows (or images) per call: the config's unless given
        opts = dataclasses.replace(opts, batch_size=batch_size or cfg.data.batch_size)
    predictor = _predictor(state, checkpoint, opts, device)
    ds, evaluator = _evaluation_set(cfg, split, predictor)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    batches = 1 if predictor.recipe.windows is not None else opts.batch_size
    loader = make_loader(ds, batches, False, num_workers=workers, seed=cfg.train.seed)
    page = None
    if report is not None:
        about = _about(checkpoint, cfg, split, opts, predictor)
        page = open_report(report, predictor, evaluator, about, n=report_n, boundary=boundary)
    result = _score(Scorer(predictor, evaluator), loader, page)
    if page is not None:
        page.write(result, Path(checkpoint).parent / "history.csv")
        result.update(page.boundary_means())
    if json_out is not None:
        write_json(json_out, {**result, "confusion": _confusion(evaluator)})
    return result


def _confusion(evaluator: Any) -> dict[str, list]:
    """The data set's confusion matrix (rows truth) and its class names, for the JSON."""
    cm = evaluator.cm
    return {"classes": list(cm.class_names), "matrix": cm.matrix.tolist()}


def _score(scorer: Any, loader: Any, page: Any) -> dict[str, float]:
    """The scorer's metrics of ``loader``, each image also handed to the report ``page``
    (None: none), whose per-image table is closed however scoring ends."""
    scorer.on_image = page.add if page is not None else None
    try:
        return {k: float(v) for k, v in scorer.score(loader).items()}
    finally:
        if page is not None:
            page.close()


def _about(checkpoint: Any, cfg: Config, split: str | None, opts: Any, predictor: Any) -> dict:
    """What was evaluated, for the report page."""
    import datetime
    import os
    import platform

    recipe = predictor.recipe
    windows = recipe.windows
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "data": str(cfg.data.root),
        "split": split or cfg.data.test_split,
        "size": (
            f"windows of {windows.tile} px (overlap {windows.overlap}), each image at its own size"
            if windows is not None
            else f"{recipe.size}x{recipe.size} (resize: {recipe.resize}), not each image's own size"
        ),
        "TTA": str(recipe.tta) if recipe.tta is not None else "none",
        "options": repr(opts),
        "device": str(predictor.device),
        "machine": f"{platform.node()}: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _scoring_options(given: dict[str, Any]) -> Any:
    """``PredictOptions`` of ``evaluate``'s keyword options (checked before the checkpoint is
    read); an unknown name is a ConfigError naming the closest."""
    from segkit.errors import unknown_name
    from segkit.inference import PredictOptions

    for name in given:
        if name not in SCORING_OPTIONS:
            raise ConfigError(unknown_name("evaluate option", name, list(SCORING_OPTIONS)))
    return PredictOptions(**given)


def _predictor(state: dict[str, Any], checkpoint: str | Path, opts: Any, device: str) -> Any:
    """The Predictor of a checkpoint already read (a threshold only for multi-label models)."""
    from segkit.engine.checkpoint import model_from_state
    from segkit.engine.distributed import resolve_device
    from segkit.inference import Predictor
    from segkit.inference.scoring import refuse_threshold

    model = model_from_state(state, checkpoint)
    refuse_threshold(model.spec, opts.threshold)
    return Predictor(model, opts, str(resolve_device(device)), source=checkpoint)


def _evaluation_config(state: dict[str, Any], root: str | Path | None) -> Config:
    """The training config a checkpoint holds, its plugins imported, reading ``root``."""
    from segkit.plugins import import_plugins

    cfg = config_from_checkpoint(state)
    import_plugins(cfg.imports)
    if root is not None:
        cfg.data.root = str(root)
        cfg.data.prepared_root = None
    return cfg


def _evaluation_set(cfg: Config, split: str | None, predictor: Any) -> tuple[Any, Any]:
    """The data set to score (``split``, default ``data.test_split``) as the predictor's
    recipe reads it, and the evaluator for it (the classes, groups and ignore index training
    recorded)."""
    from segkit.engine import Evaluator

    spec, recipe = predictor.spec, predictor.recipe
    meta = DatasetMeta.from_dict(spec.meta or {})  # what training recorded (or loading found)
    cfg.loss.ignore_index = meta.ignore_index
    root = resolve_data_root(cfg.data)
    split = scoring_split(cfg.data, split, root)
    if split is None:  # the part of the training split that training held out
        _, ds = build_datasets(cfg, root)
    else:
        ds = _dataset(cfg, root, None if split == "." else split)
    names = list(spec.class_names or ds.class_names)
    # in windows: images and masks as read (windows are normalised one by one)
    ds.transform = None if recipe.windows is not None else _scoring_transform(cfg, ds, recipe)
    multilabel = True if meta.multilabel else None
    groups, thresholds = meta.groups_for(names), recipe.thresholds
    evaluator = Evaluator(
        names, groups, meta.ignore_index, multilabel=multilabel, thresholds=thresholds
    )
    return ds, evaluator


def _scoring_transform(cfg: Config, ds: Any, recipe: Any) -> Any:
    """Validation's transform with the recipe's size, resize, mean and std: for the same
    array, bit for bit the tensor the Predictor feeds its model."""
    from segkit.data import build_transforms

    rgb8 = getattr(ds, "band_reader", lambda: None)() is None
    return build_transforms(
        cfg.augment,
        recipe.size or cfg.data.image_size,
        False,
        recipe.mean,
        recipe.std,
        flip_pairs=recipe.flip_pairs,
        ignore_index=ds.ignore_index,
        resize=recipe.resize,
        crop=cfg.data.crop,
        max_pixel_value=255.0 if rgb8 else 1.0,
        soft=cfg.data.soft_targets,
    )


def check_json_path(path: str | Path) -> Path:
    """``path`` if it is a fit name for a JSON report: it must end in ``.json``.

    Anything else could be an input of the same command (a checkpoint, a label map) that the
    report would replace.

    Raises:
        ConfigError: the name does not end in ``.json``, or names a folder.
    """
    path = Path(path)
    if path.suffix.lower() != ".json" or path.is_dir():
        raise ConfigError(
            f"--json {str(path)!r}: the report is written as JSON and would replace that "
            "file; give a new name ending in .json (e.g. metrics.json)."
        )
    return path


def write_json(path: str | Path, result: dict[str, Any]) -> Path:
    """Write a metric dict as indented JSON, atomically (see :func:`check_json_path`).

    An undefined score (NaN: a class never predicted, say) is written as ``null``, since
    ``NaN`` is not JSON and strict readers refuse the file.
    """
    from segkit.data.io import write_bytes_atomic

    path = check_json_path(path)
    plain = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}
    write_bytes_atomic(path, json.dumps(plain, indent=2, allow_nan=False).encode())
    return path
