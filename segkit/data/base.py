"""The dataset base class every adapter shares: samples, reading, checks, transform calling."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from segkit.data.bands import BandReader
from segkit.data.io import image_size, map_255_to_1, name_some, read_image, read_mask
from segkit.data.meta import DatasetMeta
from segkit.errors import ConfigError, DataError

#: the classes of a data set that declares none
_BINARY = ("background", "foreground")
#: class attributes of the older adapter style, folded into ``meta`` by fold_class_facts
_CLASS_FACTS = ("class_names", "flip_pairs", "ignore_index", "task")

#: how ``reduce_zero_label`` renumbers labels, recorded in ``DatasetMeta.labels``
REDUCE_ZERO_RULE = "reduce_zero_label: 0 = unlabelled (left out as 255); label v -> class v - 1"


def reduce_zero_label_mask(mask: np.ndarray) -> np.ndarray:
    """MMSegmentation's ``reduce_zero_label``: 0 (unlabelled) -> 255, ``v`` -> ``v - 1``;
    255 stays 255. Same dtype."""
    mask = np.asarray(mask)
    return np.where((mask == 0) | (mask == 255), 255, mask - 1).astype(mask.dtype)


def reduce_zero_label_facts(classes: int) -> dict[str, Any]:
    """The metadata of a data set read with ``reduce_zero_label``: 255 left out, and class
    ``i`` written back as the data set's own label ``i + 1`` (``output_ids``)."""
    rule = {"rule": REDUCE_ZERO_RULE, "reduce_zero_label": True}
    return {"ignore_index": 255, "output_ids": tuple(range(1, classes + 1)), "labels": rule}


@dataclass(frozen=True)
class Sample:
    """One image and its label map."""

    id: str  #: name used to write predictions back (e.g. the image file stem)
    image_path: Path
    mask_path: Path
    #: further masks of the image, merged with ``mask_path`` on reading (``merge_masks``)
    extra_masks: tuple[Path, ...] = ()


def pair_files(
    images: dict[str, Path], masks: dict[str, Path], where: str | Path, mask_word: str = "label"
) -> list[Sample]:
    """Pair image and mask files by key; every image needs a mask and every mask an image.

    Args:
        images: key -> image file; the key becomes the sample id unless overridden later.
        masks: key -> mask file.
        where: folder named in error messages.
        mask_word: "label" or "mask", as the data set calls it.

    Raises:
        DataError: an image without its mask or a mask without its image (names up to 5).
    """
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images:
        names = name_some(images[k].name for k in lonely_images)
        raise DataError(
            f"{len(lonely_images)} image(s) in {str(where)!r} have no {mask_word}: {names}. "
            f"Add the missing {mask_word} files or move those images out of the folder."
        )
    if lonely_masks:
        names = name_some(masks[k].name for k in lonely_masks)
        raise DataError(
            f"{len(lonely_masks)} {mask_word}(s) in {str(where)!r} have no image: {names}. "
            f"Add the missing images or move those {mask_word} files out of the folder."
        )
    if not images:
        raise DataError(
            f"No image/{mask_word} pairs found in {str(where)!r}. See docs/data.md for the layouts "
            "segkit reads (image suffixes: .jpg .jpeg .png .bmp .tif .tiff .webp)."
        )
    return [Sample(key, images[key], masks[key]) for key in sorted(images, key=_natural_key)]


def _natural_key(text: str) -> list[Any]:
    """Sort ``image_2`` before ``image_10``."""
    parts = "".join(c if c.isdigit() else f" {c} " for c in text).split()
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def unique_keys(files: Iterable[Path], key: Callable[[Path], str], where: str | Path) -> dict:
    """Map ``key(file) -> file``; two files with one key (``a.jpg`` and ``a.png``) is an error."""
    out: dict[str, Path] = {}
    for f in files:
        k = key(f)
        if k in out:
            raise DataError(
                f"Two files in {str(where)!r} share the name {k!r}: {out[k].name} and {f.name}. "
                "Keep one of them."
            )
        out[k] = f
    return out


