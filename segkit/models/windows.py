"""Windows: a model run over an image in overlapping windows, at its own or its training scale.

This is the one window engine: prediction, evaluation and training's validation all run
windows through it. It lives in ``models`` (pure torch) because training's validation, in
``engine``, runs windows too and ``engine`` may not import ``inference``.

:class:`Windows` holds the settings that travel together (tile, overlap, blend, windows per
call, scale), checked once when it is made. Windows of ``span`` x ``span`` image pixels
(``tile / scale``, smaller where the image is) step by ``round(span * (1 - overlap))``; the
last row and column of windows end at the image's edge. Where windows overlap, their outputs
are blended with per-pixel weights that are divided out again: ``"gaussian"`` (the default)
weighs a window's centre over its edges, where a network sees the least context: a separable
Gaussian whose sigma is ``sigma_scale`` (0.125, as in MONAI's sliding-window inferer) times
the window's side, 1 at the centre, floored at 1e-3 so that every pixel keeps some weight;
``"uniform"`` is the plain mean.

:func:`blend_bands` is the core: it runs a band of window rows at a time (enough rows to fill
a window batch) and yields each band's finished rows as soon as no later window reaches them;
an image wider than ``strip_width`` is walked in column strips as well (the windows that
straddle two strips run once for each). So the floats held at once are bounded by the window
batch and one band (``outputs x band height x strip width``), whatever the image's size, and
the caller turns each band into what it keeps (labels, confusion counts, a slice of a full
output: :func:`assemble`).

A model trained on crops (``data.crop``: ``spec.options["crop"]``, :func:`crop_record`) is run
on whole images at its training scale: each window, covering ``tile / scale`` image pixels,
is resized by ``scale`` to the crop size the model saw (:func:`at_scale`), run, and its
*probabilities* resized back to the window's own size before blending, so everything is held
at the image's own resolution. :class:`ScaledWindows` is training's validation wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import ConfigError, option
from segkit.models.factory import crop, pad_to_divisor

#: a window: top row, left column, height, width
Box = tuple[int, int, int, int]

#: how overlapping windows may be blended
BLENDS = ("gaussian", "uniform")

#: default Gaussian sigma as a fraction of the window's side (MONAI's default too)
SIGMA_SCALE = 0.125

#: probabilities are kept this far from 0 and 1 when turned back into logits
PROB_EPS = 1e-7


def check_overlap(overlap: float) -> float:
    """``overlap`` if neighbouring windows may share that fraction of a window: [0, 1).

    Raises:
        ConfigError: otherwise.
    """
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ConfigError(
            f"{option('overlap', overlap)}: the fraction of a window that neighbouring windows "
            "share must be at least 0 and below 1 (e.g. 0.25)."
        )
    return float(overlap)


def check_blend(blend: str) -> str:
    """``blend`` if it names a way of blending windows (:data:`BLENDS`).

    Raises:
        ConfigError: otherwise.
    """
    if blend not in BLENDS:
        raise ConfigError(
            f"Unknown {option('blend', repr(blend))}; use 'gaussian' (window centres weigh "
            "more) or 'uniform' (a plain mean)."
        )
    return blend


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option(name, value)}: must be a positive whole number.")


def check_tile(tile: int | None, divisor: int | None) -> int | None:
    """``tile`` if it is a positive whole number no smaller than the model's ``divisor``.

    Raises:
        ConfigError: otherwise.
    """
    if tile is None:
        return None
    _check_positive("tile", tile)
    if tile < (divisor or 1):
        raise ConfigError(
            f"Tile size {tile} is smaller than the model's divisor {divisor}; "
            f"use a tile of at least {divisor} pixels."
        )
    return tile


def window_span(tile: int, scale: float) -> int:
    """How many of an image's own pixels a window of ``tile`` model pixels covers at
    ``scale``: ``tile / scale``, rounded, at least 1."""
    return max(1, round(tile / scale))


@dataclass(frozen=True)
class Windows:
    """How an image is run in windows: the settings that always travel together.

    Checked when made (:class:`~segkit.errors.ConfigError` naming the setting).

    Attributes:
        tile: window side as the model sees it, in pixels (a crop-trained model's crop size).
        overlap: fraction of a window that neighbouring windows share, in [0, 1).
        blend: ``"gaussian"`` (window centres weigh more) or ``"uniform"`` (a plain mean).
        batch_size: windows per model call.
        scale: factor each window is resized by for the model (a crop-trained model's
            ``data.crop.scale``; 1: the image's own resolution).
    """

    tile: int
    overlap: float = 0.25
    blend: str = "gaussian"
    batch_size: int = 8
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("tile", self.tile)
        object.__setattr__(self, "overlap", check_overlap(self.overlap))
        check_blend(self.blend)
        _check_positive("batch_size", self.batch_size)
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"{option('scale', scale)}: must be a positive number (e.g. 0.5).")
        object.__setattr__(self, "scale", float(scale))

    @property
    def span(self) -> int:
        """A window's side in the image's own pixels: ``tile / scale`` (:func:`window_span`)."""
        return window_span(self.tile, self.scale)


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` pixels, ``stride`` apart, covering ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def window_stride(tile: int, overlap: float) -> int:
    """Pixels between neighbouring windows' starts: ``tile * (1 - overlap)``, rounded, >= 1."""
    return max(1, int(round(tile * (1.0 - check_overlap(overlap)))))


def window_boxes(height: int, width: int, tile: int, overlap: float = 0.25) -> list[Box]:
    """The windows ``(y, x, h, w)`` covering a ``height`` x ``width`` image, row by row."""
    stride = window_stride(tile, overlap)
    h, w = min(tile, height), min(tile, width)
    return [
        (y, x, h, w)
        for y in window_starts(height, tile, stride)
        for x in window_starts(width, tile, stride)
    ]


def blend_weights(
    height: int,
    width: int,
    blend: str = "gaussian",
    sigma_scale: float = SIGMA_SCALE,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-pixel weights ``height x width`` (float32) of one window's outputs.

    ``"gaussian"``: ``exp(-d² / 2σ²)`` along each axis (d from the window's centre,
    σ = ``sigma_scale`` x that side), multiplied, 1 at the centre, at least 1e-3;
    ``"uniform"``: ones.
    """
    check_blend(blend)
    if blend == "uniform":
        return torch.ones(height, width, device=device)
    axes = []
    for n in (height, width):
        d = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        axes.append(torch.exp(-(d * d) / (2.0 * sigma * sigma)))
    weights = axes[0][:, None] * axes[1][None, :]
    return weights.clamp_min_(max(float(weights.min()), 1e-3))


@dataclass
class Band:
    """Finished blended outputs ``K x h x w`` whose top-left pixel is at ``(y, x)``."""

    y: int
    x: int
    out: torch.Tensor


def _strips(width: int, starts: list[int], tile_w: int, stride: int, strip_width: int):
    """Column ranges ``(c0, c1, window starts reaching them)`` of at most ``strip_width``."""
    per_strip = max(1, (max(strip_width, tile_w) - tile_w) // stride + 1)
    for k in range(0, len(starts), per_strip):
        c0 = starts[k] if k else 0
        c1 = starts[k + per_strip] if k + per_strip < len(starts) else width
        yield c0, c1, [x for x in starts if x < c1 and x + tile_w > c0]


def blend_bands(
    fn: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[Box], torch.Tensor],
    size: tuple[int, int],
    windows: Windows,
    strip_width: int | None = None,
) -> Iterator[Band]:
    """Blended window outputs of one image, yielded band by band as they are finished.

    Bands come strip by strip (left to right), top to bottom within a strip, and together
    cover the image once. When one window covers the whole image its output is yielded as
    ``fn`` returned it (so it equals a single model call); otherwise outputs are blended in
    float32.

    Args:
        fn: maps a batch of windows (``torch.stack`` of what ``read`` returns) to outputs
            ``B x K x h x w`` at the windows' own size (a model, a probability function with
            test-time augmentation; at a scale, :func:`at_scale` of one).
        read: returns the input of one window ``(y, x, h, w)``, e.g. a crop of the image.
        size: the image's ``(height, width)``.
        windows: the windows' settings; a window covers ``windows.span`` image pixels, and
            ``windows.batch_size`` windows go to each ``fn`` call.
        strip_width: widest column strip walked at once (default ``max(4096, 8 * span)``).
    """
    tile, batch_size = windows.span, windows.batch_size
    height, width = size
    stride = window_stride(tile, windows.overlap)
    th, tw = min(tile, height), min(tile, width)
    ys, xs = window_starts(height, tile, stride), window_starts(width, tile, stride)
    if len(ys) == 1 and len(xs) == 1:
        yield Band(0, 0, fn(read((0, 0, th, tw))[None])[0])
        return
    weights: torch.Tensor | None = None
    for c0, c1, strip_xs in _strips(width, xs, tw, stride, strip_width or max(4096, 8 * tile)):
        rows_per_band = max(1, math.ceil(batch_size / len(strip_xs)))
        top, carry = 0, None
        for b in range(0, len(ys), rows_per_band):
            rows = ys[b : b + rows_per_band]
            acc = wsum = None
            boxes = [(y, x, th, tw) for y in rows for x in strip_xs]
            for i in range(0, len(boxes), batch_size):
                chunk = boxes[i : i + batch_size]
                out = fn(torch.stack([read(box) for box in chunk])).float()
                if weights is None:
                    weights = blend_weights(th, tw, windows.blend, device=out.device)
                if acc is None:
                    shape = (rows[-1] + th - top, c1 - c0)
                    acc = out.new_zeros((out.shape[1], *shape))
                    wsum = out.new_zeros((1, *shape))
                    if carry is not None:
                        acc[:, : carry[0].shape[1]] = carry[0]
                        wsum[:, : carry[1].shape[1]] = carry[1]
                for (y, x, _, _), o in zip(chunk, out):
                    lo, hi = max(x, c0), min(x + tw, c1)
                    w = weights[:, lo - x : hi - x]
                    acc[:, y - top : y - top + th, lo - c0 : hi - c0] += (
                        o[:, :, lo - x : hi - x] * w
                    )
                    wsum[:, y - top : y - top + th, lo - c0 : hi - c0] += w
            done = ys[b + rows_per_band] if b + rows_per_band < len(ys) else height
            yield Band(top, c0, acc[:, : done - top] / wsum[:, : done - top])
            carry = (acc[:, done - top :].clone(), wsum[:, done - top :].clone())
            top = done


def assemble(
    bands: Iterator[Band],
    size: tuple[int, int],
    convert: Callable[[torch.Tensor], Any] | None = None,
) -> Any:
    """One image's bands put together: ``... x H x W`` (``size``), each band's outputs
    turned by ``convert`` first (e.g. into numpy labels; None: the tensor as it is)."""
    whole: Any = None
    for band in bands:
        part = band.out if convert is None else convert(band.out)
        if whole is None:
            shape = (*part.shape[:-2], *size)
            torch_out = isinstance(part, torch.Tensor)
            whole = part.new_empty(shape) if torch_out else np.empty(shape, part.dtype)
        h, w = part.shape[-2:]
        whole[..., band.y : band.y + h, band.x : band.x + w] = part
    return whole


def channels_first_reader(image: torch.Tensor) -> Callable[[Box], torch.Tensor]:
    """``read`` for :func:`blend_bands` over a ``C x H x W`` image (a normalised tensor)."""

    def read(box: Box) -> torch.Tensor:
        y, x, h, w = box
        return image[:, y : y + h, x : x + w]

    return read


def channels_last_reader(image: Any) -> Callable[[Box], Any]:
    """``read`` for :func:`blend_bands` over an ``H x W x C`` image (uint8 pixels as read)."""

    def read(box: Box) -> Any:
        y, x, h, w = box
        return image[y : y + h, x : x + w]

    return read


def blend_image(
    fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, windows: Windows
) -> torch.Tensor:
    """The blended outputs ``K x H x W`` of one ``C x H x W`` image, whole."""
    size = tuple(image.shape[-2:])
    return assemble(blend_bands(fn, channels_first_reader(image), size, windows), size)


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
    """Logits at an input's own size from a model run in ``windows`` (training's validation).

    Windows cover ``windows.span`` (``tile / scale``) of the input's pixels; each is resized
    to the model's scale (:func:`at_scale`), its probabilities back, and the windows are
    blended. ``forward`` returns logits of the blended probabilities, which is what
    ``segkit evaluate`` and ``segkit predict`` compute for the same model band by band; an
    input that fits in one window at scale 1 gives the bare model's logits (padded to the
    divisor and cropped back).

    Args:
        model: a segkit model (with a ``.spec``) returning logits.
        windows: the windows' settings (a crop-trained model's: its crop size and scale).
    """

    def __init__(self, model: nn.Module, windows: Windows) -> None:
        super().__init__()
        self.model = model
        self.spec = model.spec
        self.windows = windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x K x H x W`` of a normalised ``N x C x H x W`` batch."""
        height, width = x.shape[-2:]
        span, scale = self.windows.span, self.windows.scale
        if scale == 1.0 and height <= span and width <= span:
            padded, size = pad_to_divisor(x, self.spec.divisor or 1)
            return crop(self.model(padded), size)

        def probs(batch: torch.Tensor) -> torch.Tensor:
            return at_scale(lambda b: forward_probs(self.model, b), batch, scale)

        outs = [blend_image(probs, image, self.windows) for image in x]
        return probs_to_logits(torch.stack(outs), sigmoid_outputs(self.spec))

    def extra_repr(self) -> str:
        w = self.windows
        return f"tile={w.tile}, scale={w.scale:g}, overlap={w.overlap}"


def crop_record(spec: Any) -> dict[str, Any] | None:
    """What a crop-trained model's spec recorded for prediction (``size``, ``scale``,
    ``overlap``), or None for a model trained on whole resized images."""
    options = getattr(spec, "options", None) or {}
    record = options.get("crop")
    return dict(record) if record else None
