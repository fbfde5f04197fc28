"""``segkit prepare coco|labelme|yolo_seg``: an annotation export rasterised once to PNGs.

The export is read by its own reader (so the masks are the ones training on the export
directly would see, checked by the reader), and written with a thread pool as the generic
``folder`` layout::

    <dst>/[<split>/]images/<id>.<ext>   the image file, copied byte for byte (an image that
                                        labelme embeds in its JSON: written as PNG)
    <dst>/[<split>/]masks/<id>.png      the class ids (HxW uint8; 255 = ignore, where the
                                        reader leaves pixels out)
    <dst>/[<split>/]dataset.json        the reader's metadata (classes, ignore index, how the
                                        export's labels became class ids) and what was read

``FolderDataset`` reads ``dataset.json`` when no ``classes`` are given, so
``build_dataset("folder", dst, split)`` has the export's classes, ignore index and label
record. Every file is written to a temporary name and renamed; a second run skips the pairs
already written (``overwrite`` redoes them), so an interrupted run resumes. The export is
only read.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from segkit._files import replace_atomically, write_bytes_atomic
from segkit.data.base import Sample, SegmentationDataset
from segkit.data.folder import META_FILE, META_FORMAT, prepared_meta
from segkit.data.io import IMAGE_EXTENSIONS, refuse_overlap, require_dir, write_image, write_mask
from segkit.errors import DataError


def _record(ds: SegmentationDataset, name: str, src: Path, split: str | None,
            options: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    meta = ds.metadata().to_dict()
    keep = ("classes", "ignore_index", "labels", "palette")
    return {
        "format": META_FORMAT,
        "source": {"format": name, "root": str(src), "split": split, "options": options},
        "meta": {k: meta[k] for k in keep if meta.get(k) is not None},
    }


class _Writer:
    """Writes one sample's image and mask (the callable the thread pool maps)."""

    def __init__(self, ds: SegmentationDataset, out: Path, overwrite: bool) -> None:
        self.ds, self.out, self.overwrite = ds, out, overwrite

    def image_name(self, sample: Sample) -> str:
        suffix = sample.image_path.suffix.lower()
        return sample.id + (sample.image_path.suffix if suffix in IMAGE_EXTENSIONS else ".png")

    def __call__(self, index: int) -> bool:
        sample = self.ds.samples[index]
        image_path = self.out / "images" / self.image_name(sample)
        mask_path = self.out / "masks" / f"{sample.id}.png"
        if not self.overwrite and image_path.is_file() and mask_path.is_file():
            return False
        image, mask, _ = self.ds.read(index)  # the reader's own checks, the masks it trains on
        if sample.image_path.suffix.lower() not in IMAGE_EXTENSIONS:
            write_image(image_path, image)  # embedded in the annotation file (labelme)
        else:
            replace_atomically(image_path, lambda tmp: shutil.copyfile(sample.image_path, tmp))
        write_mask(mask_path, np.asarray(mask, np.uint8))
        return True


def prepare_export(
    cls: Callable[..., SegmentationDataset],
    name: str,
    src: str | Path,
    dst: str | Path,
    *,
    split: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    **options: Any,
) -> tuple[str, list[str]]:
    """Rasterise an annotation export read by ``cls`` into ``dst`` (module docstring).

    Args:
        cls: the reader (``CocoDataset``, ``LabelmeDataset``, ``YoloSegDataset``).
        name: its registered name (recorded).
        src: the export's root (as the reader's ``root``); only read.
        dst: the prepared folder (``<dst>/<split>`` holds the split when one is given).
        split: the reader's split (None: its default layout without one).
        workers: threads; None = ``os.cpu_count()``.
        overwrite: redo pairs already written (default: keep them).
        **options: the reader's options (e.g. COCO's ``crowd``); None means the reader's
            default (left out, also from the record).

    Returns:
        The message to show and notes (none so far).

    Raises:
        DataError: what the reader raises for the export; ``dst`` overlapping ``src``; a
            ``dst`` prepared from another export or with other options (without ``overwrite``).
    """
    options = {k: v for k, v in options.items() if v is not None}
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    src, dst = require_dir(src, "Export folder"), Path(dst)
    refuse_overlap(src, dst, f"segkit prepare {name}")
    if options.get("mode", "semantic") != "semantic":
        raise DataError("segkit prepare writes one label map per image: mode must be semantic.")
    ds = cls(src, split=split, **options)
    out = dst if split in (None, "", ".") else dst / split
    record = _record(ds, name, src.resolve(), split, options)
    old = prepared_meta(out)
    if old is not None and old != record and not overwrite:
        raise DataError(
            f"{str(out)!r} was prepared from {old['source']} with other classes or options than "
            f"now ({record['source']}); give --overwrite to redo it, or another destination."
        )
    write_bytes_atomic(out / META_FILE, (json.dumps(record, indent=1) + "\n").encode())
    job = _Writer(ds, out, overwrite)
    for folder in (out / "images", out / "masks"):
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        wrote = sum(pool.map(job, range(len(ds))))
    kept = len(ds) - wrote
    parts = [f"rasterised {wrote} {name} image(s)"] + [
        f"{kept} already prepared (--overwrite redoes them)"
    ] * bool(kept)
    classes = len(record["meta"]["classes"])
    message = (
        f"{', '.join(parts)} into {out} ({classes} classes, in {META_FILE}); train on it with "
        f"data.dataset=folder, data.root={dst}"
        + (f", data.train_split={split}" if out != dst else "")
    )
    return message, []
