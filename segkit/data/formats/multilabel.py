"""Multi-label masks: classes that may overlap, one binary mask per class.

Two layouts, found by looking at ``masks/`` (``layout="auto"``)::

    folders (one folder per class, the common export of annotation tools and Kaggle sets)
    <root>/[<split>/]images/<stem>.jpg
    <root>/[<split>/]masks/<class>/<stem>.png     0/1 or 0/255, one file per image and class

    stack (one multi-channel file per image)
    <root>/[<split>/]images/<stem>.jpg
    <root>/[<split>/]masks/<stem>.npy             C x H x W (or H x W x C) 0/1 or 0/255
    <root>/[<split>/]masks/<stem>.tif             multi-page TIFF, one page per class

The data set returns ``mask`` as ``C x H x W`` uint8 0/1 (a float target in the loss), its
metadata says ``multilabel=True``, and so the model gets one sigmoid output per class, the
losses and metrics score each class as its own binary task, and prediction writes one
0/255 mask per class (``<stem>_<class>.png``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.data.base import (
    Sample,
    SegmentationDataset,
    _image_tensor,
    _natural_key,
    pair_files,
    select_ids,
    unique_keys,
)
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    list_files,
    name_some,
    read_mask,
    require_dir,
)
from segkit.data.meta import DatasetMeta, check_thresholds
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: suffixes of one-file-per-image mask stacks
STACK_EXTENSIONS = (".npy", ".tif", ".tiff")
LAYOUTS = ("auto", "folders", "stack")


def binary_planes(masks: np.ndarray, path: str | Path) -> np.ndarray:
    """``masks`` (any shape) as uint8 0/1: 255 counts as 1, other values are an error.

    Raises:
        DataError: a value other than 0, 1 and 255 (names the file and the values).
    """
    values = np.unique(masks)
    bad = [v for v in values.tolist() if v not in (0, 1, 255)]
    if bad:
        raise DataError(
            f"Mask {str(path)!r} holds values {name_some(bad, 8)}; a multi-label mask holds 0 "
            "(absent) and 1 or 255 (present) only. Save each class's mask as 0/1 or 0/255 "
            "(nearest-neighbour resizing only; no JPEG)."
        )
    return (masks > 0).astype(np.uint8)


def read_stack(path: str | Path, classes: int) -> np.ndarray:
    """A multi-channel mask file as ``C x H x W`` uint8 0/1.

    ``.npy``: ``C x H x W`` or ``H x W x C``; ``.tif``/``.tiff``: one page (or channel) per
    class, read with ``tifffile``.

    Raises:
        DataError: unreadable, not ``classes`` channels, or values other than 0/1/255.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            array = _read_tiff(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read mask stack {str(path)!r} ({exc}); re-export it.") from None
    if array.ndim == 3 and array.shape[0] != classes and array.shape[-1] == classes:
        array = np.moveaxis(array, -1, 0)  # H x W x C
    if array.ndim != 3 or array.shape[0] != classes:
        raise DataError(
            f"Mask stack {str(path)!r} has shape {tuple(array.shape)}, but the data set has "
            f"{classes} classes: give C x H x W (or H x W x C) with C = {classes}, one 0/1 "
            "plane per class in class order, or fix the classes option."
        )
    return binary_planes(array, path)


def _read_tiff(path: Path) -> np.ndarray:
    try:
        import tifffile
    except ImportError:
        raise DataError(
            f"Reading {str(path)!r} needs the tifffile package: pip install tifffile "
            "(or save the stack as .npy)."
        ) from None
    return np.asarray(tifffile.imread(path))


def _stack_names(classes: Sequence[str] | int | None, where: Path) -> list[str]:
    if classes is None:
        raise DataError(
            f"Mask stacks in {str(where)!r} do not name their classes: give the class names "
            "in channel order (data.options.classes: [a, b, ...]) or their count."
        )
    if isinstance(classes, bool) or not isinstance(classes, (int, list, tuple)):
        raise DataError(f"classes must be a list of class names or a count, got {classes!r}.")
    if isinstance(classes, int):
        return [f"class_{i}" for i in range(classes)]
    names = [str(c) for c in classes]
    bad = [n for n in names if not n or any(ch in n for ch in '/\\:*?"<>|')]
    if bad or len(set(names)) != len(names):
        raise DataError(
            f"classes {names}: give unique names that can be file names (prediction writes "
            '<stem>_<class>.png), without / \\ : * ? " < > |.'
        )
    return names


def _folder_names(classes: Sequence[str] | None, mask_dir: Path) -> list[str]:
    folders = sorted(p.name for p in mask_dir.iterdir() if p.is_dir())
    if classes is None:
        return folders
    if isinstance(classes, (str, int)) or not isinstance(classes, (list, tuple)):
        raise DataError(
            f"classes must list class folders of {str(mask_dir)!r} ({name_some(folders, 8)}), "
            f"got {classes!r}."
        )
    names = [str(c) for c in classes]
    missing = [n for n in names if n not in folders]
    if missing:
        raise DataError(
            f"classes names {name_some(missing)}, but {str(mask_dir)!r} has no such folder "
            f"(class folders there: {name_some(folders, 8)}). Fix the name or add the folder."
        )
    return names


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth``: a small synthetic set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_multilabel

    synth_multilabel(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} synthetic images with overlapping masks in masks/<class>/ to {dst}"


@register_dataset("multilabel")
class MultiLabelDataset(SegmentationDataset):
    """Images with one binary mask per class; classes may overlap.

    Items hold ``mask`` as ``C x H x W`` uint8 0/1 (a numpy array without a transform, a
    tensor with one). There is no background class: a pixel may belong to none, one or
    several classes.

    Args:
        root: data set folder.
        split: sub-folder holding ``images``/``masks`` (None or ".": ``root``).
        transform: albumentations pipeline (the mask goes through it as ``H x W x C``).
        images: image folder name.
        masks: mask folder name.
        layout: ``folders`` (``masks/<class>/<stem>.png``), ``stack`` (``masks/<stem>.npy``
            or ``.tif``, C x H x W) or ``auto`` (folders when ``masks/`` holds folders).
        classes: folders: the class folders to use, in this order (default: every folder,
            sorted); stack: the class names in channel order, or their count (required).
        thresholds: probability above which a pixel belongs to a class, one value for all or
            one per class (default 0.5); recorded in the checkpoint for evaluate and predict.
        ids: keep only these ids (image file stems), in this order.
    """

    meta = DatasetMeta(multilabel=True, flip_pairs=(), synth=_synth)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        images: str = "images",
        masks: str = "masks",
        layout: str = "auto",
        classes: Sequence[str] | int | None = None,
        thresholds: float | Sequence[float] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        if layout not in LAYOUTS:
            raise DataError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
        root = require_dir(root, "Data root")
        base = root if split in (None, "", ".") else require_dir(root / split, "Split folder")
        image_dir = require_dir(base / images, "Image folder")
        mask_dir = require_dir(base / masks, "Mask folder")
        if layout == "auto":
            layout = "folders" if any(p.is_dir() for p in mask_dir.iterdir()) else "stack"
        images_by_stem = unique_keys(
            list_files(image_dir, IMAGE_EXTENSIONS), lambda p: p.stem, image_dir
        )
        self._class_masks: dict[str, dict[str, Path]] = {}
        if layout == "folders":
            names = _folder_names(classes, mask_dir)
            samples = self._folder_samples(images_by_stem, mask_dir, names, base)
        else:
            names = _stack_names(classes, mask_dir)
            stacks = list_files(mask_dir, STACK_EXTENSIONS)
            samples = pair_files(
                images_by_stem, unique_keys(stacks, lambda p: p.stem, mask_dir), base, "mask"
            )
        if len(names) < 2:
            raise DataError(
                f"A multi-label data set needs at least 2 classes, {str(mask_dir)!r} gives "
                f"{names}. For one class use the folder data set with binary masks."
            )
        self.layout, self.split = layout, split
        self.mask_dir = mask_dir
        self.thresholds = self._thresholds(thresholds, len(names))
        super().__init__(select_ids(samples, ids, base), transform, names, root)

    @staticmethod
    def _thresholds(value: float | Sequence[float] | None, n: int) -> tuple[float, ...] | None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value] * n
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise DataError(f"thresholds must be a number or one number per class, got {value!r}.")
        return check_thresholds(value, n, "data.options.thresholds")

    def _folder_samples(
        self, images: dict[str, Path], mask_dir: Path, names: list[str], base: Path
    ) -> list[Sample]:
        """One sample per image; ``mask_path`` is the mask folder (each class adds its own)."""
        for name in names:
            folder = mask_dir / name
            masks = unique_keys(list_files(folder, MASK_EXTENSIONS), lambda p: p.stem, folder)
            missing = sorted(set(images) - set(masks))
            if missing:
                raise DataError(
                    f"Class folder {str(folder)!r} has no mask for {len(missing)} image(s): "
                    f"{name_some(images[k].name for k in missing)}. Add them (an all-0 PNG "
                    "where the class is absent) or move those images out."
                )
            pair_files(images, masks, base, f"{name} mask")  # masks without an image
            self._class_masks[name] = masks
        return [Sample(k, images[k], mask_dir) for k in sorted(images, key=_natural_key)]

    def metadata(self) -> DatasetMeta:
        """The built metadata: multi-label, with the thresholds given."""
        return super().metadata().replace(flip_pairs=(), thresholds=self.thresholds)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The masks as ``C x H x W`` uint8 0/1."""
        if self.layout == "stack":
            return read_stack(sample.mask_path, len(self.class_names))
        paths = [self._class_masks[name][sample.id] for name in self.class_names]
        planes = [binary_planes(read_mask(path), path) for path in paths]
        shapes = {p.shape for p in planes}
        if len(shapes) > 1:
            sizes = ", ".join(
                f"{q.parent.name}/{q.name}: {p.shape[1]}x{p.shape[0]}"
                for q, p in zip(paths, planes)
            )
            raise DataError(
                f"The masks of {sample.id!r} differ in size ({sizes}); give every class's "
                "mask the image's size."
            )
        return np.stack(planes)

    def check_pair(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """Check that every class's mask has the image's size."""
        if image.shape[:2] != mask.shape[1:]:
            raise DataError(
                f"Image {str(sample.image_path)!r} is {image.shape[1]}x{image.shape[0]} but its "
                f"masks in {str(sample.mask_path)!r} are {mask.shape[2]}x{mask.shape[1]} (width "
                "x height). Resize the masks with nearest-neighbour interpolation."
            )
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, sample = self.read(index)
        item: dict[str, Any] = {"id": sample.id, "image_path": str(sample.image_path)}
        if self.transform is None:
            item["image"], item["mask"] = image, mask
            return item
        out = self.transform(image=image, mask=np.ascontiguousarray(mask.transpose(1, 2, 0)))
        item["image"] = _image_tensor(out["image"])
        planes = out["mask"]
        planes = torch.as_tensor(np.asarray(planes)) if not torch.is_tensor(planes) else planes
        item["mask"] = planes.permute(2, 0, 1).contiguous().to(torch.uint8)
        return item
