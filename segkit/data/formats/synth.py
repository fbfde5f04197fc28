"""Small synthetic sets in the VOC, Cityscapes, SegNet CamVid, colour-mask and multi-label layouts
(``segkit synth voc``).

Each image is a few rectangles of classes, painted in class-dependent colours with noise, so
a network can learn something in an epoch; masks are written in the format's own encoding
(VOC palette PNG with a 255 boundary, Cityscapes labelIds, CamVid-style RGB + class_dict.csv).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segkit.data.formats.palette import voc_palette
from segkit.data.synth import _check_destination

#: width x height of the synthetic images (not square on purpose)
SIZE = (48, 32)


def _layout(rng: np.random.Generator, values: list[int], size: tuple[int, int]) -> np.ndarray:
    """A label map of four quadrants holding ``values`` drawn at random."""
    w, h = size
    mask = np.zeros((h, w), np.uint8)
    a, b, c, d = rng.choice(values, 4)
    mask[: h // 2, : w // 2], mask[: h // 2, w // 2 :] = a, b
    mask[h // 2 :, : w // 2], mask[h // 2 :, w // 2 :] = c, d
    return mask


def _photo(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """An RGB image whose colour follows the label (plus noise)."""
    tone = (np.arange(256)[:, None] * np.array([[37, 91, 53]])) % 200 + 28
    noise = rng.normal(0, 12, (*mask.shape, 3))
    return np.clip(tone[mask] + noise, 0, 255).astype(np.uint8)


def synth_voc(dst: str | Path, n: int = 6, seed: int = 0, overwrite: bool = False) -> Path:
    """``<dst>/VOCdevkit/VOC2012`` with ``n`` masked images (palette PNG, 255 boundary band),
    ``n // 2`` images without a mask, and train/val lists.
    """
    base = Path(dst) / "VOCdevkit" / "VOC2012"
    subs = [base / s for s in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")]
    _check_destination("synth_voc", subs, overwrite=overwrite)
    for sub in subs:
        sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = [v for color in voc_palette() for v in color]
    ids = [f"2007_{i:06d}" for i in range(n + n // 2)]
    for i, sample_id in enumerate(ids):
        mask = _layout(rng, [0, 8, 12, 15], SIZE)
        cv2.imwrite(str(subs[0] / f"{sample_id}.jpg"), _photo(rng, mask)[..., ::-1])
        if i < n:
            mask[:, SIZE[0] // 2] = 255  # the boundary band VOC draws between objects
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(subs[1] / f"{sample_id}.png")
    cut = max(1, n - max(1, n // 3))
    (subs[2] / "train.txt").write_text("\n".join(ids[:cut]) + "\n")
    (subs[2] / "val.txt").write_text("\n".join(ids[cut:n]) + "\n")
    return Path(dst)


def synth_cityscapes(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> Path:
    """``leftImg8bit/`` + ``gtFine/`` (labelIds, incl. ids without a trainId) for ``n`` frames
    per city of aachen and bochum, in train and val."""
    dst = Path(dst)
    folders = [dst / top / split / city for top in ("leftImg8bit", "gtFine")
               for split in ("train", "val") for city in ("aachen", "bochum")]  # fmt: skip
    _check_destination("synth_cityscapes", folders, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        for city in ("aachen", "bochum"):
            for frame in range(n):
                stem = f"{city}_{frame:06d}_000019"
                labels = _layout(rng, [7, 8, 11, 26, 1, 9], SIZE)  # road ... ego, parking
                image = _photo(rng, labels)[..., ::-1]
                cv2.imwrite(
                    str(dst / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), image
                )
                cv2.imwrite(
                    str(dst / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), labels
                )
    return dst


def synth_camvid(dst: str | Path, n: int = 3, seed: int = 0, overwrite: bool = False) -> Path:
    """SegNet's CamVid layout: ``train/`` + ``trainannot/`` (ids 0..10 and 11 Unlabelled) and
    ``train.txt`` (also val) whose lines are absolute paths from another machine."""
    dst = Path(dst)
    splits = ("train", "val")
    folders = [dst / f"{s}{annot}" for s in splits for annot in ("", "annot")]
    _check_destination("synth_camvid", folders, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        lines = []
        for i in range(n):
            name = f"0001TP_{split}{i:04d}.png"
            labels = _layout(rng, [0, 3, 8, 11], SIZE)  # sky, road, car, unlabelled
            cv2.imwrite(str(dst / split / name), _photo(rng, labels)[..., ::-1])
            cv2.imwrite(str(dst / f"{split}annot" / name), labels)
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return dst


#: the class table :func:`synth_color_masks` writes (a part of CamVid's)
SYNTH_TABLE = (("Sky", (128, 128, 128)), ("Road", (128, 64, 128)), ("Car", (64, 0, 128)))


def synth_color_masks(dst: str | Path, n: int = 6, seed: int = 0, overwrite: bool = False) -> Path:
    """``images/`` + ``masks/`` (RGB colour-coded) + ``class_dict.csv`` (name,r,g,b)."""
    dst = Path(dst)
    table = dst / "class_dict.csv"
    _check_destination(
        "synth_color_masks", [dst / "images", dst / "masks"], [table] * (not overwrite)
    )
    (dst / "images").mkdir(parents=True, exist_ok=True), (dst / "masks").mkdir(exist_ok=True)
    rows = ["name,r,g,b"] + [f"{name},{r},{g},{b}" for name, (r, g, b) in SYNTH_TABLE]
    table.write_text("\n".join(rows) + "\n")
    colors = np.array([c for _, c in SYNTH_TABLE], np.uint8)
    rng = np.random.default_rng(seed)
    for i in range(n):
        ids = _layout(rng, [0, 1, 2], SIZE)
        cv2.imwrite(str(dst / "images" / f"f{i}.jpg"), _photo(rng, ids)[..., ::-1])
        cv2.imwrite(str(dst / "masks" / f"f{i}.png"), colors[ids][..., ::-1])
    return dst


#: the classes :func:`synth_multilabel` writes: two discs that overlap
SYNTH_MULTILABEL_CLASSES = ("red_disc", "blue_disc")


def synth_multilabel(dst: str | Path, n: int = 6, seed: int = 0, overwrite: bool = False) -> Path:
    """``images/`` + ``masks/<class>/`` (0/255 PNGs): a red and a blue disc per image that
    overlap (purple where both are), one mask folder per class."""
    dst = Path(dst)
    folders = [dst / "images"] + [dst / "masks" / c for c in SYNTH_MULTILABEL_CLASSES]
    _check_destination("synth_multilabel", folders, overwrite=overwrite)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = SIZE
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cx, cy = rng.integers(14, w - 14), rng.integers(10, h - 10)
        dx = int(rng.integers(5, 9)) * (1 if rng.random() < 0.5 else -1)
        discs = [(xx - x) ** 2 + (yy - cy) ** 2 <= r**2 for x, r in ((cx, 9), (cx + dx, 8))]
        image = np.full((h, w, 3), 40.0) + rng.normal(0, 10, (h, w, 3))
        image[discs[0], 0] += 180  # red
        image[discs[1], 2] += 180  # blue: both where they overlap
        cv2.imwrite(
            str(dst / "images" / f"s{i}.png"), np.clip(image, 0, 255).astype(np.uint8)[..., ::-1]
        )
        for name, disc in zip(SYNTH_MULTILABEL_CLASSES, discs):
            cv2.imwrite(str(dst / "masks" / name / f"s{i}.png"), disc.astype(np.uint8) * 255)
    return dst


def synth_raster(dst: str | Path, n: int = 6, seed: int = 0, overwrite: bool = False) -> Path:
    """``images/r<i>.tif`` (2-band float32 in decibels, band-first as Sentinel-1 GeoTIFFs,
    a NaN no-data corner) + ``masks/r<i>.tif`` (int16: 0 land, 1 water, -1 no data)."""
    from segkit.data.bands import _tifffile

    tifffile = _tifffile()
    dst = Path(dst)
    _check_destination("synth_raster", [dst / "images", dst / "masks"], overwrite=overwrite)
    (dst / "images").mkdir(parents=True, exist_ok=True), (dst / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        labels = _layout(rng, [0, 1], SIZE).astype(np.int16)
        level = np.where(labels == 1, -20.0, -9.0)  # water is dark in radar
        bands = np.stack([level, level - 7.0]) + rng.normal(0, 1.5, (2, *labels.shape))
        bands = bands.astype(np.float32)
        bands[:, :4, :6] = np.nan  # no data, as at a swath edge
        labels[:4, :6] = -1
        tifffile.imwrite(dst / "images" / f"r{i}.tif", bands, photometric="minisblack",
                         planarconfig="separate")  # fmt: skip
        tifffile.imwrite(dst / "masks" / f"r{i}.tif", labels)
    return dst
