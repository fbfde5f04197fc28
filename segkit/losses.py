"""Segmentation losses: pure functions first, thin ``nn.Module`` wrappers second.

Every loss is called as ``loss(logits, target)`` with logits ``N x C x H x W`` (any float
dtype) and an integer label map ``N x H x W``. ``C == 1`` is a binary task (sigmoid over
the single channel, labels 0/1); ``C > 1`` is multiclass (softmax, labels ``0..C-1``).
A multi-label task (classes may overlap) takes a 0/1 target ``N x C x H x W`` of the logits'
shape and scores each channel as its own binary task (sigmoid): ``bce``, ``dice``,
``soft_dice``, smp's losses and sums of them; ``ce`` cannot (its classes exclude each other).
Everything is reduced in float32, and empty masks, all-background or fully ignored
batches give finite values.

A binary target may also be *soft*: float32 in 0..1, the fraction of each pixel that is
foreground (``data.soft_targets``). ``soft_dice``, ``bce`` and ``ce`` (binary) take it, and
so do sums of them; each is optimal exactly at ``p = t``. Plain ``dice`` (``Σp + Σt``) is
not (a pixel of coverage 0.5 pulls ``p`` to 1) and, like the smp losses, refuses soft targets.

Names for :func:`build_loss`: ``soft_dice``, ``dice``, ``ce``, ``bce``, and weighted sums
such as ``"ce + dice"`` or ``"0.5*ce + 1.0*soft_dice"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import PLUGIN_HINT, ConfigError, suggest, unknown_name

MODES = ("binary", "multiclass", "multilabel")

# ---------------------------------------------------------------------------- functional


def soft_dice_score(
    probs: torch.Tensor,
    target_onehot: torch.Tensor,
    smooth: float = 1.0,
    dims: Sequence[int] = (0, 2, 3),
    squared: bool = True,
) -> torch.Tensor:
    """Soft Dice ``(2·Σ(p·t) + smooth) / (Σp² + Σt² + smooth)`` reduced over ``dims``.

    Args:
        probs: probabilities, e.g. ``N x C x H x W``.
        target_onehot: one-hot (0/1) target of the same shape, or soft coverage in 0..1.
        smooth: added to numerator and denominator; makes empty-vs-empty score 1.
        dims: dimensions summed over; ``(0, 2, 3)`` gives one score per class over the batch,
            ``(2, 3)`` one per image and class.
        squared: ``Σp² + Σt²`` denominator (the Carvana tutorial's soft Dice); False gives
            plain Dice's ``Σp + Σt``.

    Returns:
        The scores, computed in float32.
    """
    if probs.shape != target_onehot.shape:
        raise ValueError(
            f"probs shape {tuple(probs.shape)} and target shape {tuple(target_onehot.shape)} differ."
        )
    p = probs.float()
    t = target_onehot.float()
    dims = tuple(dims)
    intersection = (p * t).sum(dims)
    if squared:
        denominator = (p * p).sum(dims) + (t * t).sum(dims)
    else:
        denominator = p.sum(dims) + t.sum(dims)
    return (2.0 * intersection + smooth) / (denominator + smooth).clamp_min(1e-12)


def probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, mode: str, ignore_index: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and one-hot target (float32, ``N x C x H x W``), zero where ignored.

    A float (soft) binary target is used as it is, as the foreground channel."""
    logits = logits.float()
    if mode == "multilabel":  # target: N x C x H x W 0/1
        return torch.sigmoid(logits), target.float()
    valid, safe = _valid_and_safe(target, ignore_index)
    if mode == "binary":
        probs = torch.sigmoid(logits)
        onehot = safe.unsqueeze(1).float()
    else:
        probs = logits.softmax(dim=1)
        onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).float()
    v = valid.unsqueeze(1).float()
    return probs * v, onehot * v


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    smooth: float = 1.0,
    squared: bool = True,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``1 - (weighted) mean over classes of the batch soft Dice``.

    In binary mode the single foreground channel is scored, so ``class_weights`` do not
    change it.
    """
    probs, onehot = probs_and_onehot(logits, target, mode, ignore_index)
    scores = soft_dice_score(probs, onehot, smooth=smooth, dims=(0, 2, 3), squared=squared)
    if class_weights is None or mode == "binary":
        return 1.0 - scores.mean()
    w = class_weights.to(scores)
    return 1.0 - (scores * w).sum() / w.sum().clamp_min(1e-12)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy averaged like PyTorch's (Σ w·l / Σ w), 0 when all ignored."""
    valid, safe = _valid_and_safe(target, ignore_index)
    per_pixel = F.cross_entropy(logits.float(), safe, reduction="none")
    weight = valid.float()
    if class_weights is not None:
        weight = weight * class_weights.to(per_pixel)[safe]
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-12)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    mode: str,
    ignore_index: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid BCE: on the single channel (binary) or one-vs-rest per class (multiclass).

    Binary ``class_weights`` are ``(background, foreground)`` pixel weights; multiclass and
    multi-label ones weight each class's channel. A soft binary target ``t`` weighs its pixel
    ``(1 - t)·w_background + t·w_foreground``.
    """
    logits = logits.float()
    if mode == "multilabel":  # target: N x C x H x W 0/1
        per_pixel = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
        if class_weights is None:
            return per_pixel.mean()
        weight = class_weights.to(per_pixel).view(1, -1, 1, 1).expand_as(per_pixel)
        return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-12)
    valid, safe = _valid_and_safe(target, ignore_index)
    if mode == "binary":
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], safe.float(), reduction="none")
        weight = valid.float()
        if class_weights is not None and safe.is_floating_point():
            w = class_weights.to(per_pixel)
            weight = weight * ((1.0 - safe) * w[0] + safe * w[1])
        elif class_weights is not None:
            weight = weight * class_weights.to(per_pixel)[safe]
    else:
        onehot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).float()
        per_pixel = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        weight = valid.unsqueeze(1).float().expand_as(per_pixel)
        if class_weights is not None:
            weight = weight * class_weights.to(per_pixel).view(1, -1, 1, 1)
    return (per_pixel * weight).sum() / weight.sum().clamp_min(1e-12)


def _valid_and_safe(
    target: torch.Tensor, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask of counted pixels, and the target with ignored pixels set to 0 (int64; a soft
    float target is kept as it is, every pixel counted)."""
    if target.is_floating_point():
        return torch.ones_like(target, dtype=torch.bool), target.float()
    target = target.long()
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool), target
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


