"""Class balance: how many pixels and images each class has, and what is made of those counts.

- :func:`count_classes` streams over a data set's label maps (labels only, at their stored
  size, as training reads them; pixels of the ignore label are not counted) into
  :class:`ClassCounts`, the one home of the counts that ``segkit stats`` prints and that
  ``loss.class_weights: auto`` weighs the classes by.
- :func:`class_weights` turns the counts into loss weights by a named rule
  (:data:`WEIGHT_RULES`); ``auto`` is median-frequency balancing, SegNet's rule.
- :func:`image_weights` and :class:`RareClassSampler` are ``data.sampler: rare_classes``:
  images whose pixels belong to rare classes are drawn more often.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from segkit.errors import ConfigError, DataError, suggest

#: the weighting rules of ``loss.class_weights``, with their definitions
WEIGHT_RULES = {
    "median_frequency": "freq(c) = pixels of c / labelled pixels of the images that hold c; "
    "weight(c) = median over classes of freq / freq(c) (SegNet; Eigen & Fergus 2015)",
    "inverse": "weight(c) = labelled pixels / (classes present x pixels of c) (scikit-learn's "
    "'balanced'; the mean weight of a labelled pixel is 1)",
}
#: the file in the run folder that records a run's class weights and sampler
BALANCE_FILE = "class_balance.json"
#: the rule ``loss.class_weights: auto`` names
AUTO_RULE = "median_frequency"
#: the image samplers of ``data.sampler``, with what they do
SAMPLERS = {
    "rare_classes": "images drawn with replacement, each with probability proportional to the "
    "mean median-frequency weight of its labelled pixels",
}


def check_weight_rule(value: str, key: str = "loss.class_weights") -> str:
    """The rule a ``loss.class_weights`` name stands for (``auto``: :data:`AUTO_RULE`).

    Raises:
        ConfigError: an unknown name, naming it and the choices.
    """
    if value == "auto":
        return AUTO_RULE
    if value in WEIGHT_RULES:
        return value
    choices = ["auto", *WEIGHT_RULES]
    raise ConfigError(
        f"{key}={value!r} is no weighting rule: use auto (= {AUTO_RULE}), "
        f"{' or '.join(WEIGHT_RULES)}, or a list of weights, one per class.{suggest(value, choices)}"
    )


def check_sampler(value: str | None, key: str = "data.sampler") -> str | None:
    """``data.sampler`` if segkit has it (None: plain shuffling).

    Raises:
        ConfigError: an unknown name, naming it and the choices.
    """
    if value is None or value in SAMPLERS:
        return value
    raise ConfigError(
        f"{key}={value!r} is no sampler: use {' or '.join(SAMPLERS)}, or null (shuffle every "
        f"image once an epoch).{suggest(value, SAMPLERS)}"
    )


@dataclass(frozen=True)
class ClassCounts:
    """Labelled pixels of each class in each image of a data set.

    Attributes:
        classes: the class names, in label order.
        ids: the images' ids, in the data set's order.
        per_image: ``len(ids) x len(classes)`` int64 pixel counts.
        ignored: pixels holding the ignore label (not counted in ``per_image``).
        ignore_index: that label (None: none).
    """

    classes: tuple[str, ...]
    ids: tuple[str, ...]
    per_image: np.ndarray
    ignored: int = 0
    ignore_index: int | None = None

    @property
    def pixels(self) -> np.ndarray:
        """Labelled pixels of each class."""
        return self.per_image.sum(axis=0)

    @property
    def images(self) -> np.ndarray:
        """Number of images each class appears in (at least one pixel)."""
        return np.count_nonzero(self.per_image, axis=0)

    @property
    def labelled(self) -> int:
        """Labelled pixels of all classes (the ignore label left out)."""
        return int(self.per_image.sum())

    def shares(self) -> np.ndarray:
        """Each class's fraction of the labelled pixels (0 where nothing is labelled)."""
        total = self.labelled
        return self.pixels / total if total else np.zeros(len(self.classes))

    def frequencies(self) -> np.ndarray:
        """Median-frequency balancing's ``freq(c)``: pixels of ``c`` divided by the labelled
        pixels of the images that hold ``c``; NaN for a class no image holds."""
        holds = self.per_image > 0
        totals = (holds * self.per_image.sum(axis=1, keepdims=True)).sum(axis=0)
        out = np.full(len(self.classes), np.nan)
        np.divide(self.pixels, totals, out=out, where=totals > 0)
        return out

    def table(self) -> list[dict[str, Any]]:
        """One row per class: ``id``, ``name``, ``pixels``, ``share``, ``images``."""
        return [
            {"id": i, "name": name, "pixels": int(p), "share": float(s), "images": int(n)}
            for i, (name, p, s, n) in enumerate(
                zip(self.classes, self.pixels, self.shares(), self.images)
            )
        ]