def select_ids(samples: list[Sample], ids: Iterable[str] | None, where: str | Path) -> list[Sample]:
    """Keep the samples whose id is in ``ids`` (all when None), in the order of ``ids``."""
    if ids is None:
        return samples
    by_id = {s.id: s for s in samples}
    ids = list(ids)
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise DataError(
            f"{len(unknown)} requested id(s) are not in {str(where)!r}: {name_some(unknown)}. "
            f"Ids look like {name_some(list(by_id)[:3], 3)}."
        )
    return [by_id[i] for i in ids]


class SegmentationDataset(Dataset):
    """A list of :class:`Sample` read as ``{"image", "mask", "id", "image_path"}`` dicts.

    Without a transform ``image`` is HxWx3 uint8 and ``mask`` HxW int64 (numpy). With an
    albumentations transform, called as ``transform(image=..., mask=...)`` on the uint8
    arrays, ``image`` becomes a CHW float32 tensor and ``mask`` an HxW int64 tensor.

    Images are read as 8-bit RGB unless the data set reads bands (``reader``, a
    :class:`~segkit.data.bands.BandReader`) or ``in_channels`` (``model.in_channels``, set by
    the caller) is not 3: they are then ``H x W x in_channels`` float32 on the input scale of
    :mod:`segkit.data.bands`, and an image with another band count is a DataError.

    Subclasses declare a ``meta`` (:class:`~segkit.data.meta.DatasetMeta`: class names, flip
    pairs, report groups, ignore index, ...), the one home of a data set's facts; they find
    their samples and call ``super().__init__(samples, transform)``. An instance's
    ``class_names``, ``flip_pairs``, ``ignore_index`` and ``task`` are views of its
    :meth:`metadata`. A subclass written in the older style, with ``class_names`` /
    ``flip_pairs`` / ``ignore_index`` / ``task`` class attributes, has them folded into its
    ``meta`` when the class is made (:func:`fold_class_facts`).
    Binary data sets map mask value 255 to 1 before checking values. After
    :meth:`use_soft_targets` a binary data set's masks are float32 in 0..1 (soft targets)
    and stay float through the transform.
    """

    meta: ClassVar[DatasetMeta] = DatasetMeta()
    #: bands the network takes (``model.in_channels``): another count reads bands as stored;
    #: None: bands as stored, any count
    in_channels: int | None = 3
    #: how images are read; None: 8-bit RGB, unless ``in_channels`` is not 3
    reader: BandReader | None = None
    #: masks are float coverage in 0..1 rather than labels (see :meth:`use_soft_targets`)
    soft_targets: bool = False
    _warned_void = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fold_class_facts(cls)

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[..., dict[str, Any]] | None = None,
        class_names: Sequence[str] | None = None,
        root: str | Path | None = None,
        *,
        facts: Mapping[str, Any] | None = None,
        reduce_zero_label: bool = False,
    ) -> None:
        """Hold the samples; nothing is read until an item is asked for.

        Args:
            samples: the image/mask pairs.
            transform: albumentations-style callable, or None.
            class_names: the classes of this instance (every label value incl. background),
                instead of the declared ``meta.classes`` (default: background, foreground).
            root: the folder the samples came from (shown by ``repr``).
            facts: what this instance changes in the declared meta (DatasetMeta fields,
                e.g. ``{"ignore_index": 255}`` or ``{"multilabel": True}``).
            reduce_zero_label: label 0 means unlabelled (left out as 255) and labels
                1..N are the classes ``class_names`` names (read as 0..N-1; predictions are
                written back as 1..N), as MMSegmentation's option of that name.
        """
        declared = type(self).meta
        names = list(class_names if class_names is not None else declared.classes or _BINARY)
        if len(names) < 2:
            raise DataError(
                f"{type(self).__name__} needs at least 2 class names (background and one class), "
                f"got {names}."
            )
        # the instance's facts: the declared ones for these classes, flip pairs resolved
        resolved = {"classes": tuple(names), "flip_pairs": tuple(declared.pairs_for(names))}
        self.reduce_zero_label = bool(reduce_zero_label)
        if reduce_zero_label:
            facts = {**reduce_zero_label_facts(len(names)), **(facts or {})}
        self._meta = declared.replace(**{**resolved, **(facts or {})})  # facts may set flip_pairs
        self.samples = list(samples)
        self.transform = transform
        self.root = Path(root) if root is not None else None

    def metadata(self) -> DatasetMeta:
        """This data set's :class:`~segkit.data.meta.DatasetMeta` as built: the declared one
        with the classes, flip pairs, ignore index and image reading this instance uses."""
        reader = self.band_reader()
        return self._meta.replace(input=reader.to_dict() if reader is not None else None)

    @property
    def class_names(self) -> list[str]:
        """Every label value's name, background first (``metadata().classes``)."""
        return list(self._meta.classes)

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        """The class id pairs a horizontal flip swaps (``metadata().flip_pairs``)."""
        return list(self._meta.flip_pairs or ())  # type: ignore[arg-type]

    @property
    def task(self) -> str:
        """``multilabel`` (``meta.multilabel``), ``binary`` (two classes) or ``multiclass``."""
        if self._meta.multilabel:
            return "multilabel"
        return "binary" if len(self._meta.classes) == 2 else "multiclass"

    @property
    def ignore_index(self) -> int | None:
        """A label value that marks pixels to leave out (the loss's ``ignore_index``):
        accepted in masks beside the classes, and never mapped to 1 in a binary mask."""
        return self._meta.ignore_index

    @ignore_index.setter
    def ignore_index(self, value: int | None) -> None:
        self._meta = self._meta.replace(ignore_index=value)

    def read_as(
        self, *, in_channels: int | None, ignore_index: int | None = None, soft: bool = False
    ) -> SegmentationDataset:
        """Read this data set as a model and loss take it, and return it.

        Args:
            in_channels: the bands the network takes (``model.in_channels``; see the class).
            ignore_index: the loss's label to leave out (``loss.ignore_index``), replacing
                the declared one; None: the data set's own (``meta.ignore_index``).
            soft: masks as float coverage (``data.soft_targets``, :meth:`use_soft_targets`).
        """
        self.in_channels = in_channels
        if ignore_index is not None:
            self.ignore_index = ignore_index
        if soft:
            self.use_soft_targets()
        return self

    def band_reader(self) -> BandReader | None:
        """The reader of this data set's images; None: 8-bit RGB (:func:`read_image`)."""
        if self.reader is None and self.in_channels == 3:
            return None
        return self.reader or BandReader()

    @property
    def num_classes(self) -> int:
        """Number of label values, background included."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, samples={len(self)}, "
            f"task={self.task!r}, classes={self.class_names})"
        )

    def load_image(self, sample: Sample) -> np.ndarray:
        """The sample's image: HxWx3 uint8 RGB, or HxWxC float32 bands (see the class)."""
        reader = self.band_reader()
        if reader is None:
            return read_image(sample.image_path)
        return reader.read(sample.image_path, self.in_channels)

    def pixel_values(self, sample: Sample) -> np.ndarray:
        """The sample's image on the network's input scale before normalisation (0-1 for
        8-bit RGB), NaN kept where the data has no value: what ``segkit stats`` averages."""
        reader = self.band_reader()
        if reader is None:
            return read_image(sample.image_path).astype(np.float32) / np.float32(255.0)
        return reader.read(sample.image_path, self.in_channels, fill=False)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The sample's label map as HxW uint8 (``shape`` is the image's, for encoded masks)."""
        return read_mask(sample.mask_path)

    def use_soft_targets(self) -> None:
        """Give masks as float32 foreground coverage in 0..1 instead of int64 labels.

        The base class reads the 0/1 masks as floats; a resize below their size then
        averages them by area (``build_transforms(..., soft=True)``), which gives the fraction
        of each small pixel that is foreground. Adapters with stored coverage masks (Carvana's
        ``prepare --soft``) override this and :meth:`check_soft`.

        Raises:
            ConfigError: the data set is not binary, or it has an ignore label (a float
                target cannot mark pixels to leave out).
        """
        if self.task != "binary":
            raise ConfigError(
                f"data.soft_targets needs a binary data set (background and one class); "
                f"{type(self).__name__} has {self.num_classes} classes "
                f"({name_some(self.class_names)}). Unset data.soft_targets."
            )
        if self.ignore_index is not None:
            raise ConfigError(
                f"data.soft_targets cannot leave out pixels of label {self.ignore_index} (a "
                "coverage target holds no labels): unset loss.ignore_index or data.soft_targets."
            )
        self.soft_targets = True

    def check_size(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> None:
        """Raise DataError when the image and its mask differ in size (names both files)."""
        if image.shape[:2] != mask.shape[:2]:
            raise DataError(
                f"Image {str(sample.image_path)!r} is {image.shape[1]}x{image.shape[0]} but its "
                f"mask {str(sample.mask_path)!r} is {mask.shape[1]}x{mask.shape[0]} (width x "
                "height). Resize the mask with nearest-neighbour interpolation or re-export the pair."
            )

    def check_soft(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """The checked 0/1 mask as float32 (soft targets; see :meth:`use_soft_targets`)."""
        return self.check_pair(image, mask, sample).astype(np.float32)

    def check_pair(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """Check sizes and label values; returns the mask (binary: 255 mapped to 1)."""
        self.check_size(image, mask, sample)
        return self.check_labels(mask, sample)

    def check_labels(self, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """Check a label map's values; returns it (binary: 255 mapped to 1).

        Raises:
            DataError: values outside the classes (other than the ignore label), naming the
                file and what to do.
        """
        n, ignore = len(self.class_names), self.ignore_index
        if self.task == "binary" and mask.size and mask.max() == 255:
            if ignore != 255:
                mask = map_255_to_1(mask)
            elif not self._warned_void and not (mask == 1).any():
                self._warned_void = True
                warnings.warn(
                    f"Mask {str(sample.mask_path)!r} holds 0 and 255 only; with "
                    "loss.ignore_index=255 its 255 pixels are left out, not read as the object. "
                    "If 255 marks the object (Carvana-style 0/255 masks), unset loss.ignore_index.",
                    stacklevel=2,
                )
        if mask.size and int(mask.max()) >= n:
            bad = np.unique(mask[mask >= n]).tolist()
            if ignore is not None and bad == [ignore]:
                return mask
            bad = [v for v in bad if v != ignore]
            if self.task == "binary":
                raise DataError(
                    f"Mask {str(sample.mask_path)!r} is not binary: it holds values "
                    f"{name_some(bad, 8)} besides 0 and 1 (255 counts as 1). Save it with 0 for "
                    "background and 1 or 255 for the object (nearest-neighbour resizing only), or, "
                    "if the data set has more classes, give its class list (data.classes)."
                )
            raise DataError(
                f"Mask {str(sample.mask_path)!r} holds label values {name_some(bad, 8)} outside "
                f"0..{n - 1} ({n} classes: {', '.join(self.class_names)}). "
                + self._outside_hint(bad, ignore)
            )
        return mask

    def _outside_hint(self, bad: list[int], ignore: int | None) -> str:
        """What to do about mask values past the class list."""
        n = len(self.class_names)
        if bad == [n] and not self.reduce_zero_label:  # labels 0..N for N names
            can_reduce = "reduce_zero_label" in inspect.signature(type(self)).parameters
            reduce = (
                f"if 0 means unlabelled and 1..{n} are the {n} named classes (ADE20K, LoveDA), "
                "set data.options.reduce_zero_label=true; "
                if can_reduce
                else ""
            )
            return (
                f"Labels 0..{n} need {n + 1} class names: {reduce}if 0 is a class of its own, "
                "add its name first in data.classes."
            )
        if ignore is not None:
            return "Fix the label map, or give the data set the right class list (data.classes)."
        return (
            "Fix the label map, give the data set the right class list (data.classes), or, if "
            f"a value marks pixels to leave out, set loss.ignore_index={bad[0]}."
        )

    def label_shape(self, sample: Sample) -> tuple[int, int]:
        """``(height, width)`` of the sample's image, from its header where it can be read
        (else by decoding it): what :meth:`load_mask` draws encoded masks at."""
        try:
            width, height = image_size(sample.image_path)
        except DataError:
            return tuple(self.load_image(sample).shape[:2])  # type: ignore[return-value]
        return height, width

    def read_labels(self, index: int) -> np.ndarray:
        """The checked label map of sample ``index`` (HxW, as training reads it before
        transforms: ``reduce_zero_label`` applied, binary 255 read as 1), without decoding
        the image: what :func:`segkit.data.balance.count_classes` counts."""
        sample = self.samples[index]
        mask = self.load_mask(sample, self.label_shape(sample))
        if self.reduce_zero_label:
            mask = reduce_zero_label_mask(mask)
        return self.check_labels(np.asarray(mask), sample)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, Sample]:
        """Image (as :meth:`load_image` reads it) and checked mask (HxW uint8; float32
        coverage with soft targets) of sample ``index``, untransformed."""
        sample = self.samples[index]
        image = self.load_image(sample)
        check = self.check_soft if self.soft_targets else self.check_pair
        mask = self.load_mask(sample, image.shape[:2])
        if self.reduce_zero_label:
            mask = reduce_zero_label_mask(mask)
        mask = check(image, mask, sample)
        return image, mask, sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask, sample = self.read(index)
        item: dict[str, Any] = {"id": sample.id, "image_path": str(sample.image_path)}
        if self.transform is None:
            item["image"] = image
            item["mask"] = mask.astype(np.float32 if self.soft_targets else np.int64)
            return item
        out = self.transform(image=image, mask=mask)
        item["image"] = _image_tensor(out["image"])
        mask_out = out["mask"]
        if not isinstance(mask_out, torch.Tensor):
            mask_out = torch.from_numpy(np.ascontiguousarray(mask_out))
        item["mask"] = mask_out.float() if self.soft_targets else mask_out.long()
        return item


def _image_tensor(image: Any) -> torch.Tensor:
    """CHW float32 tensor from a transform's output (a CHW tensor, or an HxWxC array)."""
    if isinstance(image, torch.Tensor):
        return image.float()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()