# ------------------------------------------------------------------------------- modules


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


def _check_options(cls: type[SegmentationLoss], options: dict[str, Any]) -> None:
    valid = loss_option_names(cls)
    for key in options:
        if key not in valid:
            name = next((n for n, c in _LOSSES.items() if c is cls), cls.__name__)
            takes = f" It takes: {', '.join(valid)}." if valid else " It takes no options."
            raise ConfigError(f"Loss {name!r} has no option {key!r}.{suggest(key, valid)}{takes}")


def loss_modules(expression: str) -> list[str]:
    """The modules that define the loss classes an expression names (for plugin records)."""
    return [_LOSSES[name].__module__ for _, name, _ in parse_loss_expression(expression)]


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


# ------------------------------------------------------------ from segmentation_models_pytorch


class SmpLoss(SegmentationLoss):
    """A loss of ``segmentation_models_pytorch.losses`` behind segkit's calling convention.

    Subclasses name the smp class (``smp_class``); keyword options go to it unchanged (see
    :meth:`option_names`). ``ignore_index``, ``class_weights`` (where smp takes them) and
    ``smooth`` (where smp has a smoothing term) come from the shared loss settings.
    """

    smp_class: str = ""
    multilabel = True  # smp's losses take mode="multilabel"
    #: smp arguments segkit sets itself, never options
    MANAGED = ("mode", "from_logits", "ignore_index", "class_weights", "smooth")

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | None = None,
        mode: str | None = None,
        **options: Any,
    ):
        super().__init__(smooth, ignore_index, class_weights, mode)
        params = self._smp_params()
        if class_weights is not None and "class_weights" not in params:
            raise ConfigError(f"The {self.smp_class} loss takes no class_weights; leave them out.")
        _check_options(type(self), options)
        self.options = dict(options)
        self._built: dict[str, nn.Module] = {}

    @classmethod
    def _smp_params(cls) -> list[str]:
        import inspect

        import segmentation_models_pytorch.losses as smp_losses

        return list(inspect.signature(getattr(smp_losses, cls.smp_class)).parameters)

    @classmethod
    def option_names(cls) -> list[str]:
        """The smp keyword arguments this loss takes as options (e.g. ``gamma``, ``alpha``)."""
        return [p for p in cls._smp_params() if p not in cls.MANAGED]

    def _loss(self, mode: str) -> nn.Module:
        if mode not in self._built:
            import segmentation_models_pytorch.losses as smp_losses

            params = self._smp_params()
            kwargs = dict(self.options, mode=mode)
            if "ignore_index" in params:
                kwargs["ignore_index"] = self.ignore_index
            if "class_weights" in params and self.class_weights is not None:
                kwargs["class_weights"] = self.class_weights
            if "smooth" in params:
                kwargs["smooth"] = self.smooth
            self._built[mode] = getattr(smp_losses, self.smp_class)(**kwargs)
        return self._built[mode]

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "multilabel":
            return self._loss(mode)(logits, target)
        if self.ignore_index is not None and bool((target == self.ignore_index).all()):
            return logits.sum() * 0.0  # nothing counted: 0 (smp gives NaN), graph kept
        return self._loss(mode)(logits, target)


