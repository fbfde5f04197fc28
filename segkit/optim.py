"""Optimizer and LR-schedule registries (timm's ``OptimInfo`` style) and parameter groups.

An optimizer or a schedule is a small frozen dataclass in a registry, listable with a
wildcard and extended with one decorator::

    @register_optimizer("lion", description="Lion (sign momentum)")
    def build_lion(params, lr, weight_decay, cfg, **options):
        return Lion(params, lr=lr, weight_decay=weight_decay, **options)

``optim.options`` / ``scheduler.options`` in a config are keyword options of the chosen
entry (``betas: [0.9, 0.99]``, ``nesterov: true``). :func:`param_groups` splits the model's
parameters: norm layers and biases get no weight decay (unless ``optim.decay_norm_bias``),
and the encoder's learning rate is ``optim.lr * optim.encoder_lr_mult``.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from segkit.errors import PLUGIN_HINT, ConfigError, suggest, unknown_name

OptimizerBuilder = Callable[..., Optimizer]
ScheduleBuilder = Callable[..., Any]


@dataclass(frozen=True)
class OptimizerInfo:
    """A registered optimizer: ``builder(params, lr, weight_decay, cfg, **options)``."""

    name: str
    builder: OptimizerBuilder
    description: str = ""


@dataclass(frozen=True)
class SchedulerInfo:
    """A registered LR schedule: ``builder(optimizer, cfg, epochs, steps_per_epoch, mode,
    **options) -> Schedule`` (which also says when it is stepped)."""

    name: str
    builder: ScheduleBuilder
    description: str = ""


_OPTIMIZERS: dict[str, OptimizerInfo] = {}
_SCHEDULERS: dict[str, SchedulerInfo] = {}


def _register(table: dict, kind: str, info_cls: type, name: str, description: str) -> Callable:
    def decorator(builder: Callable) -> Callable:
        if name in table:
            raise ValueError(f"{kind.capitalize()} {name!r} is already registered; pick another.")
        doc = (builder.__doc__ or "").strip().splitlines()
        table[name] = info_cls(name, builder, description or (doc[0] if doc else ""))
        return builder

    return decorator


def register_optimizer(name: str, description: str = "") -> Callable:
    """Decorator registering ``builder(params, lr, weight_decay, cfg, **options)``."""
    return _register(_OPTIMIZERS, "optimizer", OptimizerInfo, name, description)


def register_scheduler(name: str, description: str = "") -> Callable:
    """Decorator registering ``builder(optimizer, cfg, epochs, steps_per_epoch, mode, **options)``."""
    return _register(_SCHEDULERS, "scheduler", SchedulerInfo, name, description)


def list_optimizers(pattern: str = "*") -> list[str]:
    """Registered optimizer names matching an fnmatch pattern, sorted."""
    return sorted(n for n in _OPTIMIZERS if fnmatch.fnmatch(n, pattern))


def list_schedulers(pattern: str = "*") -> list[str]:
    """Registered schedule names matching an fnmatch pattern, sorted."""
    return sorted(n for n in _SCHEDULERS if fnmatch.fnmatch(n, pattern))


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The registry entry of ``name``; ConfigError with close names when unknown."""
    if name not in _OPTIMIZERS:
        raise ConfigError(unknown_name("optimizer", name, _OPTIMIZERS) + PLUGIN_HINT)
    return _OPTIMIZERS[name]


def get_scheduler_info(name: str) -> SchedulerInfo:
    """The registry entry of ``name``; ConfigError with close names when unknown."""
    if name not in _SCHEDULERS:
        raise ConfigError(unknown_name("scheduler", name, _SCHEDULERS) + PLUGIN_HINT)
    return _SCHEDULERS[name]


