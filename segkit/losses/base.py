"""SegmentationLoss (input checks, float32), the loss registry and the built-in losses."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from segkit.errors import ConfigError, suggest
from segkit.losses.functional import (
    MODES,
    binary_cross_entropy,
    cross_entropy,
    dice_loss,
)


class SegmentationLoss(nn.Module):
    """Base class: checks the inputs once, then calls :meth:`compute` in float32.

    Args:
        smooth: Dice smoothing term.
        ignore_index: label value whose pixels are left out.
        class_weights: one weight per class (binary: background, foreground).
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``None`` to infer from the
            channel count (and a target of the logits' shape: multi-label).
    """

    #: whether the loss can train a multi-label model (a 0/1 target per channel)
    multilabel: bool = False
    #: whether the loss takes soft binary targets (float coverage in 0..1); a subclass that
    #: handles them sets this True, others get a clear error instead of a wrong value
    accepts_soft: bool = False

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        mode: str | None = None,
    ):
        super().__init__()
        if mode is not None and mode not in MODES:
            raise ConfigError(
                f"Unknown loss mode {mode!r}; use 'binary', 'multiclass', 'multilabel' or None."
            )
        if mode == "multilabel" and ignore_index is not None:
            raise ConfigError(
                f"loss.ignore_index={ignore_index} does not apply to multi-label masks (0/1 per "
                "class); leave it unset."
            )
        if class_weights is not None and any(w < 0 for w in class_weights):
            raise ConfigError(f"class_weights must not be negative, got {list(class_weights)}.")
        self.smooth = float(smooth)
        self.ignore_index = ignore_index
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.mode = mode

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, mode = self.check(logits, target)
        return self.compute(logits.float(), target, mode)

    def check(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Validate shapes, dtype and label values; return the int64 target and the mode
        (multi-label: the float32 0/1 target; soft binary targets: float32 in 0..1)."""
        if self.mode == "multilabel" or (
            self.mode is None and target.ndim == 4 and target.shape[1] == logits.shape[1] > 1
        ):
            if not self.multilabel:
                raise ConfigError(
                    f"{type(self).__name__} cannot score a multi-label target (one 0/1 plane "
                    "per class): use bce, dice, soft_dice or a sum such as 'bce + dice'."
                )
            return self._check_multilabel(logits, target), "multilabel"
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"Expected logits N x C x H x W and target N x H x W, got logits "
                f"{tuple(logits.shape)} and target {tuple(target.shape)}."
            )
        if target.is_complex():
            raise TypeError(f"target must hold integer labels, got dtype {target.dtype}.")
        channels = logits.shape[1]
        mode = self.mode or ("binary" if channels == 1 else "multiclass")
        if (mode == "binary") != (channels == 1):
            raise ValueError(
                f"Loss mode {mode!r} does not fit logits with {channels} channels: binary "
                "needs 1 channel, multiclass 2 or more."
            )
        if target.is_floating_point():
            return self.check_soft(target, mode), mode
        n_labels = 2 if mode == "binary" else channels
        if self.class_weights is not None and len(self.class_weights) != n_labels:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} values but the {mode} task has "
                f"{n_labels} classes; give one weight per class."
            )
        target = target.long()
        bad = (target < 0) | (target >= n_labels)
        if self.ignore_index is not None:
            bad &= target != self.ignore_index
        if bool(bad.any()):
            values = torch.unique(target[bad])[:10].tolist()
            raise ValueError(
                f"Target holds label values {values} outside 0..{n_labels - 1} of this {mode} "
                f"task (ignore_index={self.ignore_index}). Check the class count or remap labels."
            )
        return target, mode

    def _check_multilabel(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.shape != logits.shape:
            raise ValueError(
                f"A multi-label loss needs a 0/1 target of the logits' shape N x C x H x W, got "
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)}."
            )
        if self.class_weights is not None and len(self.class_weights) != logits.shape[1]:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} values but the multi-label task "
                f"has {logits.shape[1]} classes; give one weight per class."
            )
        target = target.float()
        if bool(((target != 0) & (target != 1)).any()):
            values = torch.unique(target[(target != 0) & (target != 1)])[:10].tolist()
            raise ValueError(f"A multi-label target holds 0 and 1 only, got values {values}.")
        return target

    def check_soft(self, target: torch.Tensor, mode: str) -> torch.Tensor:
        """A float target as a soft binary target (float32 in 0..1), or a clear error."""
        if mode != "binary":
            raise TypeError(
                f"A {mode} loss takes integer labels, got a {target.dtype} target; soft (float) "
                "targets are for binary tasks (one output channel) only."
            )
        if not self.accepts_soft:
            name = next((n for n, c in _LOSSES.items() if c is type(self)), type(self).__name__)
            raise TypeError(
                f"Loss {name!r} takes integer labels, got a {target.dtype} target "
                "(soft targets, data.soft_targets): use soft_dice, bce or ce, or a sum of them."
            )
        if self.ignore_index is not None:
            raise ValueError(
                f"A soft (float) target marks no pixels to leave out; unset ignore_index "
                f"(it is {self.ignore_index}) or train on integer labels."
            )
        target = target.float()
        bad = ~((target >= 0) & (target <= 1))  # NaN counts as bad
        if bool(bad.any()):
            values = torch.unique(target[bad])[:5].tolist()
            raise ValueError(
                f"A soft target holds values {values} outside 0..1; it is the fraction of each "
                "pixel that is foreground (coverage 0..255 divides by 255)."
            )
        return target

    def weights(self, like: torch.Tensor) -> torch.Tensor | None:
        """``class_weights`` as a float32 tensor on ``like``'s device."""
        if self.class_weights is None:
            return None
        return torch.tensor(self.class_weights, dtype=torch.float32, device=like.device)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        """The loss on checked inputs (float32 logits, int64 target)."""
        raise NotImplementedError


