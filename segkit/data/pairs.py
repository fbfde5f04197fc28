"""Image/mask pairs in folders: several roots (a list or a glob), masks named by a suffix
(beside their images or in a folder of their own), several masks of one image.

::

    Dubai aerial tiles                         BUSI ultrasound
    <base>/Tile 1/images/image_part_001.jpg    <base>/benign/benign (1).png
    <base>/Tile 1/masks/image_part_001.png     <base>/benign/benign (1)_mask.png
    <base>/Tile 2/images/image_part_001.jpg    <base>/benign/benign (1)_mask_1.png
    roots: "Tile *"  ->  "Tile 1/image_part_001"   roots: "*"; images: .; masks: .;
                                                   mask_suffix: _mask; merge_masks: union
                                                   ->  "benign/benign (1)"

The ``folder`` and ``color_masks`` readers find their samples here (MMSegmentation's
``img_dir`` / ``ann_dir`` / ``seg_map_suffix``, with suffixes given without the extension).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from segkit.data.base import Sample, _natural_key, pair_files, unique_keys
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    DataNotFoundError,
    list_files,
    name_some,
    require_dir,
)
from segkit.errors import DataError

#: how ``merge_masks`` combines several masks of one image
MERGE_MODES = ("union",)


def check_pair_options(
    mask_suffix: str, merge_masks: str | None, images: str, masks: str
) -> str | None:
    """``merge_masks`` as given, after checking it goes with the other options.

    Raises:
        DataError: an unknown merge mode, ``merge_masks`` without ``mask_suffix`` (the extra
            masks are ``<name><mask_suffix>_<N>``), or images and masks in one folder without
            a ``mask_suffix`` to tell them apart.
    """
    if merge_masks not in (None, *MERGE_MODES):
        raise DataError(
            f"merge_masks must be {' or '.join(MERGE_MODES)} (or null: one mask an image), "
            f"got {merge_masks!r}."
        )
    if merge_masks and not mask_suffix:
        raise DataError(
            "merge_masks needs a mask_suffix: the masks of image <name> are <name><suffix> and "
            "<name><suffix>_1, _2, ... (BUSI: mask_suffix: _mask)."
        )
    if Path(images) == Path(masks) and not mask_suffix:
        raise DataError(
            f"images and masks are one folder ({images!r}): set mask_suffix (e.g. _mask, for "
            "<name>_mask.png beside <name>.png) so that masks are told from images."
        )
    return merge_masks


def root_folders(base: Path, roots: str | Sequence[str] | None) -> list[tuple[str, Path]]:
    """``(id prefix, folder)`` of each root: a folder or glob (``Tile *``) relative to ``base``,
    matches in natural order (``Tile 2`` before ``Tile 10``); None: ``base`` itself, no prefix.

    Raises:
        DataError: an entry that is not a relative path inside ``base`` or that names no folder.
    """
    if roots is None:
        return [("", base)]
    entries = [roots] if isinstance(roots, str) else roots
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, str) for e in entries):
        raise DataError(f"roots must be a folder, a glob or a list of them, got {roots!r}.")
    found: dict[str, Path] = {}
    for entry in entries:
        if not entry.strip("/") or Path(entry).is_absolute() or ".." in Path(entry).parts:
            raise DataError(
                f"roots entry {entry!r} must be a folder (or glob) inside {str(base)!r}, "
                "given relative to it (as 'Tile *' or 'benign')."
            )
        matches = sorted(
            (p for p in base.glob(entry.rstrip("/")) if p.is_dir()),
            key=lambda p: _natural_key(p.relative_to(base).as_posix()),
        )
        if not matches:
            held = sorted(p.name + "/" for p in base.iterdir() if p.is_dir())
            raise DataNotFoundError(
                f"roots entry {entry!r} matches no folder in {str(base)!r} (its folders: "
                f"{name_some(held, 8) or 'none'}). Fix data.options.roots."
            )
        for folder in matches:
            found.setdefault(folder.relative_to(base).as_posix(), folder)
    return list(found.items())


def folder_pairs(
    base: Path,
    images: str = "images",
    masks: str = "masks",
    *,
    roots: str | Sequence[str] | None = None,
    mask_suffix: str = "",
    merge_masks: str | None = None,
) -> list[Sample]:
    """The samples of ``base``: in each root folder, ``images/<name>.*`` paired with
    ``masks/<name><mask_suffix>.*``; with ``roots`` the ids are ``<root>/<name>``.

    ``images`` and ``masks`` may be one folder (``.``): files named ``<name><mask_suffix>``
    (and ``<name><mask_suffix>_<N>``) are the masks, the others the images. A separate mask
    folder's files that lack the suffix are left alone (as ``color_masks`` always did).

    Raises:
        DataError: an image without its mask or the reverse (names the folder and files),
            several masks of one image without ``merge_masks``, a bad option.
    """
    merge_masks = check_pair_options(mask_suffix, merge_masks, images, masks)
    pattern = re.compile(rf"^(?P<name>.+?){re.escape(mask_suffix)}(?:_(?P<n>\d+))?$")
    samples: list[Sample] = []
    for prefix, folder in root_folders(base, roots):
        image_dir, mask_dir = folder / images, folder / masks
        image_files = list_files(require_dir(image_dir, "Image folder"), IMAGE_EXTENSIONS)
        mask_files = list_files(require_dir(mask_dir, "Mask folder"), MASK_EXTENSIONS)
        same = image_dir.resolve() == mask_dir.resolve()
        if not mask_suffix:  # masks named as their images: one each
            by_name = {
                k: [p] for k, p in unique_keys(mask_files, lambda p: p.stem, mask_dir).items()
            }
        else:
            by_name = _masks_by_name(mask_files, pattern, mask_dir)
        if same:
            taken = {p for paths in by_name.values() for p in paths}
            image_files = [p for p in image_files if p not in taken]
        _check_single(by_name, merge_masks, mask_dir)
        found = pair_files(
            unique_keys(image_files, lambda p: p.stem, image_dir),
            {name: paths[0] for name, paths in by_name.items()},
            folder,
            mask_word="mask",
        )
        for s in found:
            more = tuple(by_name[s.id][1:])
            samples.append(replace(s, id=f"{prefix}/{s.id}" if prefix else s.id, extra_masks=more))
    return samples


def _masks_by_name(files: list[Path], pattern: re.Pattern, where: Path) -> dict[str, list[Path]]:
    """Image name -> its masks (``<name><suffix>`` first, then ``_1``, ``_2``, ...)."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in files:
        match = pattern.match(path.stem)
        if match is None:
            continue
        number = int(match["n"]) if match["n"] is not None else -1
        taken = found.setdefault(match["name"], [])
        twin = next((p for n, p in taken if n == number), None)
        if twin is not None:
            raise DataError(
                f"Two files in {str(where)!r} are one mask: {twin.name} and {path.name}. "
                "Keep one of them."
            )
        taken.append((number, path))
    return {name: [p for _, p in sorted(masks)] for name, masks in found.items()}


