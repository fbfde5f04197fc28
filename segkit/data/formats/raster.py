"""Images of any band count and bit depth, paired with their labels by file-name patterns:
``raster``.

::

    <root>/[<split>/]S1Hand/Ghana_53713_S1Hand.tif        images="S1Hand/*_S1Hand.tif"
    <root>/[<split>/]LabelHand/Ghana_53713_LabelHand.tif  masks="LabelHand/*_LabelHand.tif"

The part of a file name that ``*`` matches (without its file suffix) is the sample id that
pairs an image with its label map. Images are read band by band
(:class:`~segkit.data.bands.BandReader`: TIFF through tifffile, 16-bit PNG as stored), NaN
becomes ``nan_fill``; labels may be integer TIFFs holding values such as -1 that
``label_map`` turns into class ids or ``ignore``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.bands import TIFF_SUFFIXES, BandReader, read_tiff
from segkit.data.base import Sample, SegmentationDataset, pair_files, select_ids, unique_keys
from segkit.data.folder import _class_names
from segkit.data.io import name_some, read_mask, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import ConfigError, DataError

#: the label value ``ignore`` in ``label_map`` becomes (the data set's ignore index)
IGNORE = 255


def pattern_files(base: Path, pattern: str, what: str) -> dict[str, Path]:
    """Files of ``base`` matching ``pattern`` (one ``*``), keyed by what ``*`` matched without
    a file suffix.

    Raises:
        ConfigError: the pattern has no ``*`` or more than one.
        DataError: no file matches (names the folder and the pattern).
    """
    if pattern.count("*") != 1 or "**" in pattern:
        raise ConfigError(
            f"{what}={pattern!r} needs exactly one '*' standing for the sample id, e.g. "
            "'images/*.tif' or 'S1Hand/*_S1Hand.tif'."
        )
    head, tail = (re.escape(part) for part in pattern.split("*"))
    rule = re.compile(f"{head}(.+){tail}")
    found = {}
    for path in sorted(base.glob(pattern)):
        match = rule.fullmatch(path.relative_to(base).as_posix())
        if path.is_file() and match and not path.name.startswith("."):
            found[path] = Path(match.group(1)).stem if not tail else match.group(1)
    if not found:
        raise DataError(
            f"No files match {what}={pattern!r} in {str(base)!r}. Check the pattern (relative "
            "to the data root; '*' is the sample id) and data.root."
        )
    return unique_keys(found, found.__getitem__, base)


def parse_label_map(label_map: Mapping[Any, Any] | None) -> dict[int, int]:
    """``{stored value: class id}`` from a config's ``label_map`` (``ignore`` -> 255).

    Raises:
        ConfigError: a key that is not an integer, or a target outside 0..255.
    """
    out: dict[int, int] = {}
    for key, value in (label_map or {}).items():
        try:
            source = int(str(key))
        except ValueError:
            raise ConfigError(
                f"label_map keys are stored label values (integers such as -1), got {key!r}."
            ) from None
        target = IGNORE if str(value).lower() == "ignore" else value
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= 255:
            raise ConfigError(
                f"label_map maps {source} to {value!r}; give a class id 0..255 or 'ignore'."
            )
        out[source] = target
    return out


def read_labels(path: Path, mapping: Mapping[int, int]) -> np.ndarray:
    """A label file as HxW uint8 class ids: an integer (or integral float) TIFF of any type,
    or an 8-bit label image; ``mapping`` applied, NaN read as ``ignore``.

    Raises:
        DataError: names the file and the value that does not fit, and the fix.
    """
    raw = read_tiff(path) if path.suffix.lower() in TIFF_SUFFIXES else read_mask(path)
    if raw.ndim != 2:
        raise DataError(
            f"Label file {str(path)!r} has {raw.shape[2]} bands; a label map has one. Save "
            "the class ids as a single-band image."
        )
    values = raw
    if raw.dtype.kind == "f":
        finite = np.isfinite(raw)
        if not np.array_equal(raw[finite], np.round(raw[finite])):
            raise DataError(
                f"Label file {str(path)!r} holds fractional values; a label map holds integer "
                "class ids. Round or re-export it."
            )
        values = np.where(finite, raw, 0).astype(np.int64)
    out = values.astype(np.int64, copy=True)
    for source, target in mapping.items():
        out[values == source] = target
    if raw.dtype.kind == "f":
        out[~finite] = IGNORE
    bad = np.unique(out[(out < 0) | (out > 255)])
    if bad.size:
        raise DataError(
            f"Label file {str(path)!r} holds values {name_some(bad.tolist(), 5)} that are not "
            f"class ids 0..255. Map them with the data set's label_map (e.g. data.options."
            f"label_map: {{{int(bad[0])}: ignore}})."
        )
    return out.astype(np.uint8)


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth raster``: a small multi-band set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_raster

    synth_raster(dst, n=n, seed=seed, overwrite=overwrite)
    return (
        f"wrote {n} 2-band float32 TIFF images (NaN = no data) with int16 labels (-1 = no "
        f"data) to {dst}; read them with data.options.label_map: {{-1: ignore}}"
    )


@register_dataset("raster")
class RasterDataset(SegmentationDataset):
    """Multi-band / high bit depth images and their label maps, paired by name patterns.

    Args:
        root: data set folder.
        split: sub-folder of ``root`` the patterns are taken from (None or ".": ``root``); a
            pattern holding ``{split}`` takes it there instead.
        transform: albumentations pipeline, or None.
        images: pattern of the image files relative to the split folder, one ``*`` for the id.
        masks: pattern of the label files.
        classes: class names (every class id, background first) or a class count.
        label_map: stored label value -> class id or ``"ignore"`` (e.g. ``{-1: ignore}``);
            values not named are kept.
        bands: 0-based band numbers to keep, in order (None: every band).
        nan_fill: the value NaN (no-data) pixels get, on the input scale.
        ids: keep only these ids, in this order.
        reduce_zero_label: label 0 means unlabelled (left out) and 1..N are the classes
            (read as 0..N-1, predictions written back as 1..N); not with ``label_map``.
    """

    #: not checked until the caller sets it (``model.in_channels``): a raster has its own bands
    in_channels = None
    meta = DatasetMeta(
        synth=_synth,
        source="put the image and label files there (images/*.tif, masks/*.tif, or "
        "set data.options.images / masks to their patterns)",
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        images: str = "images/*",
        masks: str = "masks/*",
        classes: Sequence[str] | int | None = None,
        label_map: Mapping[Any, Any] | None = None,
        bands: Sequence[int] | None = None,
        nan_fill: float = 0.0,
        ids: Iterable[str] | None = None,
        reduce_zero_label: bool = False,
    ) -> None:
        if reduce_zero_label and label_map:
            raise DataError(
                "raster: give reduce_zero_label or label_map, not both (label_map can say "
                "the same: {0: ignore, 1: 0, 2: 1, ...})."
            )
        root = require_dir(root, "Data root")
        base = root
        if split not in (None, "", "."):
            if "{split}" in images or "{split}" in masks:
                images, masks = images.replace("{split}", split), masks.replace("{split}", split)
            else:
                base = require_dir(root / split, "Split folder")
        image_files = pattern_files(base, images, "images")
        mask_files = pattern_files(base, masks, "masks")
        samples = pair_files(image_files, mask_files, base, mask_word="label")
        self.split = split
        self.label_map = parse_label_map(label_map)
        self.reader = BandReader(tuple(bands) if bands is not None else None, nan_fill)
        ignores = IGNORE in self.label_map.values() and type(self).meta.ignore_index is None
        facts = {"ignore_index": IGNORE} if ignores else {}
        samples = select_ids(samples, ids, base)
        names = _class_names(classes, reduce_zero_label)
        super().__init__(
            samples, transform, names, root, facts=facts, reduce_zero_label=reduce_zero_label
        )
        if ignores:
            self._warned_void = True  # a label map all 'ignore' is no 0/255 mask mistaken

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The label file as HxW uint8 class ids (``label_map`` applied)."""
        return read_labels(sample.mask_path, self.label_map)
