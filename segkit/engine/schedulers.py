"""What the optim and scheduler sections change over training, for the trainer: the
learning-rate schedule from :class:`~segkit.config.SchedulerConfig` (the registry of schedules,
:class:`~segkit.optim.Schedule` and the LR factors live in :mod:`segkit.optim`, which never
imports the engine) and the hook that keeps an encoder frozen for the first epochs.

Each schedule says when it is stepped: ``"batch"`` (after every optimizer step), ``"epoch"``
(after every epoch) or ``"validation"`` (ReduceLROnPlateau, with the monitored value).
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from segkit.config import SchedulerConfig
from segkit.engine.hooks import HookBase
from segkit.errors import ConfigError
from segkit.optim import Schedule, WarmupCosine, build_schedule, encoder_of, list_schedulers

__all__ = ["Schedule", "WarmupCosine", "build_scheduler", "current_lr", "freeze_encoder_hook"]


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
    return build_schedule(optimizer, cfg, epochs, steps_per_epoch, mode)


def current_lr(optimizer: Optimizer) -> float:
    """The learning rate of the first parameter group."""
    return float(optimizer.param_groups[0]["lr"])


def __getattr__(name: str) -> tuple[str, ...]:
    """``SCHEDULERS``: the registered schedule names (kept for code that imports it)."""
    if name == "SCHEDULERS":
        return tuple(list_schedulers())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------ encoder freezing


def freeze_encoder_hook(epochs: int) -> Any:
    """A trainer hook that keeps the model's encoder frozen for the first ``epochs`` epochs
    (``optim.freeze_encoder_epochs``): its parameters get no gradient, so the optimizer
    leaves them (and their state) alone until then."""

    class FreezeEncoder(HookBase):
        """Encoder frozen while ``trainer.epoch < epochs``."""

        def before_epoch(self) -> None:
            encoder = encoder_of(self.trainer.model)
            if encoder is None:
                raise ConfigError(
                    "optim.freeze_encoder_epochs is set, but the model has no encoder; unset it."
                )
            frozen = self.trainer.epoch < epochs
            for p in encoder.parameters():
                p.requires_grad_(not frozen)

    return FreezeEncoder()