@register_loss("focal")
class FocalLoss(SmpLoss):
    """smp's focal loss ``-(1 - p_t)^gamma · log p_t`` (options: gamma, alpha, normalized, ...)."""

    smp_class = "FocalLoss"
    MANAGED = ("mode", "from_logits", "ignore_index", "class_weights")


@register_loss("tversky")
class TverskyLoss(SmpLoss):
    """smp's Tversky loss ``1 - TP / (TP + alpha·FP + beta·FN)`` (options: alpha, beta, gamma)."""

    smp_class = "TverskyLoss"


@register_loss("lovasz")
class LovaszLoss(SmpLoss):
    """smp's Lovász hinge (binary) / Lovász-softmax (multiclass) loss (option: per_image)."""

    smp_class = "LovaszLoss"


@register_loss("jaccard")
class JaccardLoss(SmpLoss):
    """smp's soft Jaccard (IoU) loss ``1 - |p·t| / |p + t - p·t|`` (options: log_loss, ...)."""

    smp_class = "JaccardLoss"


class CombinedLoss(SegmentationLoss):
    """A weighted sum of registered losses, e.g. ``0.5*ce + dice``.

    Attributes:
        terms: ``(weight, name, loss)`` triples.
    """

    def __init__(self, terms: list[tuple[float, str, SegmentationLoss]], **kwargs: Any):
        super().__init__(**kwargs)
        self.multilabel = all(loss.multilabel for _, _, loss in terms)
        self.terms = terms
        self.losses = nn.ModuleList(loss for _, _, loss in terms)
        self.accepts_soft = all(loss.accepts_soft for _, _, loss in terms)

    def check_soft(self, target: torch.Tensor, mode: str) -> torch.Tensor:
        """As :meth:`SegmentationLoss.check_soft`, naming the term that refuses soft targets."""
        refusing = [name for _, name, loss in self.terms if not loss.accepts_soft]
        if refusing and mode == "binary":
            raise TypeError(
                f"The loss term(s) {', '.join(refusing)} take integer labels, got a "
                f"{target.dtype} target (soft targets, data.soft_targets): use soft_dice, bce "
                "or ce terms."
            )
        return super().check_soft(target, mode)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        total = logits.new_zeros(())
        for weight, _, loss in self.terms:
            total = total + weight * loss.compute(logits, target, mode)
        return total


_TERM = re.compile(
    r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$", re.S
)