def fold_class_facts(cls: type) -> None:
    """Move an older-style adapter's ``class_names`` / ``flip_pairs`` / ``ignore_index`` /
    ``task`` class attributes into its ``meta``, so that ``meta`` is the only home of its
    facts (they read as before through the instance's properties).

    Classes give ``meta.classes`` where the declared ``meta`` names none, flip pairs (when
    not empty) and an ignore index replace the declared ones, and ``task = "multilabel"``
    sets ``meta.multilabel``.

    Raises:
        TypeError: ``task`` contradicts the classes (``binary`` needs two).
    """
    own = {k: cls.__dict__[k] for k in _CLASS_FACTS if k in cls.__dict__}
    own = {k: v for k, v in own.items() if not isinstance(v, property)}
    if not own:
        return
    for key in own:
        delattr(cls, key)
    declared = cls.__dict__.get("meta")
    meta: DatasetMeta = declared if isinstance(declared, DatasetMeta) else cls.meta
    changes: dict[str, Any] = {}
    names = own.get("class_names")
    if names and not (isinstance(declared, DatasetMeta) and declared.classes):
        changes["classes"] = tuple(names)
        if not isinstance(declared, DatasetMeta):
            changes["split_group"] = None  # an inherited split rule was for other classes
    if own.get("flip_pairs"):
        changes["flip_pairs"] = tuple(tuple(p) for p in own["flip_pairs"])
    if own.get("ignore_index") is not None:
        changes["ignore_index"] = int(own["ignore_index"])
    task = own.get("task")
    if task == "multilabel":
        changes["multilabel"] = True
    meta = meta.replace(**changes)
    n = len(meta.classes or _BINARY)
    if task not in (None, "multilabel", "binary" if n == 2 else "multiclass") and meta.classes:
        raise TypeError(
            f"{cls.__name__}.task = {task!r} contradicts its {n} classes: the task follows from "
            "the classes (two: binary) and meta.multilabel. Remove the task attribute."
        )
    cls.meta = meta
