"""Synthetic Helen faces and Carvana cars in the real on-disk layouts, deterministic from a seed.

For tests and the demo: the files look like the real releases (names, formats, palette GIFs),
so every reader is exercised exactly as on real data. Sample ``i`` depends only on
``(seed, i)``, so a larger ``n`` extends a data set without changing its first samples.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segkit.data.io import name_some, write_bytes_atomic, write_image, write_mask
from segkit.data.rle import rle_encode, write_rle_csv
from segkit.errors import DataError

# RGB colour per Helen class: bg, face, lb, rb, le, re, nose, ulip, imouth, llip, hair
_HELEN_COLOURS = np.array(
    [[90, 110, 140], [224, 172, 140], [70, 45, 30], [70, 45, 30], [40, 30, 30], [40, 30, 30],
     [205, 150, 120], [180, 70, 80], [60, 20, 30], [195, 85, 95], [50, 35, 25]],
    dtype=np.float32,
)  # fmt: skip


def _noisy(base: np.ndarray, rng: np.random.Generator, amplitude: int) -> np.ndarray:
    """``base`` (float, 0..255) plus uniform sensor-like noise in +-amplitude, as uint8."""
    noise = rng.integers(-amplitude, amplitude + 1, size=base.shape[:2] + (1,), dtype=np.int8)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _face_label(size: int, rng: np.random.Generator) -> np.ndarray:
    """An 11-class label map: hair, face ellipse, brows, eyes, nose, lips (``l*`` on the left)."""
    label = np.zeros((size, size), np.uint8)
    cx, cy = size * rng.uniform(0.44, 0.56), size * rng.uniform(0.5, 0.6)
    fa, fb = size * rng.uniform(0.24, 0.3), size * rng.uniform(0.32, 0.38)
    angle = rng.uniform(-8.0, 8.0)
    rot = np.deg2rad(angle)

    def at(dx: float, dy: float) -> tuple[int, int]:  # face coordinates (units of fa, fb)
        x, y = dx * fa, dy * fb
        px = cx + x * np.cos(rot) - y * np.sin(rot)
        py = cy + x * np.sin(rot) + y * np.cos(rot)
        return round(px), round(py)

    def blob(dx: float, dy: float, ax: float, ay: float, value: int) -> None:
        axes = (max(1, round(ax * fa)), max(1, round(ay * fb)))
        cv2.ellipse(label, at(dx, dy), axes, angle, 0, 360, value, thickness=-1)

    blob(0.0, -0.22, 1.18, 0.95, 10)  # hair behind and above the face
    blob(0.0, 0.0, 1.0, 1.0, 1)  # face
    for side, brow, eye in ((-1, 2, 4), (1, 3, 5)):  # side -1 = viewer's left: lb, le
        blob(side * 0.42, -0.36, 0.24, 0.05, brow)
        blob(side * 0.40, -0.2, 0.16, 0.07, eye)
    blob(0.0, 0.1, 0.1, 0.17, 6)  # nose
    blob(0.0, 0.46, 0.34, 0.08, 7)  # upper lip
    blob(0.0, 0.56, 0.3, 0.08, 9)  # lower lip
    blob(0.0, 0.51, 0.26, 0.03, 8)  # inner mouth
    return label


def _face_image(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    colours = _HELEN_COLOURS + rng.uniform(-25, 25, size=(1, 3)).astype(np.float32)
    colours[0] = rng.uniform(40, 220, size=3)  # background
    colours[10] = rng.uniform(20, 120, size=3)  # hair
    image = cv2.GaussianBlur(colours[label], (0, 0), sigmaX=max(0.6, label.shape[0] / 256))
    return _noisy(image, rng, 8)


def _check_destination(
    what: str, folders: Iterable[Path], files: Iterable[Path] = (), overwrite: bool = False
) -> None:
    """Refuse to write where a user's data may be: a folder that holds something, or a file.

    Called before anything is created, so a refusal leaves the disk as it was.

    Args:
        what: the generator's name, for the message.
        folders: the folders it writes files into.
        files: single files it writes (an RLE CSV).
        overwrite: allow writing into used folders (files of the same name are replaced,
            others are left as they are).

    Raises:
        DataError: a folder is a file, or (without ``overwrite``) already holds something, or
            one of ``files`` exists.
    """
    folders, files = list(folders), list(files)
    for folder in folders:
        nearest = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        if nearest.exists() and not nearest.is_dir():
            raise DataError(
                f"{what}: {str(nearest)!r} is a file, not a folder; choose another destination."
            )
    if overwrite:
        return
    fix = (
        "choose an empty folder, or pass overwrite=True (--overwrite on the command line) to "
        "write over files of the same name"
    )
    for folder in folders:
        held = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        if held:
            raise DataError(
                f"{what}: {str(folder)!r} already holds files ({name_some(held, 3)}); {fix}."
            )
    for file in files:
        if file.exists():
            raise DataError(f"{what}: {str(file)!r} already exists; {fix}.")


def check_helen_destination(
    dst: str | Path, layout: str = "split", split: str = "train", overwrite: bool = False
) -> list[Path]:
    """The folders :func:`synth_helen` writes ``split`` into; refused as it would refuse them.

    Raises:
        DataError: one of them is a file or (without ``overwrite``) already holds files.
    """
    folder = Path(dst) / split
    targets = [folder / "images", folder / "labels"] if layout == "split" else [folder]
    _check_destination("synth_helen", targets, overwrite=overwrite)
    return targets


def synth_helen(
    dst: str | Path,
    n: int = 20,
    seed: int = 0,
    size: int = 256,
    layout: str = "split",
    split: str = "train",
    overwrite: bool = False,
) -> Path:
    """Write ``n`` synthetic faces carrying all 11 Helen classes, in a Helen layout.

    Args:
        dst: data set root (created); files go to ``dst/<split>/``.
        n: number of faces.
        seed: random seed; the same seed gives the same files.
        size: side of the square images.
        layout: ``"split"`` (``images/image_N.jpg`` + ``labels/label_N.png``) or
            ``"official"`` (``<name>_image.jpg`` + ``<name>_label.png`` + ``<name>_viz.jpg``).
        split: split folder name.
        overwrite: write even into folders that already hold files, replacing files of the
            same name (other files are left as they are).

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: a folder it would write into already holds files (real Helen uses the same
            names) and ``overwrite`` is False.
    """
    if layout not in ("split", "official"):
        raise ValueError(f"layout must be 'split' or 'official', got {layout!r}.")
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}.")
    folder = Path(dst) / split
    targets = check_helen_destination(dst, layout, split, overwrite)
    for target in targets:
        target.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        label = _face_label(size, rng)
        image = _face_image(label, rng)
        if layout == "split":
            write_image(folder / "images" / f"image_{i + 1}.jpg", image)
            write_mask(folder / "labels" / f"label_{i + 1}.png", label)
        else:
            name = f"synth{i + 1:04d}_1"
            write_image(folder / f"{name}_image.jpg", image)
            write_mask(folder / f"{name}_label.png", label)
            viz = (0.5 * image + 0.5 * _HELEN_COLOURS[label]).astype(np.uint8)
            write_image(folder / f"{name}_viz.jpg", viz)
    return Path(dst)


def _car_mask(width: int, height: int, view: float, rng: np.random.Generator) -> np.ndarray:
    """Side-ish silhouette of a car: body, cabin and wheels, its length shrinking with the view."""
    mask = np.zeros((height, width), np.uint8)
    length = width * rng.uniform(0.55, 0.7) * (0.45 + 0.55 * abs(np.sin(view)))
    cx, ground = width * rng.uniform(0.47, 0.53), height * rng.uniform(0.74, 0.8)
    body_h, cabin_h = height * rng.uniform(0.16, 0.2), height * rng.uniform(0.13, 0.17)
    x0, x1 = cx - length / 2, cx + length / 2
    top = ground - body_h
    body = [(x0, ground - 0.1 * body_h), (x0 + 0.04 * length, top), (x1 - 0.03 * length, top),
            (x1, ground - 0.15 * body_h), (x1, ground), (x0, ground)]  # fmt: skip
    cabin = [(x0 + 0.22 * length, top + 1), (x0 + 0.34 * length, top - cabin_h),
             (x1 - 0.3 * length, top - cabin_h), (x1 - 0.12 * length, top + 1)]  # fmt: skip
    cv2.fillPoly(mask, [np.round(body).astype(np.int32)], 1, lineType=cv2.LINE_AA)
    cv2.fillPoly(mask, [np.round(cabin).astype(np.int32)], 1, lineType=cv2.LINE_AA)
    radius = round(body_h * 0.55)
    for wx in (x0 + 0.2 * length, x1 - 0.2 * length):
        cv2.circle(mask, (round(wx), round(ground)), radius, 1, thickness=-1)
    return (mask > 0).astype(np.uint8)


def _studio(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Light grey studio backdrop: a vertical gradient and a darker floor."""
    top, floor = rng.uniform(200, 235), rng.uniform(150, 185)
    horizon = height * rng.uniform(0.55, 0.65)
    ys = np.arange(height, dtype=np.float32)[:, None]
    grey = np.where(ys < horizon, top - 20 * ys / height, floor + 25 * (ys - horizon) / height)
    tint = rng.uniform(-6, 6, size=3).astype(np.float32)
    return np.broadcast_to(grey[:, :, None] + tint, (height, width, 3)).astype(np.float32)


