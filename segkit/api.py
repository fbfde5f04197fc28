"""High-level library calls: build everything from a :class:`~segkit.config.Config`, train, evaluate.

These are what the CLI runs; they are equally meant for notebooks and scripts::

    from segkit.config import load_config
    from segkit.api import train
    result = train(load_config("examples/carvana_single_class/config.yaml", ["train.epochs=2"]))
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from segkit.config import Config, DataConfig, from_dict, to_dict
from segkit.data.meta import DatasetMeta, split_ids
from segkit.errors import ConfigError, DataError, option


@dataclass
class Experiment:
    """Everything :func:`train` needs, built from a config (inspect or tweak before training)."""

    cfg: Config
    train_set: Any
    val_set: Any
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    class_names: list[str]
    groups: dict[str, list[int]] | None
    meta: DatasetMeta | None = None


def _prepared_root(data: DataConfig) -> Path:
    if data.prepared_root:
        return Path(data.prepared_root)
    root = Path(data.root)
    return root.parent / f"{root.name}_prepared{data.prepare_size}"


def resolve_data_root(data: DataConfig) -> Path:
    """The folder the adapter reads: ``data.root``, or its prepared copy when ``prepare_size`` is set.

    The preparation step is the data set's own (``DatasetMeta.prepare``).
    """
    from segkit.data import dataset_metas, get_dataset_meta

    meta = get_dataset_meta(data.dataset)
    root = Path(data.root)
    if not root.exists():
        source = meta.source or "put your images and masks there"
        with_synth = [name for name, m in dataset_metas().items() if m.synth is not None]
        synth = (
            f"; or make a synthetic set there with `segkit synth {data.dataset} {root}`"
            if meta.synth is not None
            else f"; `segkit synth {'|'.join(with_synth)} DST` makes a synthetic set to try "
            "segkit on"
        )
        raise DataError(
            f"No {data.dataset!r} data: looked for data.root {str(root)!r}, which does not exist. "
            f"To use the real data, {source} (see docs/data.md), or point data.root elsewhere "
            f"(segkit train CONFIG data.root=/path; segkit evaluate --data /path){synth}."
        )
    if data.prepare_size is None:
        return root
    if meta.training_folder is None:
        able = [name for name, m in dataset_metas().items() if m.training_folder is not None]
        raise ConfigError(
            f"data.prepare_size is set, but data set {data.dataset!r} has no preparation step "
            f"(those that have one: {', '.join(able) or 'none'}). Unset data.prepare_size."
        )
    # the data set's own step: a folder already prepared at this size is used as it is
    soft = {"soft": True} if data.soft_targets else {}  # only a step that can make them
    return Path(meta.training_folder(root, _prepared_root(data), data.prepare_size, **soft))


def split_file_path(data: DataConfig, out_dir: str | Path) -> Path | None:
    """``data.split_file`` with ``{root_name}`` (the data root's folder name) and ``{out_dir}``
    (the run folder) filled in; None when there is none."""
    if not data.split_file:
        return None
    path = data.split_file.replace("{root_name}", Path(data.root).name)
    return Path(path.replace("{out_dir}", str(out_dir)))


def _held_out_ids(ds: Any, data: DataConfig, seed: int, out_dir: str | Path = ".") -> list[str]:
    """Validation ids: read from ``data.split_file`` if it exists, else a seeded split (written there)."""
    ids = [s.id for s in ds.samples]
    split_file = split_file_path(data, out_dir)
    if split_file is not None and split_file.is_file():
        val = _read_split_file(split_file)
        unknown = sorted(set(val) - set(ids))
        if unknown:
            raise DataError(
                f"Split file {str(split_file)!r} names ids not in the data set, e.g. {unknown[:5]}. "
                "Delete the file to draw a new split, or point data.split_file elsewhere."
            )
        return val
    if not 0.0 < data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {data.val_fraction}.")
    group = type(ds).meta.split_group  # e.g. all views of one car on one side
    try:
        groups = [group(i) for i in ids] if group is not None else None
        _, val = split_ids(ids, data.val_fraction, seed, groups)
    except DataError:  # one group only: no val_fraction can split it
        raise DataError(
            f"Cannot hold out validation samples from the {len(ids)} of data.root "
            f"{str(data.root)!r}: the {data.dataset} data set keeps related samples (such as "
            "one car's views) on one side of the split, and these are all one group. Add "
            "samples of another group, or set data.val_split to a split of its own."
        ) from None
    except ValueError as exc:  # scikit-learn: one side of the split would be empty
        raise ConfigError(
            f"data.val_fraction={data.val_fraction} cannot split {len(ids)} samples into training "
            f"and validation ({exc}). Choose another data.val_fraction, or more data."
        ) from None
    val = sorted(val)
    if split_file is not None:
        split_file.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"id": val}).to_csv(split_file, index=False)
    return val


def _read_split_file(path: Path) -> list[str]:
    """The validation ids listed in a split file (a CSV with an ``id`` column)."""
    try:
        return pd.read_csv(path, dtype=str)["id"].dropna().tolist()
    except (KeyError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        raise DataError(
            f"Split file {str(path)!r} is not a CSV with an 'id' column of validation ids (as "
            "segkit writes it). Fix it, delete it to draw a new split, or point data.split_file "
            "elsewhere."
        ) from None


def _dataset(cfg: Config, root: Path, split: str) -> Any:
    """The config's data set adapter over ``split``: ``data.options`` and ``data.classes``
    passed on, ``loss.ignore_index`` accepted in its masks, images read with
    ``model.in_channels`` bands, soft targets when ``data.soft_targets``.
    """
    from segkit.data import build_dataset

    options = dict(cfg.data.options)
    if cfg.data.classes is not None:
        options["classes"] = cfg.data.classes
    ds = build_dataset(cfg.data.dataset, root, split=split, **options)
    if not hasattr(ds, "read_as"):
        raise ConfigError(
            f"data.dataset {cfg.data.dataset!r}: its class {type(ds).__name__} is no segkit "
            "SegmentationDataset (docs/adding_a_dataset.md); derive it from one."
        )
    soft = cfg.data.soft_targets
    return ds.read_as(
        in_channels=cfg.model.in_channels, ignore_index=cfg.loss.ignore_index, soft=soft
    )


def _keep(ds: Any, ids: set[str], keep: bool) -> Any:
    ds.samples = [s for s in ds.samples if (s.id in ids) == keep]
    return ds


def build_datasets(cfg: Config, root: Path | None = None) -> tuple[Any, Any]:
    """Train and validation data sets (without transforms) as the config describes."""

    data = cfg.data
    root = root or resolve_data_root(data)
    train_set = _dataset(cfg, root, data.train_split)
    if data.val_split:
        val_set = _dataset(cfg, root, data.val_split)
    else:
        val_ids = set(_held_out_ids(train_set, data, cfg.train.seed, cfg.train.out_dir))
        val_set = _dataset(cfg, root, data.train_split)
        _keep(train_set, val_ids, keep=False)
        _keep(val_set, val_ids, keep=True)
        for part, ds in (("training", train_set), ("validation", val_set)):
            if not ds.samples:
                source = (
                    f"split file {data.split_file!r}" if data.split_file else "data.val_fraction"
                )
                raise DataError(
                    f"The {part} part of {data.train_split!r} in {str(root)!r} is empty after "
                    f"holding out validation samples by {source}. Hold out fewer samples "
                    "(data.val_fraction, or fewer ids in the split file)."
                )
    return train_set, val_set


def attach_transforms(
    cfg: Config,
    train_set: Any,
    val_set: Any,
    spec: Any,
    flip_pairs: list[tuple[int, int]] | None = None,
) -> None:
    """Set the albumentations pipelines on both data sets.

    Images are normalised with ``spec.mean`` / ``spec.std``, the one record of what the model
    is fed (:func:`build_experiment` writes ``augment.normalize``'s choice there), and meet
    the square input as ``spec.options["resize"]`` says (``data.resize``; loading fills in
    ``squash``, what training did, for checkpoints from before it was recorded);
    flips swap ``flip_pairs`` (default: the training set's). 8-bit RGB images are divided
    by 255 there; band images come on their input scale already (:mod:`segkit.data.bands`).
    """
    from segkit.data import build_transforms

    if flip_pairs is None:
        flip_pairs = list(getattr(train_set, "flip_pairs", ()) or ())
    size, ignore, crop = cfg.data.image_size, train_set.ignore_index, cfg.data.crop
    resize = spec.options["resize"]  # recorded by training; loading fills it in (squash)
    if crop is not None:
        check_crop_size(crop.size, spec)
    rgb8 = getattr(train_set, "band_reader", lambda: None)() is None
    for ds, train in ((train_set, True), (val_set, False)):
        ds.transform = build_transforms(
            cfg.augment,
            size,
            train,
            spec.mean,
            spec.std,
            flip_pairs=flip_pairs,
            ignore_index=ignore,
            resize=resize,
            crop=crop,
            max_pixel_value=255.0 if rgb8 else 1.0,
            soft=cfg.data.soft_targets,
        )


def check_crop_size(size: int, spec: Any) -> None:
    """Refuse a crop (and window) side the model cannot take: not a multiple of its divisor.

    Raises:
        ConfigError: names the size, the divisor and the nearest sizes that work.
    """
    divisor = spec.divisor or 1
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1 and size % divisor:
        lower = max(divisor, size // divisor * divisor)
        raise ConfigError(
            f"data.crop.size={size} is not a multiple of {divisor}, which {spec.arch} needs "
            f"(its input sides must divide by {divisor}); use {lower} or {lower + divisor}."
        )


def validation_windows(cfg: Config, spec: Any) -> Any:
    """What validation wraps the model in when training on crops: whole images in the windows
    of the model's recipe (``data.crop.size`` at ``data.crop.scale``, as recorded in ``spec``
    for prediction), ``data.batch_size`` per call; None without ``data.crop``."""
    if cfg.data.crop is None:
        return None
    from segkit.inference import PredictOptions
    from segkit.inference.recipe import Recipe
    from segkit.models.windows import ScaledWindows

    windows = Recipe.make(spec, PredictOptions(batch_size=cfg.data.batch_size)).windows

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        return ScaledWindows(model, windows)

    return wrap


def check_resize(data: DataConfig) -> str:
    """``data.resize`` if training can use it with the rest of ``data``.

    Raises:
        ConfigError: an unknown mode, or one that keeps the aspect together with
            ``data.prepare_size`` (preparation stores squashed square copies).
    """
    from segkit.data.resize import check_resize_mode

    resize = check_resize_mode(data.resize)
    if resize != "squash" and data.prepare_size is not None:
        raise ConfigError(
            f"data.resize={resize} keeps each image's aspect, but data.prepare_size="
            f"{data.prepare_size} prepares square (squashed) copies to train on, while "
            "prediction reads the originals. Unset data.prepare_size, or use data.resize=squash."
        )
    return resize


def check_crop_config(data: DataConfig) -> None:
    """``data.crop``'s values, and that nothing else in ``data`` contradicts it.

    Raises:
        ConfigError: a bad crop value (:func:`segkit.data.check_crop`), or ``data.crop``
            together with ``data.prepare_size`` (preparation stores small square copies).
    """
    if data.crop is None:
        return
    from segkit.data import check_crop

    check_crop(data.crop)
    if data.prepare_size is not None:
        raise ConfigError(
            "data.crop trains on crops of the images at their native size (times "
            f"data.crop.scale), but data.prepare_size={data.prepare_size} prepares small square "
            "copies to train on. Unset data.prepare_size (or data.crop)."
        )


def build_experiment(cfg: Config) -> Experiment:
    """Data sets, model, loss and optimizer for a config."""
    from segkit.engine import seed_everything
    from segkit.losses import build_loss
    from segkit.models import model_from_config
    from segkit.optim import build_optimizer
    from segkit.plugins import import_plugins

    check_resize(cfg.data)  # before any data is read or prepared
    check_crop_config(cfg.data)
    import_plugins(cfg.imports)
    train_set, val_set = build_datasets(cfg)
    class_names = list(train_set.class_names)
    meta: DatasetMeta = train_set.metadata()
    # train.seed decides the initial weights too, not whatever drew from torch's RNG before
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = model_from_config(cfg.model, class_names, multilabel=meta.multilabel)
    record_training_data(model.spec, cfg, meta)
    attach_transforms(cfg, train_set, val_set, model.spec)
    lc = cfg.loss
    loss = build_loss(
        lc.name,
        smooth=lc.smooth,
        ignore_index=meta.ignore_index,
        class_weights=lc.class_weights,
        mode="multilabel" if meta.multilabel else None,
        **lc.options,
    )
    if cfg.data.soft_targets and not getattr(loss, "accepts_soft", False):
        raise ConfigError(
            f"loss.name {lc.name!r} takes integer labels, but data.soft_targets gives float "
            "coverage targets: use soft_dice, bce or ce (or a sum of them), or unset "
            "data.soft_targets."
        )
    return Experiment(
        cfg,
        train_set,
        val_set,
        model,
        loss,
        build_optimizer(cfg.optim, model),
        class_names,
        meta.groups_for(class_names),
        meta,
    )


def record_training_data(spec: Any, cfg: Config, meta: DatasetMeta) -> None:
    """Write into a new model's spec what prediction must repeat: the mean/std the images are
    normalised with (``augment.normalize``), the training image size and resize mode
    (``data.resize``), the data set's metadata and the plugin modules the run imported.

    Raises:
        ConfigError: a bad ``data.resize`` (:func:`check_resize`).
    """
    resize = check_resize(cfg.data)

    mean, std = _normalization(cfg, spec, meta)
    spec.mean, spec.std = tuple(mean), tuple(std)
    spec.options.setdefault("image_size", cfg.data.image_size)
    spec.options["resize"] = resize
    crop = cfg.data.crop
    if crop is not None:  # prediction runs whole images at this scale in windows of this size
        spec.options["crop"] = {"size": crop.size, "scale": crop.scale, "overlap": crop.overlap}
    spec.meta = meta.to_dict()
    spec.imports = modules_of(cfg.imports, cfg.data.dataset, spec.arch, cfg.loss.name)


def _outside(module: str | None) -> bool:
    """Whether ``module`` is a user module that a later process could import by name."""
    return bool(module) and module != "__main__" and module.split(".")[0] != "segkit"


def modules_of(
    imports: Iterable[str], dataset: str | None, arch: str | None, loss: str | None
) -> list[str]:
    """The modules a trained model needs imported to be rebuilt and evaluated: the config's
    ``imports`` plus the modules that registered its data set, architecture and loss terms
    (segkit's own and ``__main__`` left out), in that order, without repeats.
    """
    from segkit.data.registry import get_dataset_class
    from segkit.losses import loss_modules
    from segkit.models import get_model_entry

    found = list(imports or ())
    if dataset:
        found.append(get_dataset_class(dataset).__module__)
    if arch:
        found.append(get_model_entry(arch).builder.__module__)
    if loss:
        found += loss_modules(loss)
    return [m for m in dict.fromkeys(found) if _outside(m)]


def _normalization(
    cfg: Config, spec: Any, meta: DatasetMeta
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std training normalises with: ``augment.normalize``'s choice, with the
    config's ``augment.mean``/``augment.std`` for ``dataset``, one value per input channel.

    Raises:
        ConfigError: only one of mean/std, or statistics that do not fit ``model.in_channels``.
    """
    from segkit.data.bands import fit_stats
    from segkit.data.meta import training_normalization

    aug, channels = cfg.augment, spec.in_channels
    if (aug.mean is None) != (aug.std is None):
        raise ConfigError(
            "augment.mean and augment.std go together; give both (`segkit stats CONFIG` "
            "prints them) or neither."
        )
    given = None
    if aug.mean is not None and aug.std is not None:
        given = (
            fit_stats(aug.mean, channels, "augment.mean"),
            fit_stats(aug.std, channels, "augment.std"),
        )
    mean, std = training_normalization(aug.normalize, spec.mean, spec.std, meta, given)
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    if aug.normalize == "dataset":
        raise ConfigError(
            f"The data set's mean/std have {len(mean)} values but model.in_channels is "
            f"{channels}; give augment.mean/augment.std (`segkit stats CONFIG`)."
        )
    # 3-channel statistics (ImageNet's, x / 255) repeat over more input channels
    return tuple(mean[i % len(mean)] for i in range(channels)), tuple(
        std[i % len(std)] for i in range(channels)
    )


def channel_stats(cfg: Config) -> dict[str, Any]:
    """Per-channel mean/std of the training images (``segkit stats``), on the input scale
    training normalises (0-1 for 8-bit and 16-bit images, values as stored for others;
    :mod:`segkit.data.bands`), NaN (no data) left out; for ``augment.mean`` / ``augment.std``
    with ``augment.normalize: dataset``.

    Returns:
        ``mean``, ``std`` (a value per channel), ``images``, ``pixels`` (valid values per
        channel) and ``dataset``.

    Raises:
        DataError: unreadable images, a band count that is not ``model.in_channels``, or a
            channel that holds no valid value or never varies.
    """
    from segkit.data.bands import image_stats
    from segkit.plugins import import_plugins

    import_plugins(cfg.imports)
    train_set, _ = build_datasets(cfg)
    pairs = ((train_set.pixel_values(s), s.image_path) for s in train_set.samples)
    return {**image_stats(pairs), "dataset": cfg.data.dataset}


def train(
    cfg: Config, resume: str | Path | bool | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Train as the config says; returns the Trainer's summary (best value, paths).

    ``resume`` continues a run (True: ``last.pt`` of ``train.out_dir``); ``overwrite`` replaces
    an earlier run in ``train.out_dir``, which is refused otherwise.
    """
    from segkit.engine import Trainer, TrainerOptions, make_loader

    if overwrite and not resume:
        _forget_earlier_split(cfg)
    exp = build_experiment(cfg)
    report_data(exp.train_set, exp.val_set)
    d = cfg.data
    workers = {"num_workers": d.num_workers, "persistent_workers": d.persistent_workers}
    train_loader = make_loader(
        exp.train_set,
        d.batch_size,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=len(exp.train_set) > d.batch_size,
        **workers,
    )
    # with crops, validation sees whole images at their own (maybe differing) sizes: one a batch
    val_batch = 1 if d.crop is not None else d.batch_size
    val_loader = make_loader(exp.val_set, val_batch, shuffle=False, seed=cfg.train.seed, **workers)
    trainer = Trainer(
        exp.model,
        exp.loss,
        exp.optimizer,
        train_loader,
        val_loader,
        cfg=cfg.train,
        options=TrainerOptions(
            scheduler=cfg.scheduler,
            class_names=exp.class_names,
            groups=exp.groups,
            full_config=to_dict(cfg),
            val_wrapper=validation_windows(cfg, exp.model.spec),
        ),
        hooks=_optional_hooks(cfg),
    )
    if exp.meta is not None and exp.meta.thresholds is not None:  # multi-label validation
        trainer.evaluator.thresholds = list(exp.meta.thresholds)
    return trainer.fit(resume=resume, overwrite=overwrite)


def report_data(train_set: Any, val_set: Any) -> None:
    """Print the split sizes and the sampled ignored-pixel fraction, and warn about a
    validation split that shares training images or masks that are mostly ignored
    (:func:`segkit.data.checks.check_splits`); on the main process only."""
    import warnings

    from segkit.data.checks import check_splits
    from segkit.engine.distributed import process_rank

    if process_rank() != 0:
        return
    report = check_splits(train_set, val_set)
    print(report.line(), flush=True)
    for line in report.warnings:
        warnings.warn(line, stacklevel=2)


def _forget_earlier_split(cfg: Config) -> None:
    """On overwrite, remove the held-out ids an earlier run wrote into its run folder.

    They belong to that run (perhaps drawn from other data): the new run draws its own.
    A split file outside the run folder is the user's and is kept.
    """
    from segkit.engine.run_folder import RUN_FILES

    out_dir = Path(cfg.train.out_dir)
    if not (cfg.data.split_file or "").startswith("{out_dir}"):
        return
    if any((out_dir / name).exists() for name in RUN_FILES):
        split_file = split_file_path(cfg.data, out_dir)
        if split_file is not None:
            split_file.unlink(missing_ok=True)


def _optional_hooks(cfg: Config) -> list[Any]:
    """Hooks a config asks for beyond the built-in ones (encoder freezing)."""
    from segkit.engine.schedulers import freeze_encoder_hook

    epochs = cfg.optim.freeze_encoder_epochs
    if epochs < 0:
        raise ConfigError(f"optim.freeze_encoder_epochs must be >= 0, got {epochs}.")
    return [freeze_encoder_hook(epochs)] if epochs else []


def config_from_checkpoint(ckpt: dict[str, Any]) -> Config:
    """The training config stored in a checkpoint (:func:`segkit.engine.load_checkpoint`'s
    result; defaults where it holds none)."""
    raw = ckpt["config"]  # {} where none was stored
    return from_dict(Config, raw) if raw else Config()


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
    """Score a checkpoint on a split (``"val"``: training's held-out part); the metric dict
    (per-class and grouped F1, IoU, ...), also written as JSON to ``json_out`` (with the
    confusion matrix and its class names). ``report``: a folder for the report page
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
    split = split or cfg.data.test_split
    if split == "val" and cfg.data.val_split:  # the split training validated on
        split = cfg.data.val_split
    if split == "val" and not cfg.data.val_split:
        _, ds = build_datasets(cfg)
    else:
        ds = _dataset(cfg, resolve_data_root(cfg.data), split)
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


@dataclass(frozen=True)
class ScoreLabels:
    """What ``segkit score`` scores label folders as.

    Attributes:
        names: class names (numbers when nothing names them).
        groups: report groups, or None.
        ignore_index: the ground-truth value left out (a data set's or checkpoint's recorded
            one, 255 beside other labels, or the caller's), or None.
        note: how they were chosen (printed by ``segkit score``), or None.
        reduce_zero_label: the checkpoint was trained with ``reduce_zero_label`` (labels
            1..N are its classes, 0 is left out): both folders are read that way.
    """

    names: list[str]
    groups: dict[str, list[int]] | None = None
    ignore_index: int | None = None
    note: str | None = None
    reduce_zero_label: bool = False


def class_labels(classes: str) -> ScoreLabels:
    """Class names, report groups and ignore index for ``segkit score --classes``: a registered
    data set's label set, a class count, a checkpoint (``.pt``; what its training recorded) or
    a file of names (one per line).

    Raises:
        SegkitError: ``classes`` is none of these.
    """
    from segkit.data import dataset_metas
    from segkit.data.registry import meta_for_classes
    from segkit.errors import SegkitError

    metas = dataset_metas()
    if classes in metas and metas[classes].classes:
        meta = metas[classes]
        return ScoreLabels(list(meta.classes), meta.groups_for(meta.classes), meta.ignore_index)
    if classes.isdigit():
        return ScoreLabels([str(i) for i in range(int(classes))])
    path = Path(classes)
    if path.suffix == ".pt" and path.is_file():
        from segkit.engine.checkpoint import recorded_classes

        names, meta = recorded_classes(path)
        reduce = bool((meta.labels or {}).get("reduce_zero_label"))
        return ScoreLabels(names, meta.groups_for(names), meta.ignore_index, None, reduce)
    if not path.is_file():
        named = ", ".join(n for n, m in metas.items() if m.classes)
        raise SegkitError(
            f"--classes {classes!r} is neither a data set with a fixed label set ({named}), a "
            "number, a checkpoint (.pt) nor a file of class names (one per line)."
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    meta = meta_for_classes(names)
    return ScoreLabels(names, meta.groups_for(names), meta.ignore_index)


def labels_in_folders(gt_dir: str | Path, pred_dir: str | Path) -> ScoreLabels:
    """Without ``--classes``: the class count the label folders show, named as the one
    registered data set with that many classes when there is exactly one; 255 beside other
    labels in the ground truth is left out (a boundary label). The note says how.
    """
    from segkit.data import dataset_metas
    from segkit.metrics import label_values

    count, seen = label_values(gt_dir)  # seen: 255 beside other labels in the ground truth
    count = max(count, label_values(pred_dir)[0])
    fits = sorted(n for n, m in dataset_metas().items() if len(m.classes) == count > 2)
    found = class_labels(fits[0]) if len(fits) == 1 else ScoreLabels(list(map(str, range(count))))
    ignore = found.ignore_index if found.ignore_index is not None else seen
    if len(fits) == 1:
        note = f"scoring as {fits[0]!r}: its {count} classes (--classes chooses others)"
    elif fits:  # several data sets have that many classes: guessing one would mislabel the rest
        note = (
            f"scoring {count} classes found in the labels (data sets with {count} classes: "
            f"{', '.join(fits)}; name them with {' or '.join(f'--classes {n}' for n in fits)})"
        )
    else:
        note = f"scoring {count} classes found in the labels (--classes names them)"
    if seen is not None:
        note += f"; ground-truth value {ignore} left out (--ignore-index chooses another)"
    return ScoreLabels(found.names, found.groups, ignore, note)


def score(
    gt_dir: str | Path,
    pred_dir: str | Path,
    classes: str | None = None,
    ignore_index: int | None = None,
) -> tuple[dict[str, float], str | None]:
    """``segkit score``: score a folder of predicted label maps against ground truth.

    Args:
        gt_dir: folder of ground-truth label images.
        pred_dir: folder of predictions, paired by file name.
        classes: what the labels mean (:func:`class_labels`); None: what the folders show
            (:func:`labels_in_folders`).
        ignore_index: the ground-truth value to leave out; None: the data set's or
            checkpoint's recorded one (or 255 beside other labels when ``classes`` is None).

    Returns:
        :func:`~segkit.metrics.score_folders`' dict, and the line saying how the classes were
        chosen (None when ``classes`` was given).
    """
    from segkit.metrics import score_folders

    if classes is None:
        labels = labels_in_folders(gt_dir, pred_dir)
    else:
        labels = class_labels(classes)
    ignore = ignore_index if ignore_index is not None else labels.ignore_index
    reduce = labels.reduce_zero_label
    result = score_folders(
        gt_dir, pred_dir, labels.names, labels.groups, ignore, reduce_zero_label=reduce
    )
    return result, labels.note
