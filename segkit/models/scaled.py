"""A model trained on crops, applied to whole images: windows at the training scale.

Training with ``data.crop`` records ``spec.options["crop"]`` (``size``, ``scale``,
``overlap``). A whole image is then predicted in windows that cover ``size / scale`` of its
own pixels: each window is resized by ``scale`` to the crop size the model saw, run, and its
*probabilities* resized back to the window's own size before the windows are blended. So
everything is held at the image's own resolution, one band of windows at a time, and the
floats held never grow with the image (:func:`segkit.models.sliding.blend_bands`).

:class:`ScaledWindows` does this for validation during training (returning logits of the
blended probabilities, for the loss and the evaluator); ``segkit evaluate`` and
``segkit predict`` do the same band by band (:func:`segkit.inference.tiling.prob_bands`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.factory import crop, pad_to_divisor
from segkit.models.sliding import Box, blend_image, check_blend, check_overlap

#: probabilities are kept this far from 0 and 1 when turned back into logits
PROB_EPS = 1e-7


def rescale(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``N x C x H x W`` resized to ``size``: area averaging when shrinking, else bilinear
    (as training's transforms and prediction's reader resize)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if size[0] <= x.shape[-2] and size[1] <= x.shape[-1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` times ``scale``, rounded, at least 1 each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def at_scale(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: float
) -> torch.Tensor:
    """``fn`` of ``x`` resized by ``scale`` (:func:`rescale`), its outputs resized back to
    ``x``'s size bilinearly; ``fn(x)`` itself at scale 1."""
    height, width = x.shape[-2:]
    size = scaled_size(height, width, scale)
    if size == (height, width):
        return fn(x)
    out = fn(rescale(x, size))
    return F.interpolate(out.float(), size=(height, width), mode="bilinear", align_corners=False)


def window_span(tile: int, scale: float) -> int:
    """How many of an image's own pixels a window of ``tile`` model pixels covers at
    ``scale``: ``tile / scale``, rounded, at least 1."""
    return max(1, round(tile / scale))


def sigmoid_outputs(spec: Any) -> bool:
    """Whether a model's channels are each a sigmoid (binary, multi-label) rather than a
    softmax over classes."""
    return spec.classes == 1 or spec.task == "multilabel"


def forward_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Probabilities ``N x C x H x W`` of a normalised batch of any size: padded to the
    model's divisor, run, cropped back; a sigmoid per channel (binary, multi-label), else a
    softmax."""
    spec = model.spec
    padded, size = pad_to_divisor(x, spec.divisor or 1)
    logits = crop(model(padded), size).float()
    return torch.sigmoid(logits) if sigmoid_outputs(spec) else torch.softmax(logits, dim=1)


def probs_to_logits(probs: torch.Tensor, sigmoid: bool) -> torch.Tensor:
    """Logits whose sigmoid (``sigmoid``) or softmax gives ``probs`` back (kept within
    :data:`PROB_EPS` of 0 and 1, so losses stay finite)."""
    p = probs.clamp(PROB_EPS, 1.0 - PROB_EPS)
    return torch.log(p) - torch.log1p(-p) if sigmoid else torch.log(p)


class ScaledWindows(nn.Module):
    """Logits at an input's own size from a model trained on ``tile`` crops at ``scale``.

    Windows cover :func:`window_span` (``tile / scale``) of the input's pixels and overlap by
    ``overlap``; each is resized to the model's scale (:func:`at_scale`), its probabilities
    back, and the windows are blended (Gaussian by default). ``forward`` returns logits of the
    blended probabilities, which is what ``segkit evaluate`` and ``segkit predict`` compute for
    the same model band by band; an input that fits in one window at scale 1 gives the bare
    model's logits.

    Args:
        model: a segkit model (with a ``.spec``) returning logits.
        tile: window side as the model sees it, the training crop size.
        scale: factor the windows are resized by first (1: native resolution).
        overlap: fraction of a window that neighbouring windows share.
        batch_size: windows per model call.
        blend: ``"gaussian"`` or ``"uniform"`` blending of overlapping windows.
    """

    def __init__(
        self,
        model: nn.Module,
        tile: int,
        scale: float = 1.0,
        overlap: float = 0.25,
        batch_size: int = 4,
        blend: str = "gaussian",
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.tile, self.scale = tile, float(scale)
        self.overlap, self.batch_size = check_overlap(overlap), batch_size
        self.blend = check_blend(blend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x K x H x W`` of a normalised ``N x C x H x W`` batch."""
        height, width = x.shape[-2:]
        span = window_span(self.tile, self.scale)
        if self.scale == 1.0 and height <= span and width <= span:
            padded, size = pad_to_divisor(x, self.spec.divisor or 1)
            return crop(self.model(padded), size)

        def probs(batch: torch.Tensor) -> torch.Tensor:
            return at_scale(lambda b: forward_probs(self.model, b), batch, self.scale)

        outs = []
        for image in x:

            def read(box: Box, image: torch.Tensor = image) -> torch.Tensor:
                y, x0, h, w = box
                return image[:, y : y + h, x0 : x0 + w]

            args = (span, self.overlap, self.batch_size, self.blend)
            outs.append(blend_image(probs, read, (height, width), *args))
        return probs_to_logits(torch.stack(outs), sigmoid_outputs(self.spec))

    def extra_repr(self) -> str:
        return f"tile={self.tile}, scale={self.scale:g}, overlap={self.overlap}"


def crop_record(spec: Any) -> dict[str, Any] | None:
    """What a crop-trained model's spec recorded for prediction (``size``, ``scale``,
    ``overlap``), or None for a model trained on whole resized images."""
    options = getattr(spec, "options", None) or {}
    record = options.get("crop")
    return dict(record) if record else None
