"""What a run should know about its data before the first step: how many images each split
holds, whether validation shares images with training, and what fraction of the mask pixels
is ignored (sampled from a bounded number of masks, so the check stays cheap).

Training prints :meth:`SplitReport.line` and warns with each of :attr:`SplitReport.warnings`
(:func:`segkit.api.train`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: masks read for the ignored fraction, spread evenly over the training set
MAX_MASKS = 16
#: above this fraction of ignored mask pixels, training warns
IGNORED_WARN = 0.5


@dataclass(frozen=True)
class SplitReport:
    """Split sizes, images shared by both splits, and the sampled ignored-pixel fraction.

    Attributes:
        train_images: images in the training split.
        val_images: images in the validation split.
        shared: validation images that are training images too (same file).
        ignore_index: the label value left out (None: none, nothing to count).
        ignored: fraction of the sampled mask pixels holding ``ignore_index`` (None when
            nothing was counted).
        sampled: training masks read for ``ignored``.
        warnings: one line per problem (overlap, mostly ignored masks).
    """

    train_images: int
    val_images: int
    shared: int = 0
    ignore_index: int | None = None
    ignored: float | None = None
    sampled: int = 0
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        """``data: train N images, val M; <ignored fraction>`` for the start of a run."""
        text = f"data: train {self.train_images} images, val {self.val_images}"
        if self.ignored is None:
            return text + " (no ignore label)"
        return text + (
            f"; {100 * self.ignored:.1f}% of the pixels are ignored (label "
            f"{self.ignore_index}, in {self.sampled} of {self.train_images} sampled masks)"
        )


def _paths(ds: Any) -> set[Path]:
    return {Path(s.image_path).resolve() for s in getattr(ds, "samples", ())}


def ignored_fraction(ds: Any, ignore_index: int, max_masks: int = MAX_MASKS) -> tuple[float, int]:
    """The fraction of mask pixels holding ``ignore_index`` in up to ``max_masks`` masks spread
    evenly over ``ds`` (read as training reads them, before transforms), and how many were read.
    """
    n = len(ds)
    if n == 0 or max_masks < 1:
        return 0.0, 0
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(n, max_masks))})
    ignored = total = 0
    for i in picks:
        mask = np.asarray(ds.read(i)[1])
        ignored += int(np.count_nonzero(mask == ignore_index))
        total += mask.size
    return (ignored / total if total else 0.0), len(picks)


def check_splits(train_set: Any, val_set: Any, max_masks: int = MAX_MASKS) -> SplitReport:
    """Sizes, overlap and the sampled ignored fraction of a run's two splits.

    Args:
        train_set: the training data set (a :class:`~segkit.data.SegmentationDataset`).
        val_set: the validation data set.
        max_masks: training masks read at most for the ignored fraction.
    """
    shared = len(_paths(train_set) & _paths(val_set))
    notes = []
    if shared:
        whole = shared == len(val_set)
        what = f"all {shared}" if whole else f"{shared} of {len(val_set)}"
        notes.append(
            f"{what} validation images are training images too: validation scores then "
            "measure memory, not generalisation. Give data.val_split a list or folder of other "
            "images, or leave it out to hold out data.val_fraction of the training images."
        )
    ignore = getattr(train_set, "ignore_index", None)
    soft = getattr(train_set, "soft_targets", False)
    if ignore is None or soft:
        return SplitReport(len(train_set), len(val_set), shared, warnings=notes)
    fraction, sampled = ignored_fraction(train_set, ignore, max_masks)
    if fraction > IGNORED_WARN:
        notes.append(
            f"{100 * fraction:.1f}% of the pixels in {sampled} sampled training masks are "
            f"ignored (label {ignore}): the loss and the metrics see few pixels. Check the "
            "label values or the colour table (with unknown: ignore every unmatched colour "
            "is ignored) and loss.ignore_index."
        )
    return SplitReport(len(train_set), len(val_set), shared, ignore, fraction, sampled, notes)


def foreground_value(ds: Any, max_masks: int = MAX_MASKS) -> int | None:
    """The value a binary data set's mask files hold for the object: 255 when the masks read
    from up to ``max_masks`` files spread evenly over ``ds`` (as stored, before 255 is read
    as 1) hold 0 and 255 only, else None (0/1 masks, a mix, all background; palette GIF/PNG
    masks, which store indices 0/1 whatever grey their palette shows, as Kaggle's Carvana
    GIFs; a data set that is not binary, reads soft targets, leaves 255 out or writes its own
    values already).

    Training records it as the data set's ``output_ids`` (0, 255), so that ``segkit predict``
    writes its label PNGs in the values of the data set's own masks.
    """
    from segkit.data.io import is_palette_image

    meta = ds.metadata()
    binary = getattr(ds, "task", None) == "binary" and not getattr(ds, "soft_targets", False)
    if not binary or meta.ignore_index == 255 or meta.output_ids is not None or not len(ds):
        return None
    n = len(ds)
    seen: set[int] = set()
    for i in sorted({int(i) for i in np.linspace(0, n - 1, min(n, max_masks))}):
        sample = ds.samples[i]
        if is_palette_image(sample.mask_path):
            return None  # indices 0/1, written back as such
        mask = np.asarray(ds.load_mask(sample, ds.label_shape(sample)))  # as stored
        seen |= set(np.unique(mask).tolist()) - {0}
    return 255 if seen == {255} else None
