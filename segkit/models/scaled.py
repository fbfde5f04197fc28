"""A model trained on crops, applied to whole images: resized by the training scale, run in
sliding windows of the crop size, its logits resized back to the image's own size.

Training with ``data.crop`` records ``spec.options["crop"]`` (``size``, ``scale``,
``overlap``); :func:`windows_for` reads it, so validation, ``segkit evaluate`` and the model
agree on how whole images are predicted.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.sliding import SlidingWindow


def rescale(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N x C x H x W`` resized to ``size``: area averaging when shrinking, else bilinear
    (as training's transforms and prediction's reader resize)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ScaledWindows(nn.Module):
    """Logits at an input's own size from a model trained on ``tile`` crops at ``scale``.

    The input is resized by ``scale``, run through :class:`~segkit.models.sliding.SlidingWindow`
    in windows of ``tile`` that overlap by ``overlap`` (each padded to the model's divisor,
    Gaussian-blended) and its logits are resized bilinearly to the input's size. Memory is
    that of the window batch plus the input and output planes, whatever the image size.

    Args:
        model: a segkit model (with a ``.spec``) returning logits.
        tile: window side, the training crop size (a multiple of the model's divisor).
        scale: factor the input is resized by first (1: native resolution).
        overlap: fraction of a window that neighbouring windows share.
        batch_size: windows per model call.
    """

    def __init__(
        self,
        model: nn.Module,
        tile: int,
        scale: float = 1.0,
        overlap: float = 0.25,
        batch_size: int = 4,
    ) -> None:
        super().__init__()
        self.spec = getattr(model, "spec", None)
        self.scale = float(scale)
        self.windows = SlidingWindow(model, tile, overlap=overlap, batch_size=batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x K x H x W`` of a normalised ``N x C x H x W`` batch."""
        height, width = x.shape[-2:]
        size = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
        logits = self.windows(rescale(x, size))
        if size == (height, width):
            return logits
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def crop_record(spec: Any) -> dict[str, Any] | None:
    """What a crop-trained model's spec recorded for prediction (``size``, ``scale``,
    ``overlap``), or None for a model trained on whole resized images."""
    options = getattr(spec, "options", None) or {}
    record = options.get("crop")
    return dict(record) if record else None


def windows_for(model: nn.Module, batch_size: int = 4) -> nn.Module:
    """``model`` in :class:`ScaledWindows` as its spec's crop record says; ``model`` itself
    when it was not trained on crops."""
    record = crop_record(getattr(model, "spec", None))
    if record is None:
        return model
    return ScaledWindows(
        model,
        int(record["size"]),
        float(record.get("scale", 1.0)),
        float(record.get("overlap", 0.25)),
        batch_size,
    )
