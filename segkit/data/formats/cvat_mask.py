"""CVAT's "Segmentation mask 1.1" export read with its own colour table: ``cvat_mask``.

::

    <root>/labelmap.txt                       # label:color_rgb:parts:actions
                                              background:0,0,0::
                                              car:250,50,83::
    <root>/SegmentationClass/<name>.png       RGB, each label painted in its labelmap colour
    <root>/SegmentationObject/<name>.png      (instances; not read)
    <root>/ImageSets/Segmentation/<subset>.txt   one name a line (CVAT's subset: default)
    <root>/JPEGImages/<name>.jpg              present when the export includes the images

The labelmap's line order gives the class ids (``background`` first, as CVAT writes it);
a label without a colour takes Pascal VOC's colour of its line (as datumaro reads it). Each
mask pixel becomes the id of its colour; a colour not in the labelmap stops with one line
naming the file (``unknown="ignore"`` maps it to 255 instead).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.formats.color_masks import Color, colors_to_ids
from segkit.data.formats.palette import voc_palette
from segkit.data.formats.voc import read_split_list
from segkit.data.io import DataNotFoundError, name_some, read_image, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError


def read_labelmap(path: str | Path) -> tuple[list[str], list[Color]]:
    """Class names and colours of a CVAT / datumaro ``labelmap.txt``, in line order.

    Raises:
        DataError: a malformed colour, a repeated name or colour (names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"No labelmap {str(path)!r}: a CVAT 'Segmentation mask 1.1' export holds "
            "labelmap.txt beside SegmentationClass/. Export again, or point data.root there."
        )
    names: list[str] = []
    colors: list[Color] = []
    palette = voc_palette()
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        text = rest.split(":")[0].strip()
        try:
            rgb = tuple(int(v) for v in text.split(",")) if text else palette[len(names)]
        except ValueError:
            rgb = ()
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(
                f"{str(path)!r} line {n}: colour {text!r} is not r,g,b (0..255); write "
                "name:r,g,b:: as CVAT does."
            )
        for what, value, seen in (("label", name.strip(), names), ("colour", rgb, colors)):
            if value in seen:
                raise DataError(f"{str(path)!r} line {n}: the {what} {value} is listed twice.")
        names.append(name.strip())
        colors.append(rgb)  # type: ignore[arg-type]
    if len(names) < 2:
        raise DataError(f"{str(path)!r} lists {len(names)} label(s); give background and a class.")
    return names, colors


def _synth(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth cvat_mask``: a small Segmentation mask 1.1 export; the message to show."""
    from segkit.data.formats.synth_annotations import synth_cvat_mask

    synth_cvat_mask(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} images, colour masks, labelmap.txt and ImageSets/Segmentation/default.txt to {dst}"


@register_dataset("cvat_mask")
class CvatMaskDataset(SegmentationDataset):
    """CVAT "Segmentation mask 1.1": colour masks read through the export's labelmap.txt.

    Args:
        root: the unpacked export (holding ``labelmap.txt``).
        split: the subset list ``ImageSets/Segmentation/<split>.txt`` (CVAT: ``default``);
            None or ".": every mask in ``SegmentationClass/``.
        transform: albumentations pipeline, or None.
        images: image folder name.
        unknown: ``error`` (a colour not in the labelmap stops) or ``ignore`` (255).
        ids: keep only these ids, in this order.
    """

    meta = DatasetMeta(flip_pairs=None, synth=_synth)

    def __init__(
        self,
        root: str | Path,
        split: str | None = "default",
        transform: Callable[..., dict[str, Any]] | None = None,
        images: str = "JPEGImages",
        unknown: str = "error",
        ids: Iterable[str] | None = None,
    ) -> None:
        if unknown not in ("error", "ignore"):
            raise DataError(f"unknown must be 'error' or 'ignore', got {unknown!r}.")
        root = require_dir(root, "Data root")
        names, self.colors = read_labelmap(root / "labelmap.txt")
        masks = require_dir(root / "SegmentationClass", "Mask folder")
        if split in (None, "", "."):
            listed, stems = masks, sorted(p.stem for p in masks.glob("*.png"))
        else:
            listed = root / "ImageSets" / "Segmentation" / f"{split}.txt"
            if not listed.is_file():
                have = sorted(p.stem for p in listed.parent.glob("*.txt"))
                raise DataNotFoundError(
                    f"No subset list {str(listed)!r}. Lists there: {name_some(have) or 'none'}. "
                    "Pick one as the split (CVAT names its subset default), or split=None."
                )
            stems = read_split_list(listed)
        samples = [self._sample(root, images, stem, listed) for stem in stems]
        if not samples:
            raise DataError(f"{str(listed)!r} names no images; export the task's annotations.")
        self.split, self.unknown = split, unknown
        facts: dict[str, Any] = {"palette": tuple(self.colors)}  # the labelmap's colours
        if unknown == "ignore":
            facts["ignore_index"] = 255
        super().__init__(select_ids(samples, ids, listed), transform, names, root, facts=facts)

    @staticmethod
    def _sample(root: Path, images: str, stem: str, listed: Path) -> Sample:
        mask = root / "SegmentationClass" / f"{stem}.png"
        found = sorted((root / images).glob(f"{stem}.*")) if (root / images).is_dir() else []
        for path, what in ((mask, "mask"), (found[0] if found else None, "image")):
            if path is None or not path.is_file():
                raise DataNotFoundError(
                    f"{str(listed)!r} names {stem!r}, but its {what} "
                    f"{str(path or root / images / (stem + '.*'))!r} does not exist. Export "
                    "with 'Save images' on (images go to JPEGImages/), or remove the line."
                )
        return Sample(stem, found[0], mask)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The colour mask as class ids (unknown colours: an error, or 255 when ignored)."""
        to = 255 if self.unknown == "ignore" else None
        return colors_to_ids(read_image(sample.mask_path), self.colors, self.class_names,
                             sample.mask_path, to)  # fmt: skip
