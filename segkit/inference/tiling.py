"""Sliding-window prediction: an image too large for one model call, predicted in windows.

The windows, their blending and the band-by-band walk are :mod:`segkit.models.sliding`'s;
here each window's probabilities come from :func:`~segkit.inference.probs.predict_proba`
(divisor padding, multi-scale and flip test-time augmentation per window).

:func:`predict_tiled` returns a normalised image's probabilities whole. :func:`prob_bands`
reads windows straight from the ``H x W x 3`` uint8 image, normalising each window as it is
batched, and yields finished bands of probabilities; :func:`tiled_labels` turns each band
into labels at once. So predicting (and scoring, ``segkit.api.evaluate``) a large image
holds, beyond the uint8 image and its uint8 label map, one band and one window batch of
floats, not the image's size in floats.

A model trained on crops at ``data.crop.scale`` is predicted the same way with ``scale``:
``tile`` is then the window as the model sees it, each window covers ``tile / scale`` of the
image's own pixels, and its probabilities are resized back to them before blending
(:mod:`segkit.models.scaled`); so scaled models are bounded the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from segkit.inference.inputs import normalize
from segkit.inference.options import TTA
from segkit.inference.probs import predict_proba
from segkit.models.scaled import window_span
from segkit.models.sliding import Band, Box, blend_bands, blend_image, window_starts

__all__ = ["predict_tiled", "prob_bands", "probs_to_labels_torch", "tiled_labels", "window_starts"]


def predict_tiled(
    model: torch.nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: TTA | str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
    *,
    blend: str = "gaussian",
) -> torch.Tensor:
    """Sliding-window probabilities ``C x H x W`` for one normalised ``3 x H x W`` image.

    Windows of ``tile`` x ``tile`` pixels (smaller where the image is) overlap by ``overlap``
    of a tile and are batched ``batch_size`` to a call; where they overlap the probabilities
    are blended (``blend``: ``"gaussian"`` weighs window centres more, ``"uniform"`` is the
    plain mean). ``tta`` and ``flip_pairs`` apply to each window (:func:`predict_proba`).
    """

    def read(box: Box) -> torch.Tensor:
        y, x, h, w = box
        return image[:, y : y + h, x : x + w]

    def probs(batch: torch.Tensor) -> torch.Tensor:
        return predict_proba(model, batch, tta, flip_pairs)

    size = tuple(image.shape[-2:])
    return blend_image(probs, read, size, tile, overlap, batch_size, blend)


def prob_bands(
    model: torch.nn.Module,
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: TTA | str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    scale: float = 1.0,
) -> Iterator[Band]:
    """Finished bands of sliding-window probabilities of an ``H x W x 3`` uint8 image.

    Each window batch is moved to ``device`` (None: where the image is) and normalised
    (``mean``/``std``, 0..1 scale) when it is read, so no float copy of the whole image is
    made (:func:`segkit.models.sliding.blend_bands`). With ``scale`` (a crop-trained model's)
    a window covers ``tile / scale`` image pixels and is resized by ``scale`` for the model;
    the bands are at the image's own resolution either way.
    """

    def read(box: Box) -> torch.Tensor:
        y, x, h, w = box
        return image[y : y + h, x : x + w]

    def probs(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True) if device is not None else batch
        return predict_proba(model, normalize(batch, mean, std), tta, flip_pairs, scale)

    size = tuple(image.shape[:2])
    return blend_bands(probs, read, size, window_span(tile, scale), overlap, batch_size, blend)


def probs_to_labels_torch(
    probs: torch.Tensor, threshold: float = 0.5, thresholds: Sequence[float] | None = None
) -> torch.Tensor:
    """Labels ``... x H x W`` (uint8) of probabilities ``... x C x H x W`` where they are:
    one channel is thresholded, several take the arg-max (ties keep the lower class); with
    ``thresholds`` (a multi-label model: one per class) 0/1 masks ``... x C x H x W``."""
    if thresholds is not None:
        t = torch.as_tensor(list(thresholds), dtype=probs.dtype, device=probs.device)
        return (probs > t.view(-1, 1, 1)).to(torch.uint8)
    if probs.shape[-3] == 1:
        return (probs[..., 0, :, :] > threshold).to(torch.uint8)
    return probs.argmax(-3).to(torch.uint8)


def tiled_labels(
    model: torch.nn.Module,
    image: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: TTA | str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
    blend: str = "gaussian",
    *,
    threshold: float = 0.5,
    thresholds: Sequence[float] | None = None,
    scale: float = 1.0,
) -> np.ndarray:
    """The ``H x W`` uint8 label map of an ``H x W x 3`` uint8 image, predicted in windows
    (a multi-label model, with ``thresholds``: ``C x H x W`` 0/1 masks); each finished band
    of probabilities becomes labels at once (:func:`prob_bands`; ``scale``: the model's)."""
    window = (tile, overlap, batch_size, tta, flip_pairs, blend)
    labels: np.ndarray | None = None
    for band in prob_bands(model, image, mean, std, *window, scale=scale):
        h, w = band.out.shape[-2:]
        part = probs_to_labels_torch(band.out, threshold, thresholds).cpu().numpy()
        if labels is None:
            labels = np.empty((*part.shape[:-2], *image.shape[:2]), np.uint8)
        labels[..., band.y : band.y + h, band.x : band.x + w] = part
    return labels
