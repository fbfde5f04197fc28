"""Data for training and evaluation from a config: roots, splits, data sets, transforms, what training records."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from segkit.config import Config, DataConfig
from segkit.data.io import name_some, split_list_lines
from segkit.data.meta import DatasetMeta, split_ids
from segkit.errors import ConfigError, DataError, option


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


def _read_split_file(path: Path, what: str = "validation ids") -> list[str]:
    """The ids listed in a split file (a CSV with an ``id`` column)."""
    try:
        return pd.read_csv(path, dtype=str)["id"].dropna().tolist()
    except (KeyError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        fix = (
            "delete it to draw a new split, or point data.split_file elsewhere"
            if what == "validation ids"
            else "or give a text file with one id a line"
        )
        raise DataError(
            f"Split file {str(path)!r} is not a CSV with an 'id' column of {what} (as "
            f"segkit writes it). Fix it, {fix}."
        ) from None


def split_list(root: Path, split: str | None) -> tuple[Path, list[str]] | None:
    """The list file a split names and the sample ids it lists (None: the split is no file).

    A split that names a file (relative to ``root``, or absolute) is a list: one sample id a
    line (``#`` comments and blank lines left out), or a CSV with an ``id`` column
    (``.csv``, as segkit writes ``data.split_file``).

    Raises:
        DataError: a list that is not UTF-8 text or names no id.
    """
    if not split or split == ".":
        return None
    path = Path(split) if Path(split).is_absolute() else root / split
    if not path.is_file():
        return None
    if path.suffix.lower() == ".csv":
        ids = _read_split_file(path, "sample ids")
    else:  # whole lines: ids may hold spaces (BUSI's "benign (1)")
        ids = [text for _, text in split_list_lines(path)]
    if not ids:
        raise DataError(f"Split list {str(path)!r} names no sample id; give one id a line.")
    return path, ids


def _listed(ds: Any, path: Path, ids: list[str]) -> Any:
    """Keep the samples of ``ds`` that the list ``path`` names, in its order."""
    by_id = {s.id: s for s in ds.samples}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(
            f"Split list {str(path)!r} names {len(unknown)} id(s) that are not in the data set "
            f"read from the root itself: {name_some(unknown)}. Its ids look like "
            f"{name_some(list(by_id)[:3], 3)}; list those (one a line)."
        )
    ds.samples = [by_id[i] for i in dict.fromkeys(ids)]
    return ds


def _dataset(cfg: Config, root: Path, split: str | None) -> Any:
    """The config's data set adapter over ``split`` (a folder the reader knows, None or
    ``.``: the root itself, a list file: the ids it names in the root itself;
    :func:`split_list`): ``data.options`` and ``data.classes`` passed on,
    ``loss.ignore_index`` accepted in its masks, images read with ``model.in_channels``
    bands, soft targets when ``data.soft_targets``.
    """
    from segkit.data import build_dataset

    options = dict(cfg.data.options)
    if cfg.data.classes is not None:
        options["classes"] = cfg.data.classes
    listed = split_list(root, split)
    ds = build_dataset(cfg.data.dataset, root, split=None if listed else split, **options)
    if listed is not None:
        ds = _listed(ds, *listed)
    if not hasattr(ds, "read_as"):
        raise ConfigError(
            f"data.dataset {cfg.data.dataset!r}: its class {type(ds).__name__} is no segkit "
            "SegmentationDataset (docs/adding_a_dataset.md); derive it from one."
        )
    soft = cfg.data.soft_targets
    return ds.read_as(
        in_channels=cfg.model.in_channels, ignore_index=cfg.loss.ignore_index, soft=soft
    )


#: the split name that means the part of ``data.train_split`` held out for validation
HELD_OUT = "val"


def scoring_split(data: DataConfig, split: str | None, root: Path) -> str | None:
    """The split ``segkit evaluate`` scores for ``split`` (default ``data.test_split``); None:
    the part of ``data.train_split`` that training held out for validation.

    ``val`` is ``data.val_split`` when the config names one, else the held-out part (a
    warning says so when ``root`` holds a real ``val`` folder too); ``./val`` or ``val/``
    always names the folder (or list) ``val`` itself.
    """
    split = split or data.test_split
    if split.startswith("./") or (split.endswith("/") and split.strip("/")):
        return split.removeprefix("./").rstrip("/") or "."
    if split != HELD_OUT:
        return split
    if data.val_split:
        return data.val_split
    if data.train_split != HELD_OUT and _holds_folder(root, HELD_OUT):
        import warnings

        warnings.warn(
            f"Split {HELD_OUT!r} is the part of data.train_split that training held out "
            f"(data.val_split is unset), though {str(root)!r} holds a {HELD_OUT}/ folder too; "
            f"to score that folder use {option('split', './' + HELD_OUT)} (or train with "
            f"data.val_split: {HELD_OUT}).",
            stacklevel=2,
        )
    return None


def _holds_folder(root: Path, name: str) -> bool:
    """Whether ``root`` or one of its folders (Cityscapes' ``leftImg8bit/``) holds ``name/``."""
    if not root.is_dir():
        return False
    return (root / name).is_dir() or any((d / name).is_dir() for d in root.iterdir() if d.is_dir())


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
                train = repr(data.train_split) if data.train_split else "the root itself"
                raise DataError(
                    f"The {part} part of {train} in {str(root)!r} is empty after "
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
    config's statistics for ``dataset`` (:func:`_given_stats`), one value per input channel.

    Raises:
        ConfigError: bad statistics (:func:`_given_stats`), or statistics that do not fit
            ``model.in_channels``.
    """
    from segkit.data.meta import training_normalization

    aug, channels = cfg.augment, spec.in_channels
    given = _given_stats(aug, channels)
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


def _given_stats(aug: Any, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The statistics a config gives for ``augment.normalize: dataset``: those of the file
    ``augment.stats`` names (``segkit stats CONFIG --json FILE``), else ``augment.mean`` /
    ``augment.std``; None when it gives none.

    Raises:
        ConfigError: only one of mean/std; a file together with mean/std, or with another
            ``augment.normalize``; a bad file (:func:`segkit.data.bands.read_stats`); values
            that do not fit ``channels``.
    """
    from segkit.data.bands import fit_stats, read_stats

    if (aug.mean is None) != (aug.std is None):
        raise ConfigError(
            "augment.mean and augment.std go together; give both (`segkit stats CONFIG` "
            "prints them) or neither."
        )
    if aug.stats is None:
        if aug.mean is None:
            return None
        return fit_stats(aug.mean, channels, "augment.mean"), fit_stats(
            aug.std, channels, "augment.std"
        )
    if aug.mean is not None:
        raise ConfigError(
            f"augment.stats ({aug.stats!r}) and augment.mean/augment.std both give the "
            "statistics; keep one of them."
        )
    if aug.normalize != "dataset":
        raise ConfigError(
            f"augment.stats is given but augment.normalize is {aug.normalize!r}; the file's "
            "statistics are used with augment.normalize=dataset. Set it, or remove augment.stats."
        )
    mean, std = read_stats(aug.stats)
    what = f"augment.stats {str(aug.stats)!r}:"
    return fit_stats(mean, channels, f"{what} mean"), fit_stats(std, channels, f"{what} std")


def training_set(cfg: Config) -> Any:
    """The config's training data set, as training reads it but without transforms (the
    config's plugin modules imported first); what ``segkit stats`` looks at."""
    from segkit.plugins import import_plugins

    import_plugins(cfg.imports)
    return build_datasets(cfg)[0]


def channel_stats(cfg: Config, train_set: Any = None) -> dict[str, Any]:
    """Per-channel mean/std of the training images (``segkit stats``), on the input scale
    training normalises (0-1 for 8-bit and 16-bit images, values as stored for others;
    :mod:`segkit.data.bands`), NaN (no data) left out; for ``augment.mean`` / ``augment.std``
    with ``augment.normalize: dataset``. ``train_set``: the config's
    :func:`training_set`, where the caller has it already.

    Returns:
        ``mean``, ``std`` (a value per channel), ``images``, ``pixels`` (valid values per
        channel) and ``dataset``.

    Raises:
        DataError: unreadable images, a band count that is not ``model.in_channels``, or a
            channel that holds no valid value or never varies.
    """
    from segkit.data.bands import image_stats

    if train_set is None:
        train_set = training_set(cfg)
    pairs = ((train_set.pixel_values(s), s.image_path) for s in train_set.samples)
    return {**image_stats(pairs), "dataset": cfg.data.dataset}


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
