"""Pure loss functions over logits and targets: soft Dice, Dice, cross-entropy, BCE."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

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
