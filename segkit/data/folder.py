"""Generic data set: ``<root>/[<split>/]images/*`` + ``masks/*`` paired by file stem (in one
or several folders, masks beside their images or several to an image: :mod:`segkit.data.pairs`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.io import DataNotFoundError, read_mask, require_dir
from segkit.data.pairs import folder_pairs, read_masks
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: the metadata file a prepared folder holds beside images/ and masks/
META_FILE = "dataset.json"
#: what ``dataset.json``'s ``format`` says
META_FORMAT = "segkit prepared annotations 1"


def prepared_meta(folder: str | Path) -> dict[str, Any] | None:
    """The ``dataset.json`` that ``segkit prepare coco|labelme|yolo_seg`` wrote in ``folder``
    (:mod:`segkit.data.formats.rasterize`); None when there is none (a ``dataset.json`` of
    something else, or unreadable, is not segkit's and is left alone)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == META_FORMAT else None


def _class_names(classes: Sequence[str] | int | None, reduce_zero_label: bool = False) -> list[str]:
    """The class names ``classes`` gives; a count names them ``background``, ``class_1``...,
    or with ``reduce_zero_label`` (where label 0 is no class) after their labels 1..N."""
    if isinstance(classes, int) and not isinstance(classes, bool) and reduce_zero_label:
        if classes < 2:
            raise DataError(f"classes must count at least 2, got {classes}.")
        return [f"class_{i}" for i in range(1, classes + 1)]
    if classes is None:
        return ["background", "foreground"]
    if isinstance(classes, bool) or not isinstance(classes, (int, list, tuple)):
        raise DataError(f"classes must be a list of class names or a class count, got {classes!r}.")
    if isinstance(classes, int):
        if classes < 2:
            raise DataError(f"classes must count at least 2 (background + one), got {classes}.")
        return ["background", *(f"class_{i}" for i in range(1, classes))]
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise DataError(f"Class names must be unique, got {names}.")
    return names


@register_dataset("folder")
class FolderDataset(SegmentationDataset):
    """Images and label maps in two folders, paired by file stem (``a.jpg`` <-> ``a.png``).

    Masks hold class ids 0..N-1 (binary masks may use 255 for the object). Without
    ``classes`` the data set is binary (``background``, ``foreground``); masks holding other
    values then raise a DataError that asks for the class list.

    Args:
        root: data set folder.
        split: sub-folder of ``root`` holding ``images``/``masks`` (None or ".": ``root``).
        transform: albumentations pipeline, or None.
        images: name of the image folder; with ``{split}`` in it (or in ``masks``) the split
            is filled in there instead of being a folder above them (``images/{split}``).
        masks: name of the mask folder.
        classes: class names (every label value, background first) or a class count;
            default: those in ``<root>/[<split>/]dataset.json`` when ``segkit prepare``
            wrote one (with its ignore index and label record), else binary.
        ids: keep only these ids (image file stems), in this order.
        reduce_zero_label: 0 means unlabelled (left out) and masks hold the ``classes``
            as 1..N (ADE20K, LoveDA); they are read as 0..N-1 and predictions written back
            as 1..N (MMSegmentation's option of that name).
        roots: folders (or globs, ``Tile *``) of ``root``/``split`` that each hold
            ``images``/``masks``; sample ids are then ``<folder>/<stem>``
            (:mod:`segkit.data.pairs`).
        mask_suffix: what a mask's name adds to its image's (``_mask``: ``a_mask.png`` is
            the mask of ``a.png``); needed when ``images`` and ``masks`` are one folder (``.``).
        merge_masks: ``union``: an image's further masks ``<name><mask_suffix>_1``, ``_2``...
            are merged with its mask (pixel-wise maximum); None: several masks are an error.
        resize_masks: resize a mask of another size than its image to it (nearest
            neighbour); False: such a mask is an error naming both files.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        images: str = "images",
        masks: str = "masks",
        classes: Sequence[str] | int | None = None,
        ids: Iterable[str] | None = None,
        reduce_zero_label: bool = False,
        roots: str | Sequence[str] | None = None,
        mask_suffix: str = "",
        merge_masks: str | None = None,
        resize_masks: bool = False,
    ) -> None:
        root = require_dir(root, "Data root")
        base = root
        if "{split}" in images or "{split}" in masks:  # ADE20K: images/{split}
            fill = split if split not in (None, ".") else ""
            images, masks = images.replace("{split}", fill), masks.replace("{split}", fill)
        elif split not in (None, "", "."):
            if not (root / split).exists() and (root / images).is_dir():
                raise DataNotFoundError(
                    f"{str(root)!r} has no split folder {split!r} but holds {images}/ itself. "
                    f"Move the files into {str(root / split)!r}, or read the root itself with "
                    "split=None (in a config: data.train_split='.')."
                )
            base = require_dir(root / split, "Split folder")
        if roots is None:
            _check_layout(base, images, masks)
        samples = folder_pairs(
            base, images, masks, roots=roots, mask_suffix=mask_suffix, merge_masks=merge_masks
        )
        self.split, self.resize_masks = split, bool(resize_masks)
        names, facts = _class_names(classes, reduce_zero_label), None
        record = prepared_meta(base) if classes is None and not reduce_zero_label else None
        if record is not None:  # written by segkit prepare coco|labelme|yolo_seg
            meta = record.get("meta", {})
            names = list(meta.get("classes") or names)
            facts = {k: meta[k] for k in ("ignore_index", "labels", "palette") if k in meta}
        # left/right classes swap under a horizontal flip, found from their names (l_eye/r_eye):
        # the declared meta leaves flip_pairs None
        samples = select_ids(samples, ids, base)
        super().__init__(
            samples, transform, names, root, reduce_zero_label=reduce_zero_label, facts=facts
        )

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The sample's label map, several masks merged (``merge_masks``), a mask of another
        size resized with ``resize_masks``."""
        return read_masks(sample, shape, read_mask, self.resize_masks)


def _check_layout(base: Path, images: str, masks: str) -> None:
    """One line when ``base`` has no ``images``/``masks`` folders, saying what it holds."""
    image_dir, mask_dir = base / images, base / masks
    if image_dir.is_dir() and mask_dir.is_dir():
        return
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in base.iterdir())
    raise DataError(
        f"No folder data set layout in {str(base)!r} (it holds: {', '.join(found[:8])}). "
        f"Looked for {str(image_dir)!r} and {str(mask_dir)!r} with files paired by stem; "
        "pass images=/masks= if your folders are named differently (images beside their "
        "masks: images='.', masks='.', mask_suffix='_mask'; one folder per part: roots)."
    )
