"""Scoring in sliding windows: each finished band of probabilities is counted and dropped.

``segkit evaluate --tile N`` scores whole images at their native resolution. The loader
yields uint8 images (no transform: no resize, no normalisation) and their masks; each window
batch is normalised and moved to the device as it is read, and each finished band of
probabilities (:func:`~segkit.inference.tiling.prob_bands`) becomes labels, confusion counts
and soft-Dice sums at once. So memory beyond the image and its mask is one band and one
window batch, whatever the images' size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from segkit.engine.evaluation import Evaluator, as_target, unpack_batch
from segkit.inference.options import TTA
from segkit.inference.tiling import prob_bands, probs_to_labels_torch
from segkit.models.sliding import check_blend, check_overlap


def score_tiled(
    model: torch.nn.Module,
    loader: Any,
    evaluator: Evaluator,
    device: torch.device,
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: TTA | str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
    blend: str = "gaussian",
    *,
    scale: float = 1.0,
) -> dict[str, float]:
    """Score ``model`` over ``loader`` in sliding windows; returns the evaluator's metrics.

    Args:
        model: a segkit model (``spec.mean``/``spec.std`` normalise the windows) on ``device``.
        loader: yields ``{"image": N x H x W x C uint8, "mask": N x H x W}`` batches.
        evaluator: what accumulates the counts (class names, groups, ignore index).
        device: where the windows are run.
        tile: window side in pixels.
        overlap: fraction of a window that neighbouring windows share.
        batch_size: windows per model call.
        tta: test-time augmentation of each window (:func:`~segkit.inference.parse_tta`).
        flip_pairs: class pairs that flip TTA swaps back.
        blend: ``"gaussian"`` or ``"uniform"`` blending of overlapping windows.
        scale: the model's input scale (a crop-trained model's ``data.crop.scale``): windows
            then cover ``tile / scale`` image pixels (:func:`~segkit.inference.tiling.prob_bands`).

    A multi-label evaluator (``multilabel=True``; its ``thresholds``, 0.5 each when None)
    scores each class's thresholded band against ``C x H x W`` masks.
    """
    check_overlap(overlap)
    check_blend(blend)
    spec = model.spec
    mean, std = spec.mean or (0.0,) * 3, spec.std or (1.0,) * 3
    window = (tile, overlap, batch_size, tta, flip_pairs, blend, device, scale)
    thresholds = None
    if evaluator.multilabel:
        thresholds = evaluator.thresholds or [0.5] * spec.classes
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        with torch.inference_mode():
            for batch in loader:
                images, masks = unpack_batch(batch)
                for image, mask in zip(images, masks):
                    sums = None
                    for band in prob_bands(model, image, mean, std, *window):
                        h, w = band.out.shape[-2:]
                        target = mask[..., band.y : band.y + h, band.x : band.x + w]
                        target = as_target(target.to(device))
                        preds = probs_to_labels_torch(band.out, thresholds=thresholds)
                        sums = evaluator.update_region(band.out, preds, target, sums)
                    evaluator.finish_image(sums)
        return evaluator.compute()
    finally:
        model.train(was_training)
