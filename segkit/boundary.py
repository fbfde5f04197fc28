"""Boundary metrics of one class in one image (``evaluate --boundary D``), from SciPy's
Euclidean distance transform.

- **Boundary IoU** (Cheng et al., CVPR 2021): the IoU of the two masks' inner bands of
  width ``D`` (the pixels of a mask within ``D`` of its outside; the image border counts as
  outside, as in the boundary-iou-api's padding): ``|G_D ∩ P_D| / |G_D ∪ P_D|``.
- **Boundary F-score** at tolerance ``D`` (Csurka et al.; DAVIS' F): precision is the share
  of the prediction's contour pixels within ``D`` of the truth's contour, recall the share
  of the truth's contour within ``D`` of the prediction's; their harmonic mean.
- **HD95**: the larger of the two directed 95th percentiles of contour-to-contour distances
  (MONAI's ``compute_hausdorff_distance(percentile=95)``), in pixels.

A contour is a mask's inner band of width 1. Where neither mask holds the class, every score
is undefined (NaN); where only one does, boundary IoU and F are 0 and HD95 is NaN. Ignored
pixels are taken out of both masks first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: the per-class boundary scores, ``<score>_<class name>`` in the per-image table
BOUNDARY_SCORES = ("biou", "bf", "hd95")


def inner_band(mask: np.ndarray, width: float) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` (Euclidean) of a pixel outside it (the image
    border counts as outside); at least its contour (a width under 1 counts as 1)."""
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    depth = distance_transform_edt(padded)[1:-1, 1:-1]
    return mask & (depth <= max(width, 1.0))


def _distance_to(points: np.ndarray) -> np.ndarray:
    """Each pixel's Euclidean distance to the nearest ``True`` pixel of ``points``."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~points)


def boundary_scores(
    truth: np.ndarray, pred: np.ndarray, tolerance: float, ignore: np.ndarray | None = None
) -> dict[str, float]:
    """``{"biou", "bf", "hd95"}`` of one class: ``truth`` and ``pred`` its ``H x W`` masks.

    Args:
        truth: where the class is.
        pred: where it is predicted.
        tolerance: the band width / match distance ``D`` in pixels (> 0).
        ignore: pixels left out of both (None: none).

    Raises:
        ValueError: a tolerance that is not positive, or masks of different shapes.
    """
    if not tolerance > 0:
        raise ValueError(f"boundary tolerance {tolerance!r}: give a positive number of pixels.")
    truth, pred = np.asarray(truth, bool), np.asarray(pred, bool)
    if truth.shape != pred.shape:
        raise ValueError(f"Truth {truth.shape} and prediction {pred.shape} differ in shape.")
    if ignore is not None:
        truth, pred = truth & ~ignore, pred & ~ignore
    nan = float("nan")
    if not truth.any() and not pred.any():
        return {"biou": nan, "bf": nan, "hd95": nan}
    if not truth.any() or not pred.any():
        return {"biou": 0.0, "bf": 0.0, "hd95": nan}
    g, p = inner_band(truth, tolerance), inner_band(pred, tolerance)
    biou = float((g & p).sum() / (g | p).sum())
    cg, cp = inner_band(truth, 1.0), inner_band(pred, 1.0)
    to_g, to_p = _distance_to(cg)[cp], _distance_to(cp)[cg]  # pred contour -> truth's, ...
    precision = float((to_g <= tolerance).mean())
    recall = float((to_p <= tolerance).mean())
    bf = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    hd95 = float(max(np.percentile(to_g, 95), np.percentile(to_p, 95)))
    return {"biou": biou, "bf": bf, "hd95": hd95}


def mean_defined(values: Any) -> float:
    """The mean of the defined (non-NaN) values; NaN when none is."""
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")