def _check_options(kind: str, name: str, fn: Callable, options: dict[str, Any]) -> None:
    """Unknown keyword options are errors naming the close ones (the target's signature)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    for key in options:
        if key not in params:
            valid = [p for p in params if p not in ("self", "params", "lr", "weight_decay")]
            raise ConfigError(
                f"The {kind} {name!r} has no option {key!r}.{suggest(key, valid)} "
                f"It takes: {', '.join(valid)}."
            )


# ------------------------------------------------------------------------ parameter groups

#: module types whose weights get no weight decay by default
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The model's ``encoder`` module (also behind a ``net`` wrapper), or None."""
    net = getattr(model, "net", model)
    return getattr(net, "encoder", None)


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, decay_norm_bias: bool, encoder_mult: float
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups.

    One group (today's behaviour) when nothing needs telling apart: no weight decay, or
    ``decay_norm_bias``, and ``encoder_mult == 1``. Otherwise up to four groups: encoder /
    rest x decayed / not decayed (biases and the weights of norm layers), each with its
    ``lr`` and ``weight_decay``; empty groups are left out.

    Raises:
        ConfigError: ``encoder_mult`` is not 1 but the model has no ``encoder``.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    split_decay = weight_decay > 0 and not decay_norm_bias
    if not split_decay and encoder_mult == 1.0:
        return [{"params": [p for _, p in trainable]}]
    encoder = encoder_of(model)
    if encoder_mult != 1.0 and encoder is None:
        raise ConfigError(
            f"optim.encoder_lr_mult={encoder_mult}, but the model has no encoder (arch "
            f"{getattr(getattr(model, 'spec', None), 'arch', '?')!r}). Leave it at 1."
        )
    in_encoder = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    no_decay = set()
    if split_decay:
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                if name == "bias" or isinstance(module, NORM_LAYERS) or p.ndim <= 1:
                    no_decay.add(id(p))
    groups: dict[tuple[bool, bool], list] = {}
    for _, p in trainable:
        groups.setdefault((id(p) in in_encoder, id(p) in no_decay), []).append(p)
    out = []
    for (enc, nodecay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (encoder_mult if enc else 1.0),
                "weight_decay": 0.0 if nodecay else weight_decay,
            }
        )
    return out


def build_optimizer(cfg: Any, model: nn.Module) -> Optimizer:
    """The optimizer ``cfg.name`` names (an :class:`~segkit.config.OptimConfig`), over
    :func:`param_groups`, with ``cfg.options`` as keyword options.

    Raises:
        ConfigError: unknown name or option, a negative multiplier.
    """
    info = get_optimizer_info(cfg.name)
    if cfg.encoder_lr_mult < 0:
        raise ConfigError(f"optim.encoder_lr_mult must be >= 0, got {cfg.encoder_lr_mult}.")
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.decay_norm_bias, cfg.encoder_lr_mult)
    options = dict(cfg.options)
    _check_options("optimizer", info.name, info.builder, options)
    return info.builder(groups, cfg.lr, cfg.weight_decay, cfg, **options)


@register_optimizer("adam", "Adam (Kingma & Ba)")
def _adam(params, lr, weight_decay, cfg, **options) -> Optimizer:
    _check_options("optimizer", "adam", torch.optim.Adam, options)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **options)


@register_optimizer("adamw", "AdamW (decoupled weight decay)")
def _adamw(params, lr, weight_decay, cfg, **options) -> Optimizer:
    _check_options("optimizer", "adamw", torch.optim.AdamW, options)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **options)


@register_optimizer("sgd", "SGD with momentum (optim.momentum)")
def _sgd(params, lr, weight_decay, cfg, **options) -> Optimizer:
    _check_options("optimizer", "sgd", torch.optim.SGD, options)
    options.setdefault("momentum", cfg.momentum)
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, **options)


# ------------------------------------------------------------------------------ schedules


