"""Helen face parsing (11 classes): both on-disk layouts, detected automatically, and preparation.

- official release (``helenstar_release``): ``<root>/<split>/<name>_image.jpg`` +
  ``<name>_label.png`` (``<name>_viz.jpg`` previews are ignored);
- split layout (what the Helen tutorial builds; the real ``helen256`` sample):
  ``<root>/<split>/images/image_N.<ext>`` + ``<root>/<split>/labels/label_N.png``, paired by
  the part after the prefix, never by sort order.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from segkit.data.base import Sample, SegmentationDataset, pair_files, select_ids, unique_keys
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    DataNotFoundError,
    list_files,
    name_some,
    refuse_overlap,
    require_dir,
)
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

HELEN_CLASSES = ["bg", "face", "lb", "rb", "le", "re", "nose", "ulip", "imouth", "llip", "hair"]
#: left/right class pairs that a horizontal flip swaps (brows, eyes; "l" = viewer's left)
HELEN_FLIP_PAIRS = [(2, 3), (4, 5)]
#: the face-parsing literature's class groups over the Helen labels, whose F1 is reported
#: (0 bg, 1 face, 2 lb, 3 rb, 4 le, 5 re, 6 nose, 7 ulip, 8 imouth, 9 llip, 10 hair)
HELEN_GROUPS: dict[str, list[int]] = {
    "eyes": [4, 5],
    "brows": [2, 3],
    "mouth": [7, 8, 9],
    "overall": [2, 3, 4, 5, 6, 7, 8, 9],
}

HELEN_LAYOUTS = {
    "official": "<root>/<split>/<name>_image.jpg + <name>_label.png (helenstar_release)",
    "split": "<root>/<split>/images/image_N.<ext> + <root>/<split>/labels/label_N.png",
}


def _strip(stem: str, prefix: str) -> str:
    return stem[len(prefix) :] if stem.startswith(prefix) else stem


def _split_folder(root: str | Path, split: str | None) -> Path:
    root = require_dir(root, "Helen root")
    folder = root / split if split else root
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        hint = (
            f"Point the data root at a folder holding {split}/, e.g. .../helenstar_release "
            "(data.root=DIR; segkit evaluate --data DIR)."
        )
        if "images" in found or any(p.stem.endswith("_image") for p in root.iterdir()):
            hint = f"{str(root)!r} looks like a split folder itself: pass its parent as root."
        raise DataNotFoundError(
            f"Helen root {str(root)!r} has no split folder {split!r} (it holds: "
            f"{name_some(found) or 'no folders'}). {hint}"
        )
    return require_dir(folder, "Helen split folder")


def detect_helen_layout(folder: str | Path) -> str:
    """``"split"`` or ``"official"`` for a split folder; DataError naming both when neither."""
    folder = Path(folder)
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "split"
    if any(p.stem.endswith("_image") for p in list_files(folder, IMAGE_EXTENSIONS)):
        return "official"
    found = name_some(sorted(p.name for p in folder.iterdir()))
    looked = "; ".join(f"{k}: {v}" for k, v in HELEN_LAYOUTS.items())
    raise DataError(
        f"No Helen layout recognised in {str(folder)!r} (it holds: {found}). Looked for {looked}. "
        "Arrange the files in one of these layouts (see docs/data.md)."
    )


def _official_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    images = [p for p in list_files(folder, IMAGE_EXTENSIONS) if p.stem.endswith("_image")]
    labels = [p for p in list_files(folder, MASK_EXTENSIONS) if p.stem.endswith("_label")]
    return (
        unique_keys(images, lambda p: p.stem[: -len("_image")], folder),
        unique_keys(labels, lambda p: p.stem[: -len("_label")], folder),
    )


def find_helen_samples(root: str | Path, split: str | None = "train") -> tuple[str, list[Sample]]:
    """Detect the layout of ``root/split`` and pair its files.

    Returns:
        ``(layout, samples)``; sample ids are the image file stems (``image_12`` in the split
        layout, ``<name>`` in the official one).
    """
    folder = _split_folder(root, split)
    layout = detect_helen_layout(folder)
    if layout == "official":
        images, labels = _official_files(folder)
        return layout, pair_files(images, labels, folder)
    image_dir = require_dir(folder / "images", "Helen images folder")
    label_dir = require_dir(folder / "labels", "Helen labels folder")
    images = unique_keys(
        list_files(image_dir, IMAGE_EXTENSIONS), lambda p: _strip(p.stem, "image_"), image_dir
    )
    labels = unique_keys(
        list_files(label_dir, MASK_EXTENSIONS), lambda p: _strip(p.stem, "label_"), label_dir
    )
    samples = pair_files(images, labels, folder)
    return layout, [Sample(s.image_path.stem, s.image_path, s.mask_path) for s in samples]


def _prepare(src: str | Path, dst: str | Path, overwrite: bool = False) -> str:
    """``segkit prepare helen``: the official release copied into the split layout."""
    prepare_helen(src, dst, overwrite=overwrite)
    return f"copied the Helen release into the split layout in {dst}"


def _synth(
    dst: str | Path,
    n: int = 50,
    seed: int = 0,
    overwrite: bool = False,
    layout: str = "split",
    test: int | None = None,
) -> str:
    """``segkit synth helen``: ``n`` train faces and a test split (a fifth of ``n``)."""
    from segkit.data.synth import check_helen_destination, synth_helen

    test = max(1, n // 5) if test is None else test
    splits = [("train", n, seed)] + [("test", test, seed + 1)] * (test > 0)
    for split, _, _ in splits:  # check every split before writing any
        check_helen_destination(dst, layout, split, overwrite)
    # like the release, a test split too: `segkit evaluate` scores it by default
    for split, count, split_seed in splits:
        synth_helen(dst, n=count, seed=split_seed, layout=layout, split=split, overwrite=overwrite)
    return f"wrote {n} train + {test} test synthetic faces ({layout} layout) to {dst}"


@register_dataset("helen")
class HelenDataset(SegmentationDataset):
    """Helen face parsing in the official or the split layout (detected automatically).

    Args:
        root: folder holding the split folders (``helenstar_release`` or ``helen256``).
        split: split folder name (``train``, ``test``, ...).
        transform: albumentations pipeline, or None.
        ids: keep only these sample ids (in this order).
    """

    meta = DatasetMeta(
        classes=tuple(HELEN_CLASSES),
        flip_pairs=tuple(HELEN_FLIP_PAIRS),
        groups=HELEN_GROUPS,
        source="unpack helenstar_release (Lin et al., CVPR 2019: train/ and test/ with "
        "<name>_image.jpg + <name>_label.png) there",
        prepare=_prepare,
        synth=_synth,
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        self.layout, samples = find_helen_samples(root, split)
        self.split = split
        folder = Path(root) / split if split else Path(root)
        super().__init__(select_ids(samples, ids, folder), transform, root=root)


def _copy_if_needed(src: Path, dst: Path, overwrite: bool) -> bool:
    if not overwrite and dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return False
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def prepare_helen(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Copy the official Helen release into the split layout, never touching the source.

    Every split folder of ``src`` in the official layout (``train/``, ``test/``) becomes
    ``dst/<split>/images/image_<name>.jpg`` + ``dst/<split>/labels/label_<name>.png``; the
    original name is kept after the prefix, so results trace back to the release. Files
    already copied (same size) are skipped unless ``overwrite``.

    Args:
        src: the ``helenstar_release`` folder.
        dst: where the split layout is written.
        overwrite: copy again even when a file is already there.

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``src`` missing or empty, no official split folder in it, unpaired files,
            or ``dst`` inside ``src``.
    """
    src = require_dir(src, "Helen release folder")
    refuse_overlap(src, Path(dst), "prepare_helen")
    src, dst = src.resolve(), Path(dst).resolve()
    splits = [
        p
        for p in sorted(src.iterdir())
        if p.is_dir() and any(f.stem.endswith("_image") for f in list_files(p, IMAGE_EXTENSIONS))
    ]
    if not splits:
        raise DataError(
            f"No split folder in the official Helen layout found in {str(src)!r}: expected "
            f"{HELEN_LAYOUTS['official']}. Pass the helenstar_release folder itself."
        )
    for folder in splits:
        images, labels = _official_files(folder)
        pair_files(images, labels, folder)  # raises on unpaired files before anything is copied
        out_images = dst / folder.name / "images"
        out_labels = dst / folder.name / "labels"
        out_images.mkdir(parents=True, exist_ok=True)
        out_labels.mkdir(parents=True, exist_ok=True)
        for name, image in images.items():
            label = labels[name]
            _copy_if_needed(image, out_images / f"image_{name}{image.suffix.lower()}", overwrite)
            _copy_if_needed(label, out_labels / f"label_{name}{label.suffix.lower()}", overwrite)
    return dst
