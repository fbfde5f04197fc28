"""The resolution ceiling: how well a perfect low-resolution prediction scores at full size.

A model trained at ``size x size`` predicts at that size, and its probabilities are resized
back to the image (:func:`~segkit.inference.probs.probs_to_labels`: bilinear, then above
0.5). Even a model that reproduces its training target exactly scores below Dice 1 at full
size, because the target already lost detail:

- ``binary``: the hard 0/1 label at each small pixel's centre (what ``prepare carvana``
  writes to ``masks/`` and training's nearest-neighbour resize gives);
- ``soft``: the fraction of each small pixel that is foreground, as stored by
  ``prepare carvana --soft`` (8-bit), the target of ``data.soft_targets``.

The Dice of each against the full-size mask is the best that training on it can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segkit.data.io import map_255_to_1
from segkit.data.soft import decode_coverage, encode_coverage, shrink_coverage, shrink_labels
from segkit.inference.probs import probs_to_labels
from segkit.metrics import ConfusionMatrix

#: the low-resolution targets compared, in the order reported
WAYS = ("binary", "soft")


def low_res_target(mask: np.ndarray, size: int, way: str) -> np.ndarray:
    """The ``size x size`` float32 target of a full-size 0/1 ``mask``, one of :data:`WAYS`.

    Raises:
        ValueError: an unknown ``way``, or a mask that is not 0/1.
    """
    if way == "binary":
        return shrink_labels(mask, size).astype(np.float32)
    if way == "soft":
        return decode_coverage(encode_coverage(shrink_coverage(mask, size)))
    raise ValueError(f"way must be one of {WAYS}, got {way!r}.")


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """Dice (F1) of the foreground of two 0/1 label maps; 1.0 when both are empty."""
    cm = ConfusionMatrix(2)
    cm.update(pred.astype(np.int64, copy=False), target.astype(np.int64, copy=False))
    score = cm.compute()["f1_1"]
    return 1.0 if np.isnan(score) else float(score)


def resolution_ceiling(mask: np.ndarray, size: int) -> dict[str, float]:
    """Dice at full size of a perfect ``size x size`` prediction of each target way.

    Args:
        mask: the full-size HxW mask, 0/1 (or 0/255).
        size: the side of the square training resolution.

    Returns:
        ``{"binary": dice, "soft": dice}``: each low-resolution target, taken as the
        predicted probabilities, resized back as prediction does and scored against ``mask``.
    """
    mask = map_255_to_1(mask)
    full = mask.shape[:2]
    return {
        way: dice(probs_to_labels(low_res_target(mask, size, way)[None], full), mask)
        for way in WAYS
    }


def dataset_ceilings(dataset: Any, size: int) -> list[dict[str, Any]]:
    """:func:`resolution_ceiling` for every sample of a binary data set read at full size.

    Args:
        dataset: a :class:`~segkit.data.base.SegmentationDataset` without a transform (for
            Carvana: the Kaggle layout, whose masks are full size).
        size: the side of the square training resolution.

    Returns:
        One ``{"id", "width", "height", "binary", "soft"}`` row per sample, in order.
    """
    rows = []
    for i in range(len(dataset)):
        _, mask, sample = dataset.read(i)
        height, width = mask.shape[:2]
        rows.append({"id": sample.id, "width": width, "height": height,
                     **resolution_ceiling(mask, size)})  # fmt: skip
    return rows


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The mean of each way's Dice over ``rows`` (mean per image, as Kaggle scored)."""
    return {way: float(np.mean([r[way] for r in rows])) for way in WAYS}
