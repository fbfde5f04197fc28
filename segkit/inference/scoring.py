"""Scoring: a :class:`~segkit.inference.Predictor` plus a scorer that counts each image.

:class:`Scorer` runs a Predictor's recipe over a loader of images and masks and accumulates
the data-set metrics (:class:`~segkit.engine.Evaluator`) and, per image, its confusion
counts (:attr:`Scorer.per_image`: summed, they are the data set's matrix), each also handed
as a :class:`ScoredImage` to ``on_image`` where one is given (the report, which may ask it for
the picture that was scored: image, truth and prediction at the size they were scored at).

- In windows (``evaluate --tile N``, and every evaluation of a crop-trained model) whole
  images are scored at their native resolution. The loader yields images as read (no
  transform); the Predictor runs each image in its recipe's windows
  (:meth:`~segkit.inference.Predictor.window_bands`: each window batch normalised and moved
  to the device as it is read), and each finished band becomes labels, confusion counts and
  soft-Dice sums at once. So memory beyond the image and its mask is one band and one window
  batch, whatever the images' size. These are the labels ``predict`` writes with the same
  options.
- Otherwise images come resized to the recipe's size and normalised by the loader
  (training's validation transforms, which give bit for bit the tensor the Predictor makes
  of the same array); the model's logits are scored at that size against the masks resized
  likewise, as validation during training scores them (with TTA, the logits of the
  Predictor's TTA probabilities). Labels are ``logit > 0`` / the arg-max of the logits,
  which is ``probability > 0.5`` / the arg-max of the probabilities that ``predict`` takes
  (except where a probability rounds to exactly 0.5 or two round to a tie). ``predict``
  then resizes the probabilities back to each image's own size; scoring does not.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segkit.engine.evaluation import (
    Evaluator,
    as_target,
    hard_labels,
    predict_labels,
    predict_multilabel,
    unpack_batch,
)
from segkit.errors import ConfigError, option
from segkit.inference.model import InferenceModel
from segkit.inference.predictor import Predictor
from segkit.inference.probs import probs_to_labels_torch


def refuse_threshold(spec: Any, threshold: Any) -> None:
    """Scoring takes a threshold for multi-label models only (one-channel models are scored
    at 0.5, as validation scores them).

    Raises:
        ConfigError: a threshold for a model that is not multi-label.
    """
    if threshold is not None and spec.task != "multilabel":
        given = ",".join(map(str, threshold)) if isinstance(threshold, tuple) else threshold
        raise ConfigError(
            f"{option('threshold', given)} applies to multi-label models; this one is "
            "not (leave it out)."
        )


@dataclass(frozen=True)
class ScoredImage:
    """One image as scored: its id, path, confusion counts and, on request, its picture.

    Attributes:
        id: the data set's id of the image (else its position).
        path: its file ("" where the loader does not say).
        counts: its confusion matrix (``C x C``, rows truth; multi-label: ``C x 2 x 2``).
        view: ``() -> (image H x W x 3 uint8, truth H x W, prediction H x W)`` at the size
            scored (labels as int64 arrays; truth may hold the ignore label); None for
            multi-label models.
    """

    id: str
    path: str
    counts: torch.Tensor
    view: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None


class Scorer:
    """A Predictor and what it is scored into: data-set metrics and per-image counts.

    Args:
        predictor: runs the model as its recipe says (size, windows, TTA, thresholds).
        evaluator: accumulates the data-set metrics (class names, groups, ignore index).
        on_image: called with each image's :class:`ScoredImage` as it is counted (None: none).

    Attributes:
        per_image: ``(id, counts)`` of each image scored, in order: its confusion matrix
            (``C x C``, rows truth; a multi-label model: ``C x 2 x 2``), int64 on the CPU.
    """

    def __init__(
        self,
        predictor: Predictor,
        evaluator: Evaluator,
        on_image: Callable[[ScoredImage], None] | None = None,
    ) -> None:
        self.predictor, self.evaluator = predictor, evaluator
        self.on_image = on_image
        self.per_image: list[tuple[str, torch.Tensor]] = []

    def _counted(self, batch: Any, i: int, counts: torch.Tensor, view: Any) -> None:
        """Keep the ``i``-th image of ``batch``'s counts; hand it to ``on_image``."""
        image_id = _id(batch, i)
        self.per_image.append((image_id, counts))
        if self.on_image is not None:
            paths = batch.get("image_path") if isinstance(batch, Mapping) else None
            path = str(paths[i]) if paths is not None else ""
            self.on_image(ScoredImage(image_id, path, counts, view))

    def score(self, loader: Any) -> dict[str, float]:
        """Score every batch of ``loader`` (``{"image", "mask", "id"}``); the metrics."""
        self.evaluator.reset()
        self.per_image = []
        with self.predictor.evaluating():
            if self.predictor.recipe.windows is not None:
                self._score_windows(loader)
            else:
                self._score_resized(loader)
        return self.evaluator.compute()

    def _score_windows(self, loader: Any) -> None:
        """Images as read, each run in the recipe's windows, counted band by band."""
        evaluator, device = self.evaluator, self.predictor.device
        thresholds = None
        if evaluator.multilabel:
            thresholds = evaluator.thresholds or [0.5] * self.predictor.spec.classes
        for batch in loader:
            images, masks = unpack_batch(batch)
            for i, (image, mask) in enumerate(zip(images, masks)):
                before = evaluator.cm.matrix.clone() if evaluator.cm is not None else 0
                sums, labels = None, None
                if self.on_image is not None and thresholds is None:  # the picture's labels
                    labels = torch.zeros(tuple(image.shape[:2]), dtype=torch.int64)
                for band in self.predictor.window_bands(image):
                    h, w = band.out.shape[-2:]
                    target = mask[..., band.y : band.y + h, band.x : band.x + w]
                    target = as_target(target.to(device))
                    preds = probs_to_labels_torch(band.out, thresholds=thresholds)
                    sums = evaluator.update_region(band.out, preds, target, sums)
                    if labels is not None:
                        labels[band.y : band.y + h, band.x : band.x + w] = preds.cpu()
                evaluator.finish_image(sums)
                view = None if labels is None else _view_as_read(image, mask, labels)
                self._counted(batch, i, evaluator.cm.matrix - before, view)

    def _score_resized(self, loader: Any) -> None:
        """Batches resized and normalised by the loader, scored as logits at that size."""
        predictor, evaluator = self.predictor, self.evaluator
        recipe, device = predictor.recipe, predictor.device
        model = predictor.runtime
        if recipe.tta is not None:
            model = InferenceModel(model, recipe.tta, recipe.flip_pairs)
        for batch in loader:
            images, masks = unpack_batch(batch)
            images = images.to(device, non_blocking=True, memory_format=torch.contiguous_format)
            masks = as_target(masks.to(device, non_blocking=True))
            logits = model(images).float()
            evaluator.update(logits, masks)
            counted = _image_counts(evaluator, logits, masks)
            for i, (counts, pred, truth) in enumerate(counted):
                view = None
                if not evaluator.is_multilabel:
                    view = _view_resized(images[i], truth, pred, recipe.mean, recipe.std)
                self._counted(batch, i, counts, view)


