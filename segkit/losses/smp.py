"""Losses of ``segmentation_models_pytorch.losses`` behind segkit's calling convention."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segkit.errors import ConfigError
from segkit.losses.base import SegmentationLoss, check_loss_options, register_loss


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
        check_loss_options(type(self), options)
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
