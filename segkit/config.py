"""Typed configuration: dataclasses, YAML loading and dotted ``key=value`` overrides.

A config file maps onto :class:`Config`. Unknown keys are errors that suggest the
closest valid key; paths are resolved relative to the config file. Values are read as
YAML, except that a ``str`` field keeps the text as written (``amp: off`` is "off", not
False; ``train_split: 07`` is "07", not 7).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segkit._yaml import DuplicateKey, Scalar, is_null, load_yaml, plain
from segkit.errors import ConfigError, suggest


@dataclass
class AugmentConfig:
    """Training-time augmentation; validation only resizes and normalises."""

    hflip: float = 0.5  #: horizontal flip probability (label-aware where the data has flip pairs)
    vflip: float = 0.0  #: probability of a vertical flip
    affine: float = 0.0  #: probability of a light shift/scale/rotate
    scale: float = 0.1  #: scale range of the light affine (1 +- scale)
    rotate: float = 10.0  #: rotation range of the light affine, in degrees
    color: float = 0.0  #: probability of brightness/contrast/saturation/hue jitter
    hue: float = 0.02  #: hue shift range of that jitter, a fraction of the colour wheel (<= 0.5)
    normalize: str = "model"  #: model (what it expects), imagenet, none (x/255) or dataset
    mean: list[float] | None = None  #: normalize=dataset: per-channel mean (from `segkit stats`)
    std: list[float] | None = None  #: normalize=dataset: per-channel std (from `segkit stats`)
    stats: str | None = None  #: normalize=dataset: mean/std from `segkit stats --json FILE`


@dataclass
class CropConfig:
    """Training on random crops at native resolution (times ``scale``); validation in windows."""

    size: int = 512  #: side of the square training crop and of the windows validation predicts in
    scale: float = 1.0  #: images are used at this factor of their native size (0.5: half)
    jitter: list[float] = field(default_factory=[1.0, 1.0].copy)  #: random scale [low, high]
    foreground: float = 0.0  #: probability that a crop is placed on a labelled (non-0) pixel
    overlap: float = 0.25  #: fraction of a window that neighbouring validation windows share


@dataclass
class DataConfig:
    """Where the data is and how it is read."""

    dataset: str = "helen"  #: registered data set name: helen, carvana, folder, ...
    root: str = "data/helenstar_release"  #: data set root (relative to the config file)
    train_split: str | None = "train"  #: split that is trained on (null: the root itself)
    val_split: str | None = None  #: split used for validation; None: hold out val_fraction of train
    test_split: str = "test"  #: split `segkit evaluate` scores by default (val: held out)
    val_fraction: float = 0.1  #: part of train held out when there is no val_split
    split_file: str | None = None  #: CSV of held-out ids; {out_dir}: run folder, {root_name}: data
    image_size: int = 256  #: square side the images are resized to (when crop is null)
    resize: str = "squash"  #: squash (to a square), longest_side_pad or shortest_side_crop
    crop: CropConfig | None = None  #: train on random crops, e.g. {size: 512, scale: 0.5}
    prepare_size: int | None = None  #: carvana: prepare (resize + PNG masks) to this size first
    prepared_root: str | None = None  #: where prepared data goes (default: <root>_prepared<size>)
    soft_targets: bool = False  #: binary: float coverage targets in 0..1 (carvana: prepare --soft)
    batch_size: int = 10  #: images per batch
    num_workers: int = 2  #: DataLoader worker processes
    persistent_workers: bool = False  #: keep workers between epochs (resume then not exact)
    sampler: str | None = None  #: rare_classes: draw rare-class images more often; null: shuffle
    classes: list[str] | int | None = None  #: class names, a count, or a names file (.txt/.names)
    options: dict[str, Any] = field(default_factory=dict)  #: extra adapter keyword arguments


@dataclass
class ModelConfig:
    """Which network to build; see `segkit models` and `segkit encoders`."""

    arch: str = "smp.Unet"  #: "unet" (from scratch) or "smp.<Architecture>"
    encoder: str | None = "resnet18"  #: smp encoder name, "tu-<timm name>"; null for unet
    encoder_weights: str | None = None  #: None, "imagenet" or a path to a local weights file
    in_channels: int = 3  #: input bands; not 3: images are read with their own bands and depth
    base_channels: int = 64  #: width of the from-scratch U-Net
    upsample: str = "transpose"  #: from-scratch U-Net upsampling: "transpose" or "bilinear"
    options: dict[str, Any] = field(default_factory=dict)  #: extra architecture keyword arguments


@dataclass
class LossConfig:
    """The loss, by name or as a weighted sum such as ``"ce + dice"``."""

    name: str = "soft_dice"  #: soft_dice, dice, ce, bce or a sum such as "ce + 0.5*dice"
    smooth: float = 1.0  #: Dice smoothing term
    ignore_index: int | None = None  #: label value (e.g. 255) left out of loss and metrics
    class_weights: list[float] | str | None = None  #: a list, or auto, median_frequency, inverse
    options: dict[str, Any] = field(default_factory=dict)  #: term options, e.g. gamma: 2


@dataclass
class OptimConfig:
    """Optimizer settings (see segkit.optim: list_optimizers(), register_optimizer)."""

    name: str = "adam"  #: adam, adamw, sgd or a registered name
    lr: float = 1e-3  #: learning rate
    weight_decay: float = 0.0  #: L2 / decoupled weight decay
    momentum: float = 0.9  #: sgd only
    decay_norm_bias: bool = False  #: also decay biases and norm weights (before 0.2: always)
    encoder_lr_mult: float = 1.0  #: the encoder's learning rate is lr times this
    freeze_encoder_epochs: int = 0  #: keep the encoder frozen for this many epochs
    options: dict[str, Any] = field(default_factory=dict)  #: optimizer keywords, e.g. betas


@dataclass
class SchedulerConfig:
    """Learning-rate schedule (see segkit.optim: list_schedulers(), register_scheduler)."""

    name: str = "plateau"  #: none, plateau, cosine, poly, onecycle, step or a registered name
    factor: float = 0.5  #: plateau: multiply the LR by this
    patience: int = 2  #: plateau: epochs without improvement before reducing
    warmup_epochs: int = 0  #: cosine / poly: linear warm-up length
    min_lr: float = 0.0  #: cosine / poly / plateau floor
    step_size: int = 10  #: step: epochs between reductions
    gamma: float = 0.1  #: step: multiply the LR by this
    power: float = 0.9  #: poly: the LR follows (1 - progress) ** power
    options: dict[str, Any] = field(default_factory=dict)  #: further scheduler keywords


@dataclass
class MLflowConfig:
    """MLflow tracking (``train.hooks.mlflow: true`` takes these defaults; segkit[mlflow])."""

    tracking_uri: str | None = None  #: null: $MLFLOW_TRACKING_URI, else <out_dir>/mlflow.db
    experiment: str | None = None  #: MLflow experiment (null: the config's name)
    run_name: str | None = None  #: null: the run folder's name
    checkpoint: bool = True  #: log best.pt as an artifact (checkpoints/best.pt) at the end


@dataclass
class WandbConfig:
    """Weights & Biases tracking (``train.hooks.wandb: true`` takes these defaults; segkit[wandb])."""

    project: str | None = None  #: W&B project (null: $WANDB_PROJECT, else the config's name)
    entity: str | None = None  #: W&B user or team (null: W&B's default)
    run_name: str | None = None  #: null: the run folder's name
    mode: str | None = None  #: offline, online or disabled (null: $WANDB_MODE, else offline)
    checkpoint: bool = True  #: log best.pt and config.yaml as a "model" artifact at the end


@dataclass
class HooksConfig:
    """Built-in hooks that can be switched on or off (``train.hooks.plot=false``).

    A tracker is ``true`` (its defaults), ``false`` or a mapping of its settings; setting one of
    them (``train.hooks.mlflow.experiment=faces``) switches it on.
    """

    history: bool = True  #: history.csv, a row per epoch
    plot: bool = True  #: curves.png and predictions.png
    progress: bool = True  #: a summary line per epoch (and a tqdm bar with train.progress)
    tensorboard: bool = False  #: <out_dir>/tensorboard event files (segkit[tensorboard])
    mlflow: bool | MLflowConfig = False  #: MLflow, a store in the run folder by default
    wandb: bool | WandbConfig = False  #: Weights & Biases, offline by default

    def __post_init__(self) -> None:
        if self.mlflow is True:
            self.mlflow = MLflowConfig()
        if self.wandb is True:
            self.wandb = WandbConfig()


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 30  #: training epochs
    accumulate: int = 1  #: gradient accumulation over this many batches
    device: str = "auto"  #: auto, cpu, cuda, cuda:1, ...
    amp: str = "auto"  #: auto (bf16 where the GPU or CPU runs it natively), off, bf16 or fp16
    channels_last: bool | str = "auto"  #: channels_last memory format: auto (on CPU), true, false
    compile: bool = False  #: torch.compile the model
    grad_clip: float | None = None  #: clip the gradient norm to this
    val_every: int = 1  #: validate every K epochs
    monitor: str = "val_loss"  #: value that picks best.pt: val_loss or val_<metric>
    mode: str | None = None  #: min or max; None: max for scores, min for losses
    early_stop: int | None = None  #: stop after this many validations without improvement
    out_dir: str = "runs/exp"  #: run folder (relative to the config file)
    seed: int = 0  #: seeds Python, NumPy, torch and the loader workers
    deterministic: bool = False  #: deterministic algorithms (slower, reproducible)
    empty_cache: bool = True  #: torch.cuda.empty_cache() between epochs on CUDA
    preview: int = 4  #: validation samples in the prediction grid
    progress: bool = True  #: tqdm bar when on a terminal
    ema: float | None = None  #: weight average decay, e.g. 0.999 (validated, saved as best.pt)
    hooks: HooksConfig = field(default_factory=HooksConfig)  #: built-in hooks on/off


@dataclass
class Config:
    """A whole experiment."""

    name: str = "experiment"  #: experiment name
    imports: list[str] = field(default_factory=list)  #: modules to import first (plugins)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


#: keys whose values are paths, resolved relative to the config file
PATH_KEYS = (
    "data.root",
    "data.split_file",
    "data.prepared_root",
    "train.out_dir",
    "augment.stats",
)
#: file suffixes that make a single ``data.classes`` string a file of class names
CLASS_FILE_SUFFIXES = (".txt", ".names")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def bool_word(value: Any) -> bool | None:
    """True or False for a yes/no word ("true", "On", "no", "0", ...); None for anything else."""
    if not isinstance(value, str):
        return None
    word = value.lower()
    if word in ("true", "yes", "1", "on"):
        return True
    if word in ("false", "no", "0", "off"):
        return False
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check and convert ``value`` to the annotated type ``tp``.

    A :class:`Scalar` read from YAML gives its text to ``str`` fields and its resolved
    value to every other type.
    """
    origin = typing.get_origin(tp)
    section = optional_section(tp)
    if section is not None and isinstance(value, dict):  # the section's own errors
        return _coerce(value, section, key)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, key, section)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if tp is str:
        if isinstance(value, Scalar) and value.value is not None:
            return str(value)  # the text as written: "off", "07", "2020_01", not False, 7, 202001
        value = plain(value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(value, Scalar):
            value = value.value  # the items keep their text, for list[str]
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    value = plain(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if (answer := bool_word(value)) is not None:
            return answer
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        return _coerce_number(value, tp, key)
    return value


def _coerce_union(value: Any, tp: Any, key: str, section: Any) -> Any:
    """``value`` as the first member of the union ``tp`` that takes it (None where allowed and
    written as null); else the first member's error."""
    args = typing.get_args(tp)
    if type(None) in args and is_null(value):
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError as exc:
            errors.append(str(exc))
    if section is not None and bool in args:
        raise ConfigError(f"{key}: expected true, false or a mapping of settings, got {value!r}")
    raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")


def _coerce_number(value: Any, tp: type, key: str) -> int | float:
    """``value`` (already plain) as an ``int`` or ``float``; booleans are refused as integers."""
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a number, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise :class:`ConfigError`."""
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        key = str(key)  # a key read from YAML as written ("on", not True)
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in types_:
            raise ConfigError(f"Unknown config key {dotted!r}.{_suggest_key(dotted)}")
        kwargs[key] = _coerce(value, types_[key], dotted)
    return cls(**kwargs)


def optional_section(tp: Any) -> type | None:
    """The dataclass of a ``Section | None`` field (such as ``data.crop``) or of a
    ``bool | Section`` switch (such as ``train.hooks.mlflow``), else None."""
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = [a for a in typing.get_args(tp) if a not in (type(None), bool)]
    return args[0] if len(args) == 1 and dataclasses.is_dataclass(args[0]) else None


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts, e.g. ``train.epochs``; a section that may be null
    (``data.crop``) is a key itself and has its own keys (``data.crop.size``)."""
    keys = []
    for name, tp in _field_types(cls).items():
        dotted = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, dotted))
            continue
        keys.append(dotted)
        section = optional_section(tp)
        if section is not None:
            keys.extend(all_keys(section, dotted))
    return keys


