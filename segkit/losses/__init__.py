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

from segkit.losses.base import (
    SHARED_ARGS,
    BCELoss,
    CrossEntropyLoss,
    DiceLoss,
    SegmentationLoss,
    SoftDiceLoss,
    list_losses,
    loss_option_names,
    register_loss,
)
from segkit.losses.expression import CombinedLoss, build_loss, loss_modules, parse_loss_expression
from segkit.losses.functional import (
    MODES,
    binary_cross_entropy,
    cross_entropy,
    dice_loss,
    probs_and_onehot,
    soft_dice_score,
)
from segkit.losses.smp import FocalLoss, JaccardLoss, LovaszLoss, SmpLoss, TverskyLoss

__all__ = [
    "MODES",
    "SHARED_ARGS",
    "BCELoss",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "LovaszLoss",
    "SegmentationLoss",
    "SmpLoss",
    "SoftDiceLoss",
    "TverskyLoss",
    "binary_cross_entropy",
    "build_loss",
    "cross_entropy",
    "dice_loss",
    "list_losses",
    "loss_modules",
    "loss_option_names",
    "parse_loss_expression",
    "probs_and_onehot",
    "register_loss",
    "soft_dice_score",
]
