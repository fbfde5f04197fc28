"""Validation: loss and confusion matrix (plus soft Dice for binary models) over a loader.

A model with one output channel is binary: ``sigmoid > 0.5`` (logit > 0) gives the label and
the confusion matrix has 2 classes; otherwise the label is the arg-max over channels. With
multi-label masks (``N x C x H x W`` 0/1, classes may overlap) each channel's
``sigmoid > threshold`` is scored as its own binary task (:class:`~segkit.metrics.MultiLabelConfusion`).
Soft (float, 0..1) binary targets count as foreground above 0.5 in the confusion matrix,
as a probability does in prediction; the loss and the soft Dice see them as they are.
Under ``torchrun`` the sums are added over ranks before any metric is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F

from segkit.engine.distributed import DistInfo, all_reduce_sum, resolve_device
from segkit.errors import ConfigError, DataError
from segkit.viz import overlap_labels

#: kept preview samples are shrunk to at most this many pixels on their longer side (whole
#: full-resolution images would fill every ``last.pt`` they travel in)
PREVIEW_SIDE = 512


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image, mask)`` from a ``{"image", "mask", ...}`` dict or an ``(image, mask)`` pair."""
    if isinstance(batch, Mapping):
        return batch["image"], batch["mask"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise TypeError(
        f"A batch must be a dict with 'image' and 'mask' (or an (image, mask) pair), "
        f"got {type(batch).__name__}."
    )


def predict_multilabel(
    logits: torch.Tensor, thresholds: Sequence[float] | None = None
) -> torch.Tensor:
    """0/1 masks ``N x C x H x W`` from logits: ``sigmoid > threshold`` per channel (0.5 each
    when None)."""
    probs = torch.sigmoid(logits.float())
    if thresholds is None:
        return (probs > 0.5).long()
    t = torch.as_tensor(list(thresholds), dtype=probs.dtype, device=probs.device)
    return (probs > t.view(1, -1, 1, 1)).long()


def as_target(masks: torch.Tensor) -> torch.Tensor:
    """A batch's masks as the loss takes them: int64 labels (multi-label stacks too), or
    float32 soft binary targets (``N x H x W`` floats)."""
    soft = masks.is_floating_point() and masks.ndim == 3
    return masks.float() if soft else masks.long()


def hard_labels(masks: torch.Tensor) -> torch.Tensor:
    """Label maps for the confusion matrix: soft (float) targets are foreground above 0.5."""
    return (masks > 0.5).long() if masks.is_floating_point() else masks


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """Label map ``N x H x W`` from logits: logit > 0 for one channel, else arg-max."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(1)


class Evaluator:
    """Accumulates loss sums, a confusion matrix and (binary) soft Dice over batches.

    Args:
        class_names: names of the label values (2 for a binary model); generated when None.
        groups: class groups whose F1 is reported (e.g. Helen's eyes/brows/mouth/overall).
        ignore_index: label value left out of the metrics.
        preview: how many samples (images, masks, predictions) to keep for a prediction grid.
        multilabel: score each channel as its own binary task (None: when the first batch's
            masks are ``N x C x H x W`` with C the model's channels).
        thresholds: multi-label probability threshold per class (None: 0.5 each).
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[int]] | None = None,
        ignore_index: int | None = None,
        preview: int = 0,
        multilabel: bool | None = None,
        thresholds: Sequence[float] | None = None,
    ) -> None:
        self.class_names = list(class_names) if class_names is not None else None
        self.multilabel = multilabel
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.groups = dict(groups) if groups else None
        self.ignore_index = ignore_index
        self.preview = preview
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.cm: Any = None
        self.dice: Any = None
        self.binary: bool | None = None
        self.is_multilabel = False
        self.sums = torch.zeros(2, dtype=torch.float64)  # loss * images, images
        self.has_loss = False
        self.kept: dict[str, list] = {"image": [], "mask": [], "pred": []}

    def _start(self, channels: int, masks: torch.Tensor) -> None:
        from segkit.metrics import ConfusionMatrix, SoftDiceAccumulator

        multilabel = self.multilabel
        if multilabel is None:
            multilabel = masks.ndim == 4 and masks.shape[1] == channels > 1
        if multilabel:
            self._start_multilabel(channels)
            return
        self.binary = channels == 1
        num_classes = 2 if self.binary else channels
        if self.class_names is None:
            self.class_names = (
                ["background", "foreground"]
                if self.binary
                else [f"class_{i}" for i in range(num_classes)]
            )
        if len(self.class_names) != num_classes:
            raise ConfigError(
                f"The model predicts {num_classes} classes ({channels} output channels) but "
                f"{len(self.class_names)} class names were given: {self.class_names}. Build the "
                "model for these classes or pass matching class_names."
            )
        self.cm = ConfusionMatrix(num_classes, self.ignore_index, self.class_names)
        self.dice = SoftDiceAccumulator() if self.binary else None

    def _start_multilabel(self, channels: int) -> None:
        from segkit.metrics import MultiLabelConfusion

        self.binary, self.is_multilabel, self.dice = False, True, None
        names = self.class_names or [f"class_{i}" for i in range(channels)]
        if len(names) != channels:
            raise ConfigError(
                f"The multi-label model has {channels} output channels but {len(names)} class "
                f"names were given: {names}. Give one name per channel."
            )
        if self.thresholds is not None and len(self.thresholds) != channels:
            raise ConfigError(
                f"{len(self.thresholds)} thresholds {self.thresholds} for {channels} classes; "
                "give one per class."
            )
        self.class_names = names
        self.cm = MultiLabelConfusion(channels, names)

    def update(
        self, logits: torch.Tensor, masks: torch.Tensor, loss: torch.Tensor | None = None
    ) -> None:
        """Add one batch: logits ``N x C x H x W``, masks ``N x H x W``, the batch's mean loss."""
        if self.cm is None:
            self._start(logits.shape[1], masks)
        n = logits.shape[0]
        if loss is not None:
            self.has_loss = True
            self.sums[0] += float(loss) * n
        self.sums[1] += n
        if self.is_multilabel:
            preds = predict_multilabel(logits, self.thresholds)
            self.cm.update(preds, masks)
            self._keep(*(overlap_labels(x) for x in (masks, preds)))
            return
        preds, labels = predict_labels(logits), hard_labels(masks)
        self.cm.update(preds, labels)  # counted on the device; only the C x C counts move
        if self.dice is not None:
            probs, target = torch.sigmoid(logits[:, 0].float()), masks
            if self.ignore_index is not None:
                keep = masks != self.ignore_index
                probs, target = probs * keep, target * keep
            self.dice.update(probs, target)
        self._keep(labels, preds)

    def _keep(self, masks: torch.Tensor, preds: torch.Tensor) -> None:
        have = sum(len(x) for x in self.kept["pred"])
        if have < self.preview:
            k = self.preview - have
            self.kept["mask"].append(self._fit(masks[:k, None], "nearest-exact")[:, 0].cpu())
            self.kept["pred"].append(self._fit(preds[:k, None], "nearest-exact")[:, 0].cpu())

    def keep_images(self, images: torch.Tensor) -> None:
        """Keep the images that go with the predictions kept by the last :meth:`update`."""
        have = sum(len(x) for x in self.kept["image"])
        want = sum(len(x) for x in self.kept["pred"])
        if have < want:
            self.kept["image"].append(self._fit(images[: want - have].float(), "area").cpu())

    def _fit(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """``x`` (``N x C x H x W``) shrunk to at most :data:`PREVIEW_SIDE` on its longer side,
        then to the size of the first kept sample (whole images may differ in size)."""
        height, width = x.shape[-2:]
        size = (height, width)
        first = self.kept["pred"][0] if self.kept["pred"] else None
        if first is not None:
            size = tuple(first.shape[-2:])
        elif max(height, width) > PREVIEW_SIDE:
            factor = PREVIEW_SIDE / max(height, width)
            size = (max(1, round(height * factor)), max(1, round(width * factor)))
        if size == (height, width):
            return x
        return F.interpolate(x.float(), size=size, mode=mode).to(x.dtype)

    def preview_batch(self) -> dict[str, torch.Tensor] | None:
        """The kept ``{"image", "mask", "pred"}`` samples, or None when nothing was kept."""
        if not self.kept["pred"]:
            return None
        return {k: torch.cat(v) for k, v in self.kept.items() if v}

    def compute(self, info: DistInfo | None = None) -> dict[str, float]:
        """Metrics over everything seen (summed over ranks first): ``loss`` and the scores."""
        info = info or DistInfo()
        if self.cm is None:
            raise DataError(
                "The evaluation loader yielded no batches (empty data set or split); "
                "check the validation data or data.val_fraction."
            )
        all_reduce_sum(self.sums, info)
        all_reduce_sum(self.cm.matrix, info)
        result: dict[str, float] = {}
        if self.has_loss and self.sums[1] > 0:
            result["loss"] = float(self.sums[0] / self.sums[1])
        result.update(self.cm.compute(None if self.is_multilabel else self.groups))
        if self.dice is not None:
            d = self.dice
            fields = ("score_sum", "count", "intersection", "denominator")
            sums = torch.tensor([float(getattr(d, f)) for f in fields], dtype=torch.float64)
            all_reduce_sum(sums, info)
            for f, value in zip(fields, sums.tolist()):
                setattr(d, f, value)
            result.update(d.compute())
        return {k: float(v) for k, v in result.items()}

    def update_region(
        self,
        probs: torch.Tensor,
        preds: torch.Tensor,
        masks: torch.Tensor,
        sums: tuple[float, float] | None = None,
    ) -> tuple[float, float] | None:
        """Count one region of one image (a finished band of sliding windows, say).

        Args:
            probs: the region's probabilities ``C x h x w`` (one channel: the foreground's).
            preds: its labels ``h x w`` (a multi-label model: 0/1 masks ``C x h x w``).
            masks: its targets, shaped as ``preds`` (soft binary targets: floats).
            sums: what earlier regions of the same image returned.

        Returns:
            The image's soft-Dice sums so far (binary models; None otherwise), for the next
            region and then :meth:`finish_image`.
        """
        if self.cm is None:
            self._start(probs.shape[0], masks[None])
        if self.is_multilabel:
            self.cm.update(preds[None], masks[None])
            return None
        self.cm.update(preds, hard_labels(masks))
        if self.dice is None:
            return None
        p, t = probs[0].float(), masks.to(probs.device).float()
        if self.ignore_index is not None:
            keep = masks.to(probs.device) != self.ignore_index
            p, t = p * keep, t * keep
        inter = float((p * t).sum())
        den = (
            float((p * p).sum() + (t * t).sum()) if self.dice.squared else float(p.sum() + t.sum())
        )
        return (inter, den) if sums is None else (sums[0] + inter, sums[1] + den)

    def finish_image(self, sums: tuple[float, float] | None = None) -> None:
        """End an image counted by :meth:`update_region`: its soft Dice from ``sums``."""
        self.sums[1] += 1
        if self.dice is not None and sums is not None:
            self.dice.add_image(*sums)


@torch.no_grad()
def run_evaluation(
    model: torch.nn.Module,
    loader: Any,
    evaluator: Evaluator,
    device: torch.device,
    loss_fn: Callable | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    info: DistInfo | None = None,
) -> dict[str, float]:
    """Run ``model`` over ``loader`` and return the evaluator's metrics."""
    was_training = model.training
    model.eval()
    evaluator.reset()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    try:
        for batch in loader:
            images, masks = unpack_batch(batch)
            images = images.to(device, non_blocking=True, memory_format=fmt)
            masks = as_target(masks.to(device, non_blocking=True))
            with autocast:
                logits = model(images)
                loss = loss_fn(logits, masks) if loss_fn is not None else None
            evaluator.update(logits.float(), masks, loss)
            evaluator.keep_images(images)
        return evaluator.compute(info)
    finally:
        model.train(was_training)


def evaluate_model(
    model: torch.nn.Module,
    loader: Any,
    class_names: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[int]] | None = None,
    device: str = "auto",
    loss_fn: Callable | None = None,
    ignore_index: int | None = None,
    thresholds: Sequence[float] | None = None,
) -> dict[str, float]:
    """Score a model on a loader: per-class and grouped F1 / IoU, mIoU, accuracy, soft Dice.

    Args:
        model: a segmentation network returning logits ``N x C x H x W``.
        loader: yields ``{"image", "mask"}`` batches.
        class_names: label names (2 for a binary model).
        groups: class groups whose F1 is reported.
        device: "auto", "cpu", "cuda", ...
        loss_fn: also report ``loss`` when given.
        ignore_index: label value left out of the metrics.
        thresholds: multi-label masks (``N x C x H x W``): the probability threshold per class.
    """
    dev = resolve_device(device)
    model = model.to(dev)
    evaluator = Evaluator(class_names, groups, ignore_index, thresholds=thresholds)
    return run_evaluation(model, loader, evaluator, dev, loss_fn)