def _split_terms(expression: str) -> list[str]:
    """Split at ``+`` outside parentheses (``focal(gamma=2) + dice``)."""
    parts, depth, current = [], 0, ""
    for char in str(expression):
        depth += (char == "(") - (char == ")")
        if char == "+" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _term_options(text: str | None, expression: str) -> dict[str, Any]:
    """``"gamma=2, alpha=0.25"`` -> ``{"gamma": 2, "alpha": 0.25}`` (values read as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(
                f"Cannot read the loss options {text!r} in {expression!r}: write them as "
                "name=value pairs, e.g. 'focal(gamma=2, alpha=0.25)'."
            )
        options[key.strip()] = yaml.safe_load(value.strip())
    return options


def parse_loss_expression(expression: str) -> list[tuple[float, str, dict[str, Any]]]:
    """``"0.5*ce + focal(gamma=1)"`` -> ``[(0.5, "ce", {}), (1.0, "focal", {"gamma": 1})]``.

    Raises:
        ConfigError: a malformed expression or an unknown loss name (with close names).
    """
    terms = []
    for part in _split_terms(expression):
        match = _TERM.match(part)
        if not match:
            raise ConfigError(
                f"Cannot parse loss {expression!r} at {part.strip()!r}. Write a name or a "
                "weighted sum such as 'ce + dice', '0.5*ce + 1.0*soft_dice' or "
                "'ce + focal(gamma=2)'."
            )
        weight, name, args = match.groups()
        if name not in _LOSSES:
            raise ConfigError(
                unknown_name("loss", name, _LOSSES) + " See `list_losses()`." + PLUGIN_HINT
            )
        options = _term_options(args, expression)
        terms.append((1.0 if weight is None else float(weight), name, options))
    return terms


def _options_per_term(
    terms: list[tuple[float, str, dict[str, Any]]], options: dict[str, Any], expression: str
) -> list[dict[str, Any]]:
    """Each term's options: shared ``options`` keys it takes, ``options[<term name>]``, then
    the options written in the expression. A key no term takes is a ConfigError."""
    names = {name for _, name, _ in terms}
    taken: set[str] = set()
    out = []
    for _, name, own in terms:
        valid = loss_option_names(_LOSSES[name])
        mine = {k: v for k, v in options.items() if k in valid and k not in names}
        taken |= set(mine)
        per_term = options.get(name) or {}
        if not isinstance(per_term, dict):
            raise ConfigError(
                f"loss.options.{name} must be a mapping of {name}'s options, got {per_term!r}."
            )
        out.append({**mine, **per_term, **own})
    for key in options:
        if key not in taken and key not in names:
            valid = sorted({o for _, n, _ in terms for o in loss_option_names(_LOSSES[n])})
            hint = suggest(key, valid) or (
                f" Its terms take: {', '.join(valid)}." if valid else " Its terms take none."
            )
            raise ConfigError(f"No term of the loss {expression!r} takes the option {key!r}.{hint}")
    return out


def build_loss(
    name: str,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    mode: str | None = None,
    **options: Any,
) -> SegmentationLoss:
    """Build a loss by name or weighted-sum expression.

    Args:
        name: a registered name (``soft_dice``, ``dice``, ``ce``, ``bce``, ``focal``,
            ``tversky``, ``lovasz``, ``jaccard``, ...) or a weighted sum such as
            ``"0.5*ce + 1.0*soft_dice"``; a term may carry options: ``"ce + focal(gamma=1)"``.
        smooth: Dice smoothing term (every term that has one).
        ignore_index: label value whose pixels are left out of every term.
        class_weights: one weight per class (binary: background, foreground).
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` (a 0/1 target per channel), or
            ``None`` to infer from the logits' channels.
        **options: keyword options of the terms (``gamma=1``), given to each term that takes
            them, or per term (``focal={"gamma": 1}``); ``loss.options`` in a config.

    Returns:
        A module called as ``loss(logits N x C x H x W, target N x H x W int64)``.

    Raises:
        ConfigError: unknown name, malformed expression, an option no term takes, or a term
            that cannot train a multi-label model.
    """
    shared = dict(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights, mode=mode)
    terms = parse_loss_expression(name)
    if mode == "multilabel":
        unable = [n for _, n, _ in terms if not _LOSSES[n].multilabel]
        if unable:
            able = [n for n in sorted(_LOSSES) if _LOSSES[n].multilabel]
            raise ConfigError(
                f"Loss {unable[0]!r} cannot train a multi-label model: it treats the classes as "
                f"exclusive. Use one that scores each class on its own ({', '.join(able)}) or "
                "a sum such as 'bce + dice' (loss.name)."
            )
    per_term = _options_per_term(terms, options, name)
    losses = []
    for (w, n, _), opts in zip(terms, per_term):
        _check_options(_LOSSES[n], opts)
        losses.append((w, n, _LOSSES[n](**shared, **opts)))
    if len(losses) == 1 and losses[0][0] == 1.0:
        return losses[0][2]
    return CombinedLoss(losses, **shared)
