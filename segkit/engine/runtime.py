"""Run-time settings of the loop: mixed precision, config checks, stopping on a signal."""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from typing import Any

import torch

from segkit.config import TrainConfig
from segkit.errors import ConfigError, unknown_name


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: full precision).

    ``auto`` is bf16 on a CUDA device that supports it and off elsewhere; ``bf16`` on CPU is
    allowed (slow, with a warning); ``fp16`` needs CUDA and trains with a GradScaler.
    """
    name = str(amp).lower()
    if name in ("off", "none", "false", "no", "fp32"):
        return None
    cuda = device.type == "cuda"
    if name == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    if name == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.amp=bf16 but this GPU has no bfloat16; use amp=fp16 or off.")
        if not cuda:
            warnings.warn("train.amp=bf16 on CPU is slow; amp=off is usually faster.", stacklevel=3)
        return torch.bfloat16
    if name == "fp16":
        if not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA device; use amp=off (or bf16) on CPU.")
        return torch.float16
    raise ConfigError(unknown_name("train.amp value", name, ["auto", "off", "bf16", "fp16"]))


def check_train_config(cfg: TrainConfig) -> None:
    """Raise ConfigError naming the ``train.*`` key whose value is out of range."""
    for key, low in (("epochs", 1), ("accumulate", 1), ("val_every", 1), ("preview", 0)):
        if getattr(cfg, key) < low:
            raise ConfigError(f"train.{key} must be at least {low}, got {getattr(cfg, key)}.")
    if cfg.early_stop is not None and cfg.early_stop < 1:
        raise ConfigError(f"train.early_stop must be at least 1 (or null), got {cfg.early_stop}.")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip must be positive (or null), got {cfg.grad_clip}.")
    if cfg.mode not in (None, "min", "max"):
        raise ConfigError(f"train.mode must be min, max or null, got {cfg.mode!r}.")


class StopOnSignal:
    """Turn the first SIGINT / SIGTERM into a request to stop after the current step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        self.received, self.previous = None, {}  # a stop asked of an earlier fit() is done
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name}: finishing the current step, then writing last.pt "
            "(send it again to abort at once).",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