def _suggest_key(dotted: str) -> str:
    sections = [f.name for f in dataclasses.fields(Config)]
    if dotted in sections:  # a whole section given a value
        example = next(k for k in all_keys() if k.startswith(f"{dotted}."))
        return f" {dotted!r} is a section; set one of its keys, e.g. {example}=..."
    if "." not in dotted:  # a top-level key: compare with the section names first
        hint = suggest(dotted, sections)
        if hint:
            return hint
    name = dotted.rsplit(".", 1)[-1]
    elsewhere = [k for k in all_keys() if "." in k and k.rsplit(".", 1)[-1] == name]
    if elsewhere:  # the right key in another section: train.lr -> optim.lr
        return f" Did you mean {' or '.join(map(repr, elsewhere))}?"
    return suggest(dotted, all_keys()) or suggest(name, all_keys())


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain Python data (what ``config.yaml`` in a run folder holds)."""
    return dataclasses.asdict(cfg)


#: settings that decide what a checkpoint's weights mean: a resume may not change them
RESUME_FIXED = (
    "model.arch",
    "model.encoder",
    "model.base_channels",
    "model.upsample",
    "model.in_channels",
    "model.options",
    "data.dataset",
    "data.classes",
    "data.image_size",
    "data.resize",
    "data.crop.scale",
    "augment.normalize",
    "augment.mean",
    "augment.std",
    "augment.stats",
)
#: settings a resume may change without a word (how long and where it runs, how it reads)
RESUME_FREE = (
    "train.epochs",
    "train.out_dir",
    "train.progress",
    "train.device",
    "train.channels_last",  # a layout, not what the weights mean; auto keeps the run's
    "train.empty_cache",
    "data.num_workers",
    "data.persistent_workers",
    "data.prepared_root",
    "model.encoder_weights",
)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config mapping as ``{dotted key: value}``; an ``options`` mapping stays whole."""
    if not isinstance(data, dict) or (prefix and prefix.endswith(".options")):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def resume_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings that differ between the config a checkpoint was trained with and the current one.

    Compares dotted keys present in both (a checkpoint may hold only some sections); keys of
    :data:`RESUME_FREE` are left out.

    Returns:
        ``{dotted key: (saved value, current value)}``.
    """
    old, new = flatten(saved), flatten(current)
    return {
        key: (old[key], new[key])
        for key in old
        if key in new and old[key] != new[key] and key not in RESUME_FREE
    }


def _parse_value(text: str) -> Any:
    try:
        return load_yaml(text)
    except DuplicateKey as exc:
        raise ConfigError(f"Override value {text!r}: {exc}") from None
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested mapping (values parsed as in a YAML file)."""
    valid = set(all_keys())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"Override {item!r} is not of the form key=value (e.g. train.epochs=5)."
            )
        key, text = item.split("=", 1)
        key = key.strip()
        is_option = any(key.startswith(f"{k}.") for k in valid if k.endswith(".options"))
        if key not in valid and not is_option:
            raise ConfigError(
                f"Unknown config key {key!r} in override {item!r}.{_suggest_key(key)}"
            )
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            # a null section (data.crop: null) or a switch (train.hooks.mlflow: true) given a key
            if is_null(node.get(part)) or isinstance(plain(node.get(part)), bool):
                node[part] = {}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r}: {part!r} is not a mapping.")
        node[parts[-1]] = _parse_value(text)
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if is_null(value):  # left to the type check: None where allowed, an error elsewhere
            continue
        if isinstance(value, str) and value.startswith("{out_dir}"):
            continue  # filled in with train.out_dir (already absolute) where it is used
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            # absolute without following symlinks: a linked data/carvana keeps its
            # prepared copy beside the link, not beside the link's target
            data[section][key] = os.path.abspath(base / Path(value).expanduser())
        elif isinstance(value, str):
            data[section][key] = str(Path(value).expanduser())