def _check_single(by_name: dict[str, list[Path]], merge_masks: str | None, where: Path) -> None:
    """Several masks of one image need ``merge_masks``: one line naming the first such image."""
    several = {name: paths for name, paths in by_name.items() if len(paths) > 1}
    if several and merge_masks is None:
        name, paths = min(several.items(), key=lambda item: _natural_key(item[0]))
        raise DataError(
            f"{len(several)} image(s) in {str(where)!r} have several masks, e.g. {name!r}: "
            f"{name_some(p.name for p in paths)}. Set data.options.merge_masks: union to read "
            "each image's masks as one (a pixel is labelled where any of them labels it), or move "
            "the extra masks out of the folder."
        )


def read_masks(
    sample: Sample,
    shape: tuple[int, int],
    read: Callable[[Path], np.ndarray],
    resize: bool = False,
) -> np.ndarray:
    """The sample's label map, its masks merged (``union``: the pixel-wise maximum, so that a
    pixel holds a label wherever any mask holds one; for 0/1 or 0/255 masks the union of the
    objects), each first read with ``read`` and checked against the image's ``shape``.

    Args:
        resize: a mask of another size than its image is resized to it (nearest neighbour)
            instead of being an error.

    Raises:
        DataError: a mask of another size than its image, without ``resize`` (names both files).
    """
    merged = None
    for path in (sample.mask_path, *sample.extra_masks):
        mask = read(path)
        if mask.shape[:2] != tuple(shape):
            if not resize:
                raise DataError(
                    f"Image {str(sample.image_path)!r} is {shape[1]}x{shape[0]} but its mask "
                    f"{str(path)!r} is {mask.shape[1]}x{mask.shape[0]} (width x height). Set "
                    "data.options.resize_masks: true to resize such masks to their image "
                    "(nearest neighbour), or re-export the mask at the image's size."
                )
            mask = _nearest(mask, shape)
        merged = mask if merged is None else np.maximum(merged, mask)
    return merged  # type: ignore[return-value]  (a sample has a mask_path)


def _nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The label at each pixel's centre (``INTER_NEAREST_EXACT``, as training's ``Resize``):
    ``INTER_NEAREST`` would shift the labels by half a source pixel per pixel of scale."""
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
