"""Pascal VOC 2012 segmentation layout: ``JPEGImages/`` + ``SegmentationClass/`` + split lists.

::

    VOC2012/                         (or a folder holding VOCdevkit/VOC2012)
      JPEGImages/<id>.jpg            every image of the release, most without a mask
      SegmentationClass/<id>.png     palette PNG: 0 background, 1..20 classes, 255 boundary
      ImageSets/Segmentation/train.txt, val.txt, trainval.txt   one id per line

The split list decides what is read, so the thousands of images without a mask are not
an error. Masks from the SBD "aug" set (``SegmentationClassAug``, greyscale ids) read the
same way with ``masks="SegmentationClassAug"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.formats.palette import voc_palette
from segkit.data.io import DataNotFoundError, name_some, require_dir, split_list_entries
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def find_voc_root(root: str | Path) -> Path:
    """The folder holding ``JPEGImages/``: ``root`` itself, or ``root/VOCdevkit/VOC2012`` or
    ``root/VOC2012`` (how the tar unpacks).

    Raises:
        DataNotFoundError: none of them holds ``JPEGImages/``.
    """
    root = require_dir(root, "Data root")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataNotFoundError(
        f"No Pascal VOC layout in {str(root)!r}: looked for JPEGImages/ there and in "
        "VOC2012/ and VOCdevkit/VOC2012/. Point data.root at the folder holding JPEGImages/, "
        "SegmentationClass/ and ImageSets/."
    )


def read_split_list(path: Path) -> list[str]:
    """Sample ids of a split list: the first word of each non-empty line, path and suffix
    dropped (``2007_000032``, ``JPEGImages/2007_000032.jpg`` and ``2007_000032 1`` alike)."""
    return [Path(words[0]).stem for _, words in split_list_entries(path)]


def _voc_samples(base: Path, split_list: Path, images: str, masks: str) -> list[Sample]:
    """The samples a split list names; a named id without its image or mask is an error."""
    samples = []
    for sample_id in read_split_list(split_list):
        image = base / images / f"{sample_id}.jpg"
        if not image.is_file():  # some VOC-style sets keep PNG images
            image = next(iter(sorted((base / images).glob(f"{sample_id}.*"))), image)
        for path in (image, base / masks / f"{sample_id}.png"):
            if not path.is_file():
                raise DataNotFoundError(
                    f"Split list {str(split_list)!r} names {sample_id!r}, but {str(path)!r} does "
                    "not exist. Add the file or remove the line from the list."
                )
        samples.append(Sample(sample_id, image, base / masks / f"{sample_id}.png"))
    if not samples:
        raise DataError(f"Split list {str(split_list)!r} names no images; add ids, one per line.")
    return samples


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth``: a small synthetic set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_voc

    synth_voc(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} masked + {n // 2} unmasked synthetic images in the VOC layout to {dst}"


@register_dataset("voc")
class VOCDataset(SegmentationDataset):
    """Pascal VOC 2012 semantic segmentation (21 classes, 255 = boundary, left out).

    Args:
        root: the ``VOC2012`` folder, or a folder holding ``VOCdevkit/VOC2012``.
        split: the split list ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``,
            ``trainval``); None or ".": every image that has a mask.
        transform: albumentations pipeline, or None.
        images: image folder name.
        masks: mask folder name (``SegmentationClassAug`` for the SBD-augmented masks).
        lists: folder of the split lists, relative to the VOC root.
        ids: keep only these ids, in this order.
    """

    meta = DatasetMeta(
        classes=VOC_CLASSES,
        palette=tuple(voc_palette(len(VOC_CLASSES))),
        ignore_index=255,
        flip_pairs=(),
        synth=_synth,
        source="unpack VOCtrainval_11-May-2012.tar (VOCdevkit/VOC2012 with JPEGImages/, "
        "SegmentationClass/ and ImageSets/Segmentation/) there",
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        images: str = "JPEGImages",
        masks: str = "SegmentationClass",
        lists: str = "ImageSets/Segmentation",
        ids: Iterable[str] | None = None,
    ) -> None:
        base = find_voc_root(root)
        require_dir(base / masks, "Mask folder")
        if split in (None, "", "."):
            mask_ids = sorted(p.stem for p in (base / masks).glob("*.png"))
            listed = base / masks  # named in messages
            samples = [
                Sample(i, base / images / f"{i}.jpg", base / masks / f"{i}.png") for i in mask_ids
            ]
        else:
            listed = base / lists / f"{split}.txt"
            if not listed.is_file():
                have = sorted(p.stem for p in (base / lists).glob("*.txt"))
                raise DataNotFoundError(
                    f"No split list {str(listed)!r}. "
                    + (f"Lists there: {name_some(have, 8)}." if have else "That folder has none.")
                    + " Pick one of them as the split, or split=None for every masked image."
                )
            samples = _voc_samples(base, listed, images, masks)
        self.split = split
        super().__init__(select_ids(samples, ids, listed), transform, None, base)
