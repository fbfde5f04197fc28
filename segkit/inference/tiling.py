"""Sliding-window prediction: an image too large for one model call, predicted in windows.

Windows of ``tile`` x ``tile`` pixels (smaller where the image is) overlap by ``overlap`` of
a window; the last row and column of windows end at the image's edge. Where windows overlap
their probabilities are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from segkit.inference.options import TTA, check_overlap
from segkit.inference.probs import predict_proba


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of ``tile`` pixels, ``stride`` apart, covering ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def predict_tiled(
    model: torch.nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: TTA | str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> torch.Tensor:
    """Sliding-window probabilities ``C x H x W`` for one normalised ``3 x H x W`` image.

    Windows of ``tile`` x ``tile`` pixels (smaller where the image is) overlap by ``overlap``
    of a tile; where they overlap the probabilities are averaged.
    """
    overlap = check_overlap(overlap)
    _, height, width = image.shape
    stride = max(1, int(round(tile * (1.0 - overlap))))
    boxes = [
        (y, x, min(tile, height), min(tile, width))
        for y in window_starts(height, tile, stride)
        for x in window_starts(width, tile, stride)
    ]
    out: torch.Tensor | None = None
    counts = torch.zeros((1, height, width), device=image.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = torch.stack([image[:, y : y + h, x : x + w] for y, x, h, w in chunk])
        probs = predict_proba(model, batch, tta, flip_pairs)
        if out is None:
            out = torch.zeros((probs.shape[1], height, width), device=image.device)
        for (y, x, h, w), p in zip(chunk, probs):
            out[:, y : y + h, x : x + w] += p
            counts[:, y : y + h, x : x + w] += 1
    return out / counts