def _image_counts(ds: Any, index: int, n: int, ignore: int | None) -> tuple[np.ndarray, int]:
    """Pixels of each class and of the ignore label in the label map of image ``index``."""
    mask = np.asarray(ds.read_labels(index))
    if mask.dtype == np.uint8:  # the usual case: one bincount over every value
        counts = np.bincount(mask.ravel(), minlength=256)
        ignored = int(counts[ignore]) if ignore is not None and 0 <= ignore < 256 else 0
        if ignore is not None and 0 <= ignore < n:
            counts[ignore] = 0
        return counts[:n].astype(np.int64), ignored
    values = mask.ravel().astype(np.int64)
    ignored = 0
    if ignore is not None:
        keep = values != ignore
        ignored, values = int(values.size - np.count_nonzero(keep)), values[keep]
    if values.size and values.min() < 0:
        path = ds.samples[index].mask_path
        raise DataError(
            f"Mask {str(path)!r} holds negative label values ({int(values.min())}); classes "
            "are 0, 1, ...: remap the labels, or set loss.ignore_index to the value to leave out."
        )
    return np.bincount(values, minlength=n)[:n].astype(np.int64), ignored


def count_classes(ds: Any, workers: int | None = None) -> ClassCounts:
    """Count each class's labelled pixels in every label map of ``ds``, streaming.

    Only the labels are read (:meth:`~segkit.data.SegmentationDataset.read_labels`: at their
    stored size, checked, ``reduce_zero_label`` applied), a few files at a time in threads;
    the ignore label's pixels are counted apart.

    Args:
        ds: a single-label :class:`~segkit.data.SegmentationDataset` (binary or multiclass).
        workers: reading threads (default: the CPU count, at most 8).

    Raises:
        ConfigError: a multi-label data set, or one read as soft (float) targets.
        DataError: an unreadable or out-of-range label map (naming the file).
    """
    if getattr(ds, "task", None) == "multilabel" or getattr(ds, "soft_targets", False):
        kind = "multi-label" if ds.task == "multilabel" else "soft-target (data.soft_targets)"
        raise ConfigError(
            f"Class counts need label maps, but the {kind} masks of {type(ds).__name__} hold "
            "no single class per pixel. Give loss.class_weights as a list of numbers, and leave "
            "data.sampler unset."
        )
    n, ignore = ds.num_classes, ds.ignore_index
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda i: _image_counts(ds, i, n, ignore), range(len(ds))))
    per_image = np.stack([c for c, _ in found]) if found else np.zeros((0, n), np.int64)
    return ClassCounts(
        classes=tuple(ds.class_names),
        ids=tuple(s.id for s in ds.samples),
        per_image=per_image,
        ignored=sum(i for _, i in found),
        ignore_index=ignore,
    )


def class_weights(counts: ClassCounts, rule: str = "auto") -> list[float]:
    """Loss weights, one per class, from ``counts`` by ``rule`` (see :data:`WEIGHT_RULES`).

    A class without a labelled pixel gets the weight 1.0 (nothing to balance it by; it also
    gives the cross-entropy no pixel to weigh).

    Raises:
        ConfigError: an unknown rule.
        DataError: no labelled pixel at all.
    """
    rule = check_weight_rule(rule)
    pixels = counts.pixels.astype(np.float64)
    present = pixels > 0
    if not present.any():
        raise DataError(
            f"The {len(counts.ids)} training label maps hold no labelled pixel (label "
            f"{counts.ignore_index} is left out), so no class can be weighed by its pixels. "
            "Check the masks and loss.ignore_index."
        )
    weights = np.ones(len(pixels))
    if rule == "median_frequency":
        freq = counts.frequencies()
        weights[present] = np.median(freq[present]) / freq[present]
    else:
        weights[present] = pixels.sum() / (np.count_nonzero(present) * pixels[present])
    return [float(w) for w in weights]


def image_weights(counts: ClassCounts, weights: Sequence[float]) -> np.ndarray:
    """Each image's draw weight for ``data.sampler: rare_classes``: the mean class weight of
    its labelled pixels, ``sum_c pixels(i, c) * weights[c] / sum_c pixels(i, c)``, scaled to a
    mean of 1. An image without a labelled pixel gets the smallest weight of the others.

    A rule that looks only at which classes an image holds (LVIS' repeat factors) gives every
    image the same weight where every image holds every class, as on CamVid's street scenes
    and Helen's faces; weighing the pixels draws the images where the rare classes are large.
    """
    per_image = counts.per_image.astype(np.float64)
    totals = per_image.sum(axis=1)
    out = np.ones(len(totals))
    has = totals > 0
    out[has] = per_image[has] @ np.asarray(weights, dtype=np.float64) / totals[has]
    if has.any():
        out[~has] = out[has].min()
    return out / out.mean() if len(out) else out


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed that depends on the run's seed, the epoch and the process, and on nothing else."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank]).generate_state(1)[0])


class RareClassSampler(WeightedRandomSampler):
    """Draw images with replacement in proportion to ``weights`` (:func:`image_weights`).

    An epoch draws as many images as the data set holds (``num_samples``), split over the
    processes of a distributed run (:meth:`shard`: each draws its own share, from its own
    seed). The draws depend on ``seed``, the epoch (:meth:`set_epoch`) and the process only,
    so a resumed run draws what an uninterrupted one would.
    """

    def __init__(
        self,
        weights: Sequence[float],
        num_samples: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.total = len(weights) if num_samples is None else int(num_samples)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        share = math.ceil(self.total / world_size)
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        super().__init__(weights, share, replacement=True, generator=torch.Generator())
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s images next."""
        self.generator.manual_seed(_epoch_seed(self.seed, epoch, self.rank))

    def shard(self, rank: int, world_size: int) -> RareClassSampler:
        """The sampler of process ``rank`` of ``world_size`` (an equal share of the draws)."""
        return RareClassSampler(self.weights.tolist(), self.total, self.seed, rank, world_size)