def _car_image(mask: np.ndarray, rng: np.random.Generator, colour: np.ndarray) -> np.ndarray:
    height, width = mask.shape
    image = _studio(width, height, rng)
    ys, xs = np.nonzero(mask)
    # soft floor shadow, drawn and blurred at 1/8 size (a full-size blur costs 75 ms)
    small = np.zeros((height // 8 + 1, width // 8 + 1), np.float32)
    centre = (int(xs.mean()) // 8, int(ys.max()) // 8)
    axes = (max(1, int(np.ptp(xs) * 0.55) // 8), max(1, height // 320))
    cv2.ellipse(small, centre, axes, 0, 0, 360, 1.0, -1)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=max(0.5, height / 800))
    shadow = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    image *= 1.0 - 0.35 * shadow[..., None]
    shade = np.linspace(1.15, 0.75, height, dtype=np.float32)[:, None, None]
    car = colour[None, None, :] * shade
    dark = (ys.min() + (ys.max() - ys.min()) * 0.8) < np.arange(height)[:, None]  # wheels/sills
    car = np.where(dark[..., None], car * 0.35, car)
    image = np.where(mask[..., None] > 0, car, image)
    return _noisy(image, rng, 4)


def synth_carvana(
    dst: str | Path,
    cars: int = 2,
    views: int = 16,
    seed: int = 0,
    size: tuple[int, int] = (1918, 1280),
    mask_format: str = "gif",
    split: str = "train",
    overwrite: bool = False,
) -> Path:
    """Write synthetic cars in Kaggle's Carvana layout: JPEG photos and palette GIF masks.

    Files: ``dst/<split>/synth0000_01.jpg`` ... and ``dst/<split>_masks/synth0000_01_mask.gif``
    (palette GIF, pixel values 0/1, like Kaggle's), one car id per car, views 01..``views``.

    Args:
        dst: data set root (created).
        cars: number of car ids.
        views: views per car (Kaggle has 16).
        seed: random seed; the same seed gives the same files.
        size: ``(width, height)`` of every image; Kaggle's is 1918x1280.
        mask_format: ``"gif"`` (Kaggle), ``"png"`` (0/255 PNG) or ``"csv"`` (``<split>_masks.csv``
            with RLE, no mask files).
        split: image folder name.
        overwrite: write even into folders that already hold files (or over an existing
            ``<split>_masks.csv``), replacing files of the same name (others are left as they are).

    Returns:
        ``dst`` as a Path.

    Raises:
        DataError: ``dst/<split>/`` or the mask folder already holds files, or the RLE CSV
            exists, and ``overwrite`` is False.
    """
    if mask_format not in ("gif", "png", "csv"):
        raise ValueError(f"mask_format must be gif, png or csv, got {mask_format!r}.")
    width, height = (int(v) for v in size)
    if cars < 1 or views < 1 or width < 32 or height < 32:
        raise ValueError(f"need cars, views >= 1 and a size of at least 32x32, got {size}.")
    image_dir, mask_dir = Path(dst) / split, Path(dst) / f"{split}_masks"
    csv_path = Path(dst) / f"{split}_masks.csv"
    folders = [image_dir] if mask_format == "csv" else [image_dir, mask_dir]
    files = [csv_path] if mask_format == "csv" else []
    _check_destination("synth_carvana", folders, files, overwrite)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    rles = []
    for car in range(cars):
        colour = np.random.default_rng([seed, car]).uniform(20, 230, size=3).astype(np.float32)
        for v in range(1, views + 1):
            rng = np.random.default_rng([seed, car, v])
            sample_id = f"synth{car:04d}_{v:02d}"
            mask = _car_mask(width, height, 2 * np.pi * (v - 1) / views, rng)
            write_image(image_dir / f"{sample_id}.jpg", _car_image(mask, rng, colour), quality=90)
            if mask_format == "gif":
                _write_palette_gif(mask_dir / f"{sample_id}_mask.gif", mask)
            elif mask_format == "png":
                write_mask(mask_dir / f"{sample_id}_mask.png", mask * 255)
            else:
                rles.append((f"{sample_id}.jpg", rle_encode(mask)))
    if mask_format == "csv":
        write_rle_csv(csv_path, rles)
    return Path(dst)


def _write_palette_gif(path: Path, mask: np.ndarray) -> None:
    """A palette GIF holding indices 0/1 with a black/white palette, as Kaggle's masks do."""
    height, width = mask.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(mask, np.uint8).tobytes())
    image.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    image.save(buffer, format="GIF", optimize=False)  # optimize=False keeps the indices as written
    write_bytes_atomic(path, buffer.getvalue())
