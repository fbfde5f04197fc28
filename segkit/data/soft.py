"""Binary masks below their native resolution: the hard label map and the soft coverage.

Shrinking a 0/1 mask to a small square loses the position of every edge inside a pixel.
:func:`shrink_labels` keeps the label at each small pixel's centre (what training on hard
labels sees); :func:`shrink_coverage` keeps the fraction of each small pixel that is
foreground (area averaging), the *soft target*. A prepared folder stores coverage as an
8-bit PNG, 0..255 for 0..1 (:func:`encode_coverage` / :func:`decode_coverage`); rounding
to 1/255 moves the Dice of a perfect prediction of it by less than 1e-5 on the Carvana masks.
"""

from __future__ import annotations

import cv2
import numpy as np

#: coverage 0..1 is stored as 0..COVERAGE_SCALE in an 8-bit PNG
COVERAGE_SCALE = 255


def _check_binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"Expected an HxW mask, got shape {mask.shape}.")
    if mask.size and (mask.min() < 0 or mask.max() > 1):
        raise ValueError(
            f"Expected a binary 0/1 mask, got values {mask.min()}..{mask.max()}; map 255 to 1 "
            "first (segkit.data.io.map_255_to_1)."
        )
    return mask


def shrink_labels(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/1 ``mask`` as a ``size x size`` uint8 label map: the label at each pixel's centre.

    Pixel-centre nearest neighbour (``INTER_NEAREST_EXACT``), as ``prepare_carvana`` and
    training's ``Resize`` shrink masks.
    """
    mask = _check_binary(mask).astype(np.uint8, copy=False)
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)


def shrink_coverage(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/1 ``mask`` as ``size x size`` float32 coverage in 0..1 (area averaging).

    Each output pixel holds the fraction of its footprint in ``mask`` that is foreground
    (``INTER_AREA`` when shrinking; bilinear when enlarging, where there is no area to share).
    """
    mask = _check_binary(mask).astype(np.float32)
    if mask.shape == (size, size):
        return mask
    shrink = mask.shape[0] > size or mask.shape[1] > size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return np.clip(cv2.resize(mask, (size, size), interpolation=interpolation), 0.0, 1.0)


def encode_coverage(coverage: np.ndarray) -> np.ndarray:
    """Coverage 0..1 as uint8 0..255 (rounded), the form a prepared folder stores."""
    scaled = np.clip(np.asarray(coverage, np.float32), 0.0, 1.0) * COVERAGE_SCALE
    return np.rint(scaled).astype(np.uint8)


def decode_coverage(stored: np.ndarray) -> np.ndarray:
    """Stored uint8 0..255 coverage as float32 0..1."""
    return np.asarray(stored, np.float32) / COVERAGE_SCALE