@dataclass
class WarmupCosine:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``.

    A callable object rather than a closure so that ``LambdaLR.state_dict()`` saves it.
    """

    warmup: int
    total: int
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """A scheduler (or ``None``) and when to step it."""

    scheduler: LRScheduler | ReduceLROnPlateau | None
    interval: str  #: "batch", "epoch", "validation" or "never"
    total: int = 0  #: optimizer steps the schedule spans (cosine, one-cycle)

    def match_length(self, where: str) -> None:
        """After loading a saved schedule: stretch it to this run's length, or say why not.

        A resumed run with more ``train.epochs`` continues a cosine or poly decay over the new length;
        a one-cycle schedule cannot be stretched, so that is a :class:`ConfigError`.
        """
        sched = self.scheduler
        if isinstance(sched, OneCycleLR) and sched.total_steps != self.total:
            raise ConfigError(
                f"{where} holds a one-cycle schedule of {sched.total_steps} optimizer steps, but "
                f"this run needs {self.total} (train.epochs or the data changed). One-cycle "
                "cannot be stretched: resume with the original train.epochs, or switch to "
                "scheduler.name=cosine."
            )
        if isinstance(sched, LambdaLR):
            groups = sched.optimizer.param_groups
            for group, base, fn in zip(groups, sched.base_lrs, sched.lr_lambdas):
                if hasattr(fn, "warmup") and hasattr(fn, "total") and fn.total != self.total:
                    fn.total = self.total
                    group["lr"] = base * fn(sched.last_epoch)  # the stretched curve, from now


@dataclass
class PolyDecay:
    """LR factor: linear warm-up over ``warmup`` steps, then ``(1 - progress) ** power`` down
    to ``min_ratio`` (the "poly" schedule of DeepLab and MMSegmentation).

    A callable object rather than a closure so that ``LambdaLR.state_dict()`` saves it.
    """

    warmup: int
    total: int
    power: float = 0.9
    min_ratio: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * (1.0 - progress) ** self.power


def build_schedule(
    optimizer: Optimizer, cfg: Any, epochs: int, steps_per_epoch: int, mode: str = "min"
) -> Any:
    """The :class:`Schedule` ``cfg.name`` names, sized for
    ``epochs x steps_per_epoch`` optimizer steps, with ``cfg.options`` as keyword options."""
    info = get_scheduler_info(cfg.name.lower())
    options = dict(getattr(cfg, "options", {}) or {})
    _check_options("scheduler", info.name, info.builder, options)
    return info.builder(optimizer, cfg, epochs, steps_per_epoch, mode, **options)


def _schedule(*args: Any, **kwargs: Any) -> Schedule:
    return Schedule(*args, **kwargs)


@register_scheduler("none", "a constant learning rate")
def _none(optimizer, cfg, epochs, steps, mode) -> Any:
    return _schedule(None, "never")


@register_scheduler("plateau", "ReduceLROnPlateau on the monitored value")
def _plateau(optimizer, cfg, epochs, steps, mode, **options) -> Any:
    if not 0.0 < cfg.factor < 1.0:
        raise ConfigError(f"scheduler.factor must be between 0 and 1, got {cfg.factor}.")
    sched = ReduceLROnPlateau(
        optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, min_lr=cfg.min_lr, **options
    )
    return _schedule(sched, "validation")


def _warmup_steps(cfg: Any, steps: int) -> int:
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"scheduler.warmup_epochs must be >= 0, got {cfg.warmup_epochs}.")
    return cfg.warmup_epochs * steps


@register_scheduler("cosine", "linear warm-up, then cosine decay to min_lr, per step")
def _cosine(optimizer, cfg, epochs, steps, mode) -> Any:
    total, warmup = max(1, epochs * steps), _warmup_steps(cfg, steps)
    lambdas = [
        WarmupCosine(warmup, total, cfg.min_lr / g["lr"] if g["lr"] > 0 else 0.0)
        for g in optimizer.param_groups
    ]
    return _schedule(LambdaLR(optimizer, lambdas), "batch", total)


@register_scheduler("poly", "linear warm-up, then (1 - progress) ** power to min_lr, per step")
def _poly(optimizer, cfg, epochs, steps, mode) -> Any:
    total, warmup = max(1, epochs * steps), _warmup_steps(cfg, steps)
    if not (cfg.power > 0 and math.isfinite(cfg.power)):
        raise ConfigError(f"scheduler.power must be a positive number, got {cfg.power}.")
    lambdas = [
        PolyDecay(warmup, total, cfg.power, cfg.min_lr / g["lr"] if g["lr"] > 0 else 0.0)
        for g in optimizer.param_groups
    ]
    return _schedule(LambdaLR(optimizer, lambdas), "batch", total)


@register_scheduler("onecycle", "one-cycle (warm-up to the LR, then anneal), per step")
def _onecycle(optimizer, cfg, epochs, steps, mode, **options) -> Any:
    total = max(1, epochs * steps)
    peaks = [g["lr"] for g in optimizer.param_groups]
    sched = OneCycleLR(optimizer, max_lr=peaks, total_steps=total, **options)
    return _schedule(sched, "batch", total)


@register_scheduler("step", "multiply the LR by gamma every step_size epochs")
def _step(optimizer, cfg, epochs, steps, mode) -> Any:
    if cfg.step_size < 1:
        raise ConfigError(f"scheduler.step_size must be >= 1, got {cfg.step_size}.")
    return _schedule(StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma), "epoch")