def read_class_names(path: str | Path, what: str = "data.classes") -> list[str]:
    """Class names from a text file, one a line in id order (CamVid's ``labels.txt``, darknet's
    ``.names``): surrounding spaces dropped; blank lines and lines starting with ``#`` skipped.

    Raises:
        ConfigError: the file is missing or unreadable, or names fewer than two classes.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: class names file {str(path)!r} does not exist. Give a file with one class "
            "name a line (relative to the config file), or list the names: [background, car]."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{what}: cannot read class names file {str(path)!r} ({type(exc).__name__}); give a "
            "UTF-8 text file with one class name a line."
        ) from None
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if len(names) < 2:
        raise ConfigError(
            f"{what}: class names file {str(path)!r} names {len(names)} class(es); a data set "
            "needs at least two (background and one), one name a line."
        )
    return names


def _class_file(value: Any, base: Path) -> Path | None:
    """The file a ``data.classes`` value names, or None: a single string (not a list, no comma)
    ending in ``.txt`` / ``.names``, or naming a file that exists; relative to ``base``."""
    text = plain(value)
    if not isinstance(text, str) or is_null(value) or "," in text or not text.strip():
        return None
    path = Path(text.strip()).expanduser()
    path = path if path.is_absolute() else base / path
    if path.suffix.lower() in CLASS_FILE_SUFFIXES or path.is_file():
        return path
    return None


def _read_classes(data: dict[str, Any], base: Path) -> None:
    """Replace a ``data.classes`` that names a file (:func:`_class_file`) with its names."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    path = _class_file(section.get("classes"), base)
    if path is not None:
        section["classes"] = read_class_names(path)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file (or the defaults) and apply dotted overrides.

    Relative paths in the file are taken relative to the file's folder; relative
    paths given as overrides are taken relative to the current directory. A ``data.classes``
    that names a file of class names (:func:`read_class_names`) is replaced by its names.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"Config file {str(path)!r} does not exist. Pass the path of a YAML file, "
                "e.g. examples/carvana_single_class/config.yaml."
            )
        try:
            data = load_yaml(path.read_text())
        except DuplicateKey as exc:
            raise ConfigError(f"Config file {str(path)!r}: {exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(
                f"Config file {str(path)!r} is not valid YAML{where}: {problem}. "
                "Fix the file (indentation, brackets, quotes) and run again."
            ) from None
        if isinstance(data, Scalar):  # a file that holds a single value
            data = data.value
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"Config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}."
            )
        _resolve_paths(data, path.resolve().parent)
        _read_classes(data, path.resolve().parent)
    data = apply_overrides(data, list(overrides or []))
    _read_classes(data, Path.cwd())  # a file given as an override: from the current directory
    cfg = from_dict(Config, data)
    # what is still relative (overrides, defaults) is taken from the current directory
    plain = to_dict(cfg)
    _resolve_paths(plain, Path.cwd())
    for dotted in PATH_KEYS:
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, plain[section][key])
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment after each field of a dataclass (its documentation)."""
    import inspect
    import re

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*#: (.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def config_reference() -> str:
    """Markdown reference of every config key, its type, default and meaning (docs/configs.md)."""
    lines = [
        "# Config reference",
        "",
        "Generated from the dataclasses in `segkit/config.py` by",
        "`python -c 'from segkit.config import config_reference; print(config_reference())'`;",
        "a test checks that this page matches them. Any key can be overridden on the command line",
        "as `section.key=value`. Values are parsed as YAML, except that a `str` key keeps the text",
        "as written (`train.amp=off` is `'off'`, `data.train_split=07` is `'07'`); `null`, `~` or",
        "`none` give None where None is allowed. Paths in a config file are relative to the file;",
        "paths given on the command line are relative to the current directory.",
        "",
    ]
    defaults = Config()
    for section in dataclasses.fields(Config):
        if section.name == "name":
            lines += ["## name", "", f"Experiment name (default `{defaults.name}`).", ""]
            continue
        if section.name == "imports":
            lines += [
                "## imports",
                "",
                "Modules imported before anything is built, so that the data sets, models, losses,",
                "optimizers and schedulers they register can be named in this config (default",
                "`[]`); see docs/adding_a_dataset.md. `segkit --import MODULE` does the same.",
                "",
            ]
            continue
        cls = type(getattr(defaults, section.name))
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines += [
            f"## {section.name}",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        lines += _reference_rows(getattr(defaults, section.name), section.name)
        lines.append("")
    return "\n".join(lines)


def _reference_rows(defaults: Any, prefix: str) -> list[str]:
    """Table rows of a section's keys; a nested dataclass (train.hooks) gives a row per key."""
    rows = []
    comments = _field_comments(type(defaults))
    hints = typing.get_type_hints(type(defaults))
    for f in dataclasses.fields(defaults):
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            rows += _reference_rows(default, f"{prefix}.{f.name}")
            continue
        tp = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
        tp = tp.replace("segkit.config.", "").replace("|", "\\|")
        rows.append(
            f"| `{prefix}.{f.name}` | `{tp}` | `{default!r}` | {comments.get(f.name, '')} |"
        )
        section = optional_section(hints[f.name])
        if section is not None:  # its keys, with the defaults they take once it is set
            rows += _reference_rows(section(), f"{prefix}.{f.name}")
    return rows
