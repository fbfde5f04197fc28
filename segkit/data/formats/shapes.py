"""Pure helpers shared by the annotation-tool readers (``coco``, ``labelme``, ``yolo_seg``):
numbers that may be stored as strings, point checks with errors naming the file and the
annotation, and filling shapes with OpenCV (no hand-written polygon filling).

Coordinates are in the tools' convention: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``,
so its centre is at ``(i + 0.5, j + 0.5)``. OpenCV paints the pixels whose centres the shape
covers, its outline included (a square from (2, 2) to (12, 12) paints 11 x 11 pixels, as
labelme's own Pillow drawing does); rasterisers differ on edge pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from segkit.errors import DataError

#: how far (in pixels) a point may lie outside the image before it is an error: tools write
#: points on the border as ``width`` or ``-0.5``; those are clipped, not refused
MARGIN = 1.0
#: fixed-point bits for OpenCV's sub-pixel vertices (1/256 pixel)
_SHIFT = 8


def number(value: Any, where: str, kind: type = float) -> Any:
    """``value`` as ``kind`` (int or float), accepting numbers stored as strings (``"3"``).

    Raises:
        DataError: not a number (``where`` says which file and annotation).
    """
    if isinstance(value, bool):
        value = None  # true/false is no number
    try:
        out = float(value) if isinstance(value, str) else value
        if kind is int:
            if not isinstance(out, (int, float)) or float(out) != int(out):
                raise ValueError
            return int(out)
        return float(out)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{where}: {value!r} is not a number; write it as a number.") from None


def points_array(values: Any, where: str, fix: str) -> np.ndarray:
    """A flat ``[x1, y1, x2, y2, ...]`` or nested ``[[x1, y1], ...]`` list as N x 2 float64
    (strings accepted); at least 3 points.

    Raises:
        DataError: not numbers, an odd count, or fewer than 3 points (with ``fix``).
    """
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: the points are not numbers ({str(values)[:60]}); {fix}"
        ) from None
    if array.ndim == 2 and array.shape[1] == 2:
        array = array.reshape(-1)
    if array.ndim != 1 or array.size % 2:
        raise DataError(
            f"{where}: {array.size} coordinates, not x, y pairs; {fix}"
            if array.ndim == 1
            else f"{where}: points of shape {array.shape} are not x, y pairs; {fix}"
        )
    if array.size < 6:
        raise DataError(f"{where}: a polygon of {array.size // 2} point(s), fewer than 3; {fix}")
    if not np.isfinite(array).all():
        raise DataError(f"{where}: a coordinate is NaN or infinite; {fix}")
    return array.reshape(-1, 2)


def check_inside(points: np.ndarray, height: int, width: int, where: str, fix: str) -> None:
    """Refuse points more than :data:`MARGIN` pixels outside a ``width x height`` image.

    Raises:
        DataError: names the first such point, the image size and ``fix``.
    """
    bad = (
        (points[:, 0] < -MARGIN)
        | (points[:, 0] > width + MARGIN)
        | (points[:, 1] < -MARGIN)
        | (points[:, 1] > height + MARGIN)
    )
    if bad.any():
        x, y = points[np.argmax(bad)]
        raise DataError(
            f"{where}: point ({x:g}, {y:g}) lies outside the {width}x{height} image; {fix}"
        )


def _fixed(points: np.ndarray) -> np.ndarray:
    """Corner-convention points as OpenCV's fixed-point centre-convention vertices."""
    return np.round((points - 0.5) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def fill_polygons(canvas: np.ndarray, polygons: Sequence[np.ndarray], value: int) -> None:
    """Paint the polygons (N x 2 arrays, even-odd: a polygon inside another of the same call
    is a hole) with ``value`` in place."""
    cv2.fillPoly(canvas, [_fixed(p) for p in polygons], int(value), cv2.LINE_8, _SHIFT)


def fill_rectangle(canvas: np.ndarray, corners: np.ndarray, value: int) -> None:
    """Paint the axis-aligned rectangle spanned by two corner points (either order)."""
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    fill_polygons(canvas, [box], value)


def fill_circle(canvas: np.ndarray, center_and_rim: np.ndarray, value: int) -> None:
    """Paint the disc with centre ``center_and_rim[0]`` through the point ``center_and_rim[1]``."""
    center, rim = center_and_rim[0], center_and_rim[1]
    radius = float(np.hypot(*(rim - center)))
    cx, cy = _fixed(center[None]).reshape(2)
    cv2.circle(canvas, (int(cx), int(cy)), int(round(radius * (1 << _SHIFT))), int(value), -1,
               cv2.LINE_8, _SHIFT)  # fmt: skip
