"""Run-time settings of the loop: mixed precision, config checks, stopping on a signal."""

from __future__ import annotations

import math
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from segkit.config import TrainConfig, bool_word
from segkit.errors import CheckpointError, ConfigError, unknown_name


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), as oneDNN uses."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


#: how a checkpoint records the autocast a run trained in (``resolve_amp`` reads the names back)
AMP_NAMES: dict[torch.dtype | None, str] = {
    None: "off",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
}


def resolve_amp(amp: str | bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: full precision).

    ``auto`` is bf16 on a CUDA device that supports it and on a CPU that multiplies bfloat16
    natively (AVX512-BF16 or AMX: the Helen example's 8-epoch run ended 0.0018 overall F1 from
    fp32's, 2.9x faster per epoch, docs/benchmarks.md section 5), and off elsewhere; ``bf16``
    on a CPU without it is allowed (with a warning: it is slow there); ``fp16`` needs CUDA and
    trains with a GradScaler.
    """
    name = str(amp).lower()
    if name in ("off", "none", "false", "no", "fp32"):
        return None
    cuda = device.type == "cuda"
    if name == "auto":
        fast = torch.cuda.is_bf16_supported() if cuda else cpu_has_fast_bf16()
        return torch.bfloat16 if fast else None
    if name == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise ConfigError("train.amp=bf16 but this GPU has no bfloat16; use amp=fp16 or off.")
        if not cuda and not cpu_has_fast_bf16():
            warnings.warn(
                "train.amp=bf16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is slow; "
                "amp=off is usually faster.",
                stacklevel=3,
            )
        return torch.bfloat16
    if name == "fp16":
        if not cuda:
            raise ConfigError("train.amp=fp16 needs a CUDA device; use amp=off (or bf16) on CPU.")
        return torch.float16
    raise ConfigError(unknown_name("train.amp value", name, ["auto", "off", "bf16", "fp16"]))


#: devices on which ``train.channels_last: auto`` turns channels_last on, by measurement:
#: the Carvana training step on a 2-core CPU (docs/benchmarks.md, section 5)
CHANNELS_LAST_AUTO = ("cpu",)


def is_auto(value: bool | str) -> bool:
    """Whether a setting such as ``train.channels_last`` says ``auto``."""
    return not isinstance(value, bool) and str(value).lower() == "auto"


def resolve_channels_last(
    value: bool | str, device: torch.device, model: torch.nn.Module | None = None
) -> bool:
    """Whether ``train.channels_last`` (true, false or auto) trains channels_last on ``device``.

    ``auto`` is on where it was measured faster (``CHANNELS_LAST_AUTO``): the CPU. It stays
    off on CUDA until measured there, and off for a ``model`` with 5-D weights (3-D
    convolutions, which the 2-D layout cannot hold); ``true`` turns it on anywhere.
    """
    if isinstance(value, bool):
        return value
    if is_auto(value):
        fits = model is None or all(p.dim() != 5 for p in model.parameters())
        return device.type in CHANNELS_LAST_AUTO and fits
    if (answer := bool_word(value)) is not None:
        return answer
    raise ConfigError(
        unknown_name("train.channels_last value", str(value).lower(), ["auto", "true", "false"])
    )


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


def load_weights(module: torch.nn.Module, weights: dict[str, Any], source: str) -> None:
    """Load ``weights`` into ``module``; a segkit model explains a mismatch briefly."""
    if getattr(module, "spec", None) is not None:  # a short, specific explanation
        from segkit.models import load_state

        load_state(module, weights, source=source)
    else:
        module.load_state_dict(weights)


@contextmanager
def checkpoint_fits(source: str) -> Iterator[None]:
    """Turn a load that does not fit the model or optimizer into one CheckpointError."""
    hint = "Resume with the model and optimizer settings the run was started with."
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} {hint}") from None
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"Checkpoint {source!r} does not fit this model/optimizer ({first[:300]}). {hint}"
        ) from None


def resume_hint(has_config: bool) -> str:
    """Printed after an interrupt, formatted with {path} (last.pt) and {config} (config.yaml)."""
    python_hint = "Trainer(...).fit(resume={path!r})"
    if has_config:
        return f"segkit train {{config}} --resume {{path}}  (Python: {python_hint})"
    return python_hint


def not_finite_message(trainer: Any, value: float, n: int) -> str:
    """Why training stopped at batch ``n`` with a loss of ``value``, and what to do."""
    t = trainer
    where = f"epoch {t.epoch + 1}, step {n} of {t.n_batches}"
    what = (
        f"The loss is {value}" if not math.isfinite(value) else "Another rank's loss is not finite"
    )
    kept = (
        f"best.pt and last.pt in {t.out_dir} are from the last completed epoch"
        if (t.out_dir / "last.pt").is_file()
        else "no checkpoint had been written yet"
    )
    return (
        f"{what} at {where} (optimizer step {t.step}). Training stopped; {kept}. Lower the "
        "learning rate, set train.grad_clip (e.g. 1.0) or train.amp=off, or check the data."
    )


def report_interrupt(trainer: Any) -> None:
    """Tell the user where an interrupted run stopped and how to resume it (rank 0)."""
    t = trainer
    if not t.dist.is_main:
        return
    path = t.out_dir / "last.pt"
    hint = t.resume_hint.format(path=str(path), config=t.out_dir / "config.yaml")
    where = f"epoch {t.epoch + 1}, step {t.batch_in_epoch}"
    if t.batch_in_epoch == 0:
        where = f"the end of epoch {t.epoch}"
    print(f"Training interrupted at {where}; saved {path}.\nResume with: {hint}", flush=True)