_LOSSES: dict[str, type[SegmentationLoss]] = {}


def register_loss(name: str) -> Callable[[type[SegmentationLoss]], type[SegmentationLoss]]:
    """Class decorator registering a :class:`SegmentationLoss` under ``name``."""

    def decorator(cls: type[SegmentationLoss]) -> type[SegmentationLoss]:
        if name in _LOSSES:
            raise ValueError(f"Loss {name!r} is already registered; pick another name.")
        _LOSSES[name] = cls
        return cls

    return decorator


def list_losses() -> list[str]:
    """Registered loss names."""
    return sorted(_LOSSES)


#: keyword arguments every loss takes (the shared settings), never options
SHARED_ARGS = ("smooth", "ignore_index", "class_weights", "mode")


def loss_option_names(cls: type[SegmentationLoss]) -> list[str]:
    """The keyword options a registered loss class takes besides the shared settings."""
    names = getattr(cls, "option_names", None)
    if names is not None:
        return list(names())
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return [
        p
        for p, v in params.items()
        if p != "self" and p not in SHARED_ARGS and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)
    ]


def check_loss_options(cls: type[SegmentationLoss], options: dict[str, Any]) -> None:
    """Raise a ConfigError naming an option ``cls`` does not take (with the close names)."""
    valid = loss_option_names(cls)
    for key in options:
        if key not in valid:
            name = next((n for n, c in _LOSSES.items() if c is cls), cls.__name__)
            takes = f" It takes: {', '.join(valid)}." if valid else " It takes no options."
            raise ConfigError(f"Loss {name!r} has no option {key!r}.{suggest(key, valid)}{takes}")


@register_loss("soft_dice")
class SoftDiceLoss(SegmentationLoss):
    """``1 - mean_c (2·Σ(p·t) + s) / (Σp² + Σt² + s)`` (Carvana tutorial's soft Dice).

    Takes soft binary targets: ``Σp² + Σt² >= 2·Σ(p·t)`` with equality only at ``p = t``.
    """

    squared = True
    multilabel = True
    accepts_soft = True

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        return dice_loss(
            logits,
            target,
            mode,
            smooth=self.smooth,
            squared=self.squared,
            ignore_index=self.ignore_index,
            class_weights=self.weights(logits),
        )


@register_loss("dice")
class DiceLoss(SoftDiceLoss):
    """``1 - mean_c (2·Σ(p·t) + s) / (Σp + Σt + s)``; integer labels only (see the module)."""

    squared = False
    accepts_soft = False


@register_loss("ce")
class CrossEntropyLoss(SegmentationLoss):
    """Softmax cross-entropy; in binary mode the same as ``bce`` (soft targets too)."""

    accepts_soft = True

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "binary":
            return binary_cross_entropy(
                logits, target, mode, self.ignore_index, self.weights(logits)
            )
        return cross_entropy(logits, target, self.ignore_index, self.weights(logits))


@register_loss("bce")
class BCELoss(SegmentationLoss):
    """Sigmoid binary cross-entropy (one-vs-rest per class when multiclass; per channel when
    multi-label; binary: soft targets too)."""

    multilabel = True
    accepts_soft = True

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        return binary_cross_entropy(logits, target, mode, self.ignore_index, self.weights(logits))
