"""Sliding windows: a model run over an image too large for one call, in overlapping windows.

Windows of ``tile`` x ``tile`` pixels (smaller where the image is) step by
``round(tile * (1 - overlap))``; the last row and column of windows end at the image's edge.
Where windows overlap, their outputs are blended with per-pixel weights that are divided out
again: ``"gaussian"`` (the default) weighs a window's centre over its edges, where a network
sees the least context: a separable Gaussian whose sigma is ``sigma_scale`` (0.125, as in
MONAI's sliding-window inferer) times the window's side, 1 at the centre, floored at 1e-3 so
that every pixel keeps some weight; ``"uniform"`` is the plain mean.

:func:`blend_bands` is the core: it runs a band of window rows at a time (enough rows to fill
a window batch) and yields each band's finished rows as soon as no later window reaches them;
an image wider than ``strip_width`` is walked in column strips as well (the windows that
straddle two strips run once for each). So the floats held at once are bounded by the window
batch and one band (``outputs x band height x strip width``), whatever the image's size, and
the caller turns each band into what it keeps (labels, confusion counts, a slice of a full
output). :class:`SlidingWindow` wraps a segkit model to return the blended outputs whole.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from segkit.errors import ConfigError, option
from segkit.models.factory import crop, pad_to_divisor

#: a window: top row, left column, height, width
Box = tuple[int, int, int, int]

#: how overlapping windows may be blended
BLENDS = ("gaussian", "uniform")

#: default Gaussian sigma as a fraction of the window's side (MONAI's default too)
SIGMA_SCALE = 0.125


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


def check_tile(tile: int | None, divisor: int | None) -> int | None:
    """``tile`` if it is a positive whole number no smaller than the model's ``divisor``.

    Raises:
        ConfigError: otherwise.
    """
    if tile is None:
        return None
    _check_window(tile, 1)
    if tile < (divisor or 1):
        raise ConfigError(
            f"Tile size {tile} is smaller than the model's divisor {divisor}; "
            f"use a tile of at least {divisor} pixels."
        )
    return tile


def _check_window(tile: int, batch_size: int) -> None:
    for name, value in (("tile", tile), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{option(name, value)}: must be a positive whole number.")


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
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    blend: str = "gaussian",
    strip_width: int | None = None,
) -> Iterator[Band]:
    """Blended window outputs of one image, yielded band by band as they are finished.

    Bands come strip by strip (left to right), top to bottom within a strip, and together
    cover the image once. When one window covers the whole image its output is yielded as
    ``fn`` returned it (so it equals a single model call); otherwise outputs are blended in
    float32.

    Args:
        fn: maps a batch of windows (``torch.stack`` of what ``read`` returns) to outputs
            ``B x K x h x w`` (a model, a probability function with test-time augmentation).
        read: returns the input of one window ``(y, x, h, w)``, e.g. a normalised crop.
        size: the image's ``(height, width)``.
        tile: window side in pixels.
        overlap: fraction of a window that neighbouring windows share, in [0, 1).
        batch_size: windows per ``fn`` call.
        blend: ``"gaussian"`` or ``"uniform"`` weights (:func:`blend_weights`).
        strip_width: widest column strip walked at once (default ``max(4096, 8 * tile)``).

    Raises:
        ConfigError: a bad tile, overlap, batch size or blend.
    """
    _check_window(tile, batch_size)
    height, width = size
    stride = window_stride(tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    ys, xs = window_starts(height, tile, stride), window_starts(width, tile, stride)
    check_blend(blend)
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
                    weights = blend_weights(th, tw, blend, device=out.device)
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


def blend_image(
    fn: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[Box], torch.Tensor],
    size: tuple[int, int],
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    blend: str = "gaussian",
) -> torch.Tensor:
    """The blended outputs ``K x H x W`` of one image, whole (:func:`blend_bands`' bands)."""
    out: torch.Tensor | None = None
    for band in blend_bands(fn, read, size, tile, overlap, batch_size, blend):
        if out is None:
            out = band.out.new_empty((band.out.shape[0], *size))
        h, w = band.out.shape[-2:]
        out[:, band.y : band.y + h, band.x : band.x + w] = band.out
    return out


class SlidingWindow(nn.Module):
    """Wrap a segkit model so that ``forward`` runs it in overlapping windows and blends them.

    ``forward(x)`` takes a normalised batch ``N x C x H x W`` of any size and returns the
    blended outputs (logits) ``N x K x H x W``: each window is padded to the model's
    ``spec.divisor`` and cropped back, windows are batched ``batch_size`` to a call. An image
    that fits in one window gives exactly the bare model's output (padded and cropped when its
    sides are not multiples of the divisor).

    Args:
        model: a model with a ``.spec`` (its ``divisor``), or any module (divisor 1).
        tile: window side in pixels.
        overlap: fraction of a window that neighbouring windows share, in [0, 1).
        batch_size: windows per model call.
        blend: ``"gaussian"`` (default) or ``"uniform"`` (:func:`blend_weights`).

    Raises:
        ConfigError: a bad tile, overlap, batch size or blend.
    """

    def __init__(
        self,
        model: nn.Module,
        tile: int,
        overlap: float = 0.25,
        batch_size: int = 8,
        blend: str = "gaussian",
    ) -> None:
        super().__init__()
        _check_window(tile, batch_size)
        self.model = model
        self.spec = getattr(model, "spec", None)
        self.tile, self.overlap = tile, check_overlap(overlap)
        self.batch_size, self.blend = batch_size, check_blend(blend)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        divisor = (self.spec.divisor if self.spec is not None else None) or 1
        padded, size = pad_to_divisor(x, divisor)
        return crop(self.model(padded), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height <= self.tile and width <= self.tile:
            return self._run(x)
        outs = []
        for image in x:

            def read(box: Box, image: torch.Tensor = image) -> torch.Tensor:
                y, x0, h, w = box
                return image[:, y : y + h, x0 : x0 + w]

            args = (self.tile, self.overlap, self.batch_size, self.blend)
            outs.append(blend_image(self._run, read, (height, width), *args))
        return torch.stack(outs)

    def extra_repr(self) -> str:
        return f"tile={self.tile}, overlap={self.overlap}, batch_size={self.batch_size}, blend={self.blend!r}"
