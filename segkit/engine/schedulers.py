"""Learning-rate schedules from :class:`~segkit.config.SchedulerConfig` (the registry of
schedules is :mod:`segkit.optim`).

Each schedule says when it is stepped: ``"batch"`` (after every optimizer step), ``"epoch"``
(after every epoch) or ``"validation"`` (ReduceLROnPlateau, with the monitored value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from segkit.config import SchedulerConfig
from segkit.errors import ConfigError


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


def build_scheduler(
    optimizer: Optimizer,
    cfg: SchedulerConfig,
    epochs: int,
    steps_per_epoch: int,
    mode: str = "min",
) -> Schedule:
    """The schedule ``cfg.name`` names (a :mod:`segkit.optim` registry entry), sized for
    ``epochs`` x ``steps_per_epoch`` optimizer steps.

    Args:
        optimizer: the optimizer whose learning rates are scheduled (its current LR is the peak).
        cfg: scheduler settings.
        epochs: planned epochs.
        steps_per_epoch: optimizer steps per epoch (batches / accumulation, rounded up).
        mode: "min" or "max", the direction of the monitored value (plateau only).

    Raises:
        ConfigError: an unknown name or a setting out of range, naming the key.
    """
    from segkit.optim import build_schedule

    return build_schedule(optimizer, cfg, epochs, steps_per_epoch, mode)


def current_lr(optimizer: Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])


def __getattr__(name: str) -> tuple[str, ...]:
    """``SCHEDULERS``: the registered schedule names (kept for code that imports it)."""
    if name == "SCHEDULERS":
        from segkit.optim import list_schedulers

        return tuple(list_schedulers())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
