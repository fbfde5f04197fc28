"""Scoring in windows: each finished band of probabilities is counted and dropped.

``segkit evaluate --tile N`` (and every evaluation of a crop-trained model) scores whole
images at their native resolution. The loader yields images as read (no transform: no
resize, no normalisation) and their masks; the :class:`~segkit.inference.Predictor` runs
each image in its windows (each window batch normalised and moved to the device as it is
read, :meth:`~segkit.inference.Predictor.window_bands`), and each finished band becomes
labels, confusion counts and soft-Dice sums at once. So memory beyond the image and its mask
is one band and one window batch, whatever the images' size.
"""

from __future__ import annotations

from typing import Any

from segkit.engine.evaluation import Evaluator, as_target, unpack_batch
from segkit.inference.predictor import Predictor
from segkit.inference.probs import probs_to_labels_torch


def score_in_windows(predictor: Predictor, loader: Any, evaluator: Evaluator) -> dict[str, float]:
    """Score ``predictor`` (which runs in windows) over ``loader``; the evaluator's metrics.

    Args:
        predictor: a Predictor with :attr:`~segkit.inference.Predictor.windows`.
        loader: yields ``{"image": N x H x W x C, "mask": N x H x W}`` batches as read.
        evaluator: what accumulates the counts (class names, groups, ignore index). A
            multi-label evaluator (``multilabel=True``; its ``thresholds``, 0.5 each when
            None) scores each class's thresholded band against ``C x H x W`` masks.
    """
    thresholds = None
    if evaluator.multilabel:
        thresholds = evaluator.thresholds or [0.5] * predictor.spec.classes
    evaluator.reset()
    with predictor.evaluating():
        for batch in loader:
            images, masks = unpack_batch(batch)
            for image, mask in zip(images, masks):
                sums = None
                for band in predictor.window_bands(image):
                    h, w = band.out.shape[-2:]
                    target = mask[..., band.y : band.y + h, band.x : band.x + w]
                    target = as_target(target.to(predictor.device))
                    preds = probs_to_labels_torch(band.out, thresholds=thresholds)
                    sums = evaluator.update_region(band.out, preds, target, sums)
                evaluator.finish_image(sums)
    return evaluator.compute()