def _view_resized(image: Any, truth: Any, pred: Any, mean: Any, std: Any) -> Any:
    """The picture of an image scored at the recipe's size: the normalised tensor undone."""

    def view() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from segkit.viz import to_image

        return to_image(image, mean, std), truth.cpu().numpy(), pred.cpu().numpy()

    return view


def _view_as_read(image: Any, mask: Any, labels: torch.Tensor) -> Any:
    """The picture of an image scored in windows: as read, at its own size."""

    def view() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from segkit.viz import display_bands

        pixels = image.cpu().numpy() if hasattr(image, "cpu") else np.asarray(image)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
            pixels = display_bands(pixels)
        return pixels, hard_labels(mask).cpu().numpy(), labels.numpy()

    return view


def _image_counts(evaluator: Evaluator, logits: torch.Tensor, masks: torch.Tensor) -> list:
    """Each image's ``(confusion counts, prediction, truth)`` of a batch the evaluator has
    just counted (labelled as :meth:`Evaluator.update` labels them)."""
    from segkit.metrics import ConfusionMatrix, MultiLabelConfusion

    cm = evaluator.cm
    if evaluator.is_multilabel:
        preds, labels = predict_multilabel(logits, evaluator.thresholds), masks
    else:
        preds, labels = predict_labels(logits), hard_labels(masks)
    counts = []
    for p, t in zip(preds, labels):
        if evaluator.is_multilabel:
            one: Any = MultiLabelConfusion(cm.num_classes)
        else:
            one = ConfusionMatrix(cm.num_classes, cm.ignore_index)
        one.update(p[None], t[None])
        counts.append((one.matrix, p, t))
    return counts


def _id(batch: Any, i: int) -> str:
    """The ``i``-th image's id in a batch (its data set's), else its position."""
    ids = batch.get("id") if isinstance(batch, Mapping) else None
    return str(ids[i]) if ids is not None else str(i)
