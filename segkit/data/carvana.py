"""Carvana car masking (binary): Kaggle and prepared layouts, and the split by car.

- Kaggle layout: ``<root>/train/<id>_<NN>.jpg`` with ``<root>/train_masks/<id>_<NN>_mask.gif``
  (palette GIF, 0/1; 0/255 and PNG masks are accepted too), or, when there is no mask folder,
  ``<root>/train_masks.csv`` holding Kaggle RLE (``img,rle_mask``).
- Prepared layout (written by :func:`prepare_carvana`):
  ``<root>/images/<id>.png`` + ``<root>/masks/<id>.png`` (0/1) + ``<root>/index.csv``; with
  ``soft=True`` also ``<root>/soft_masks/<id>.png`` (area coverage, 0..255 for 0..1), listed in
  the index's ``soft_mask`` column, for training on soft targets (``data.soft_targets``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segkit.data.base import Sample, SegmentationDataset, pair_files, select_ids, unique_keys
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    DataNotFoundError,
    decode_strategy,
    image_size,
    list_files,
    map_255_to_1,
    name_some,
    read_mask,
    read_resized,
    refuse_overlap,
    require_dir,
    write_bytes_atomic,
    write_image,
    write_mask,
)
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.data.rle import read_rle_csv, rle_decode
from segkit.data.soft import decode_coverage, encode_coverage, shrink_coverage, shrink_labels
from segkit.errors import DataError

CARVANA_CLASSES = ["background", "car"]
INDEX_COLUMNS = ["id", "car_id", "view", "image", "mask", "width", "height", "split"]
#: the index column naming each pair's coverage mask; present only when some pair has one
SOFT_COLUMN = "soft_mask"

CARVANA_LAYOUTS = {
    "kaggle": "<root>/<split>/<id>_<NN>.jpg + <root>/<split>_masks/<id>_<NN>_mask.gif "
    "(or <root>/<split>_masks.csv)",
    "prepared": "<root>/index.csv + <root>/images/<id>.png + <root>/masks/<id>.png",
}


def parse_carvana_id(sample_id: str) -> tuple[str, int]:
    """``"0cdf5b5d0ce1_03"`` -> ``("0cdf5b5d0ce1", 3)``: car id and view number.

    Raises:
        DataError: the id does not end in ``_<number>``.
    """
    car, _, view = sample_id.rpartition("_")
    if not car or not view.isdigit():
        raise DataError(
            f"Carvana id {sample_id!r} is not of the form <car id>_<view number> "
            "(e.g. 0cdf5b5d0ce1_03); rename the file or use the folder data set."
        )
    return car, int(view)


def split_by_car(
    ids: Sequence[str], val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Split sample ids into train/validation so that all views of a car fall on one side.

    A random split by image would leak near-duplicate views of one car into validation.
    Uses scikit-learn's GroupShuffleSplit (``val_fraction`` is the fraction of cars).

    Returns:
        ``(train_ids, val_ids)``, each in the order of ``ids``; the same for the same seed.

    Raises:
        ValueError: ``val_fraction`` not in (0, 1), or fewer than two cars.
    """
    from segkit.data.meta import split_ids

    ids = list(ids)
    return split_ids(ids, val_fraction, seed, [parse_carvana_id(i)[0] for i in ids], "car")


def _strip_mask_suffix(path: Path) -> str:
    return path.stem[: -len("_mask")] if path.stem.endswith("_mask") else path.stem


def find_kaggle_samples(
    root: str | Path, split: str = "train"
) -> tuple[list[Sample], dict[str, str] | None]:
    """Pair ``root/split`` images with ``root/<split>_masks`` files or ``<split>_masks.csv``.

    Returns:
        ``(samples, rle)``: ``rle`` maps id -> RLE when masks come from the CSV (the samples'
        ``mask_path`` is then the CSV), else None.
    """
    root = Path(root)
    image_dir = require_dir(root / split, "Carvana image folder")
    images = unique_keys(list_files(image_dir, IMAGE_EXTENSIONS), lambda p: p.stem, image_dir)
    if not images:
        raise DataError(f"Carvana image folder {str(image_dir)!r} holds no .jpg/.png images.")
    mask_dir, csv_path = root / f"{split}_masks", root / f"{split}_masks.csv"
    if mask_dir.is_dir() and list_files(mask_dir, MASK_EXTENSIONS):
        masks = unique_keys(list_files(mask_dir, MASK_EXTENSIONS), _strip_mask_suffix, mask_dir)
        return pair_files(images, masks, root, mask_word="mask"), None
    if csv_path.is_file():
        rle = {Path(img).stem: code for img, code in read_rle_csv(csv_path).items()}
        samples = pair_files(images, dict.fromkeys(rle, csv_path), root, mask_word="RLE row")
        return samples, rle
    raise DataNotFoundError(
        f"No masks for the Carvana split {split!r} in {str(root)!r}: looked for the folder "
        f"{str(mask_dir)!r} (<id>_mask.gif/.png) and the file {str(csv_path)!r} (img,rle_mask). "
        "Unpack train_masks.zip or train_masks.csv.zip there."
    )


def read_index(root: str | Path) -> pd.DataFrame:
    """The prepared layout's ``index.csv`` (ids kept as strings); DataError if unusable."""
    path = Path(root) / "index.csv"
    try:
        index = pd.read_csv(path, dtype={"id": str, "car_id": str, "split": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(
            f"Cannot read {str(path)!r} ({exc}). Re-run prepare_carvana to rewrite it."
        ) from None
    missing = [c for c in INDEX_COLUMNS[:5] if c not in index.columns]
    if missing:
        raise DataError(
            f"{str(path)!r} lacks the column(s) {missing}; it was not written by prepare_carvana. "
            "Re-run prepare_carvana (with overwrite=True) to rewrite it."
        )
    return index


def _prepared_samples(root: Path, split: str | None) -> tuple[list[Sample], dict[str, Path]]:
    """The prepared pairs of ``split``, and the coverage masks the index lists (id -> file)."""
    index = read_index(root)
    if split and "split" in index.columns:
        held = sorted(set(index["split"].dropna()))
        if split not in held:
            raise DataError(
                f"The prepared Carvana folder {str(root)!r} holds the split(s) {held}, not "
                f"{split!r}. Prepare split {split!r} into its own folder "
                f"(prepare_carvana(src, dst, split={split!r})) and point root there."
            )
        index = index[index["split"] == split]
    samples = [
        Sample(row.id, root / row.image, root / row.mask) for row in index.itertuples(index=False)
    ]
    if not samples:
        raise DataError(
            f"{str(root / 'index.csv')!r} lists no samples. Re-run prepare_carvana on the source."
        )
    lost = [s.image_path.name for s in samples if not s.image_path.is_file()]
    lost += [s.mask_path.name for s in samples if not s.mask_path.is_file()]
    if lost:
        raise DataNotFoundError(
            f"{len(lost)} file(s) listed in {str(root / 'index.csv')!r} are missing: "
            f"{name_some(lost)}. Re-run prepare_carvana on the source to recreate them."
        )
    listed = index.dropna(subset=[SOFT_COLUMN]) if SOFT_COLUMN in index.columns else index[:0]
    soft = {str(row.id): root / str(row.soft_mask) for row in listed.itertuples(index=False)}
    return samples, soft


def _prepare(
    src: str | Path,
    dst: str | Path,
    size: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    threshold: int | None = None,
    soft: bool = False,
) -> tuple[str, list[str]]:
    """``segkit prepare carvana``: resized PNG pairs; the message and notes to show."""
    size = size or 128
    index = prepare_carvana(
        src, dst, size=size, workers=workers, overwrite=overwrite, threshold=threshold, soft=soft
    )
    done, kept = index.attrs["written"], index.attrs["skipped"]
    parts = [f"prepared {done} Carvana pair{'s' * (done != 1)}"] * bool(done or not kept)
    parts += [f"{kept} already prepared (--overwrite redoes them)"] * bool(kept)
    with_soft = " with soft (area coverage) masks" if soft else ""
    message = f"{', '.join(parts)} at {size}x{size}{with_soft} in {dst}"
    return message, list(index.attrs.get("notes", []))


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth carvana``: ``n`` synthetic cars, 16 views each; the message to show."""
    from segkit.data.synth import synth_carvana

    synth_carvana(dst, cars=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} synthetic cars x 16 views in the Kaggle layout to {dst}"


@register_dataset("carvana")
class CarvanaDataset(SegmentationDataset):
    """Carvana car masks in the Kaggle or the prepared layout (detected automatically).

    Masks are binary: 255 is read as 1; any other value besides 0/1 is a DataError. With
    :meth:`use_soft_targets` masks are float coverage in 0..1: a prepared folder's
    ``soft_masks/`` (written by ``prepare_carvana(..., soft=True)``), or the full-size 0/1
    masks of the Kaggle layout, which training's resize then averages by area.

    Args:
        root: Kaggle folder (holding ``train/``, ``train_masks/``) or a prepared folder.
        split: ``train`` (Kaggle: the folder name; prepared: the split it was prepared from).
        transform: albumentations pipeline, or None.
        ids: keep only these sample ids (``<car id>_<NN>``, in this order).
    """

    meta = DatasetMeta(
        classes=tuple(CARVANA_CLASSES),
        flip_pairs=(),
        source="unpack train.zip and train_masks.zip of Kaggle's Carvana Image Masking "
        "Challenge there (train/*.jpg, train_masks/*_mask.gif)",
        split_group=lambda sample_id: parse_carvana_id(sample_id)[0],  # all views of a car
        prepare=_prepare,
        training_folder=lambda root, dst, size, **options: ensure_prepared(
            root, dst, size, **options
        ),
        synth=_synth,
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        root = require_dir(root, "Carvana root")
        self.split = split
        self._rle: dict[str, str] | None = None
        self._soft_files: dict[str, Path] = {}
        if (root / "index.csv").is_file():
            self.layout = "prepared"
            samples, self._soft_files = _prepared_samples(root, split)
        elif split and (root / split).is_dir():
            self.layout = "kaggle"
            samples, self._rle = find_kaggle_samples(root, split)
        else:
            found = name_some(sorted(p.name for p in root.iterdir()))
            looked = "; ".join(f"{k}: {v}" for k, v in CARVANA_LAYOUTS.items())
            raise DataError(
                f"No Carvana layout recognised in {str(root)!r} for split {split!r} (it holds: "
                f"{found}). Looked for {looked}. Point root at the unpacked Kaggle data or at a "
                "folder written by prepare_carvana."
            )
        super().__init__(select_ids(samples, ids, root), transform, root=root)

    def use_soft_targets(self) -> None:
        """Read masks as float coverage in 0..1; a prepared folder's ``soft_masks/`` then.

        Raises:
            DataError: the prepared folder holds no coverage mask for some sample (it was
                prepared without ``--soft``).
        """
        super().use_soft_targets()
        if self.layout != "prepared":
            return  # full-size 0/1 masks: the resize to data.image_size averages them by area
        lacking = [s.id for s in self.samples if s.id not in self._soft_files]
        if lacking:
            raise DataError(
                f"The prepared Carvana folder {str(self.root)!r} holds no soft (coverage) mask "
                f"for {len(lacking)} sample(s), e.g. {name_some(lacking, 3)}: it was prepared "
                "without --soft. Run `segkit prepare carvana <Kaggle folder> "
                f"{self.root} --soft` (pairs already there are kept), or point data.root at "
                "the Kaggle folder with data.prepare_size set."
            )
        lost = [
            self._soft_files[s.id].name
            for s in self.samples
            if not self._soft_files[s.id].is_file()
        ]
        if lost:
            raise DataNotFoundError(
                f"{len(lost)} soft mask(s) listed in {str(self.root / 'index.csv')!r} are missing: "
                f"{name_some(lost)}. Re-run prepare_carvana with soft=True (--soft) to recreate them."
            )
        self.samples = [Sample(s.id, s.image_path, self._soft_files[s.id]) for s in self.samples]

    def check_soft(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """A prepared coverage mask (0..255) as float 0..1; Kaggle 0/1 masks as float."""
        if self.layout != "prepared":
            return super().check_soft(image, mask, sample)
        self.check_size(image, mask, sample)
        return decode_coverage(mask)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """Mask from its file, or decoded from ``<split>_masks.csv`` at the image's size."""
        if self._rle is None:
            return super().load_mask(sample, shape)
        try:
            return rle_decode(self._rle[sample.id], shape)
        except ValueError as exc:
            raise DataError(f"RLE of {sample.id!r} in {str(sample.mask_path)!r}: {exc}") from None


# --- preparation: GIF -> PNG, resize to a square, with a thread pool -------------------------


def load_resized(path: str | Path, size: int, decode: str = "reduced") -> np.ndarray:
    """Read an image and resize it to ``size x size`` (INTER_AREA), as HxWx3 uint8 RGB."""
    return read_resized(path, size, decode)[0]


def _is_prepared(path: Path, size: int) -> bool:
    """Whether ``path`` exists at ``size x size`` (header only): a run at another size redoes it."""
    if not path.is_file():
        return False
    try:
        return image_size(path) == (size, size)
    except DataError:  # unreadable: prepare it again
        return False


@dataclass
class _Preparer:
    """Prepares one sample: the callable that ``ThreadPoolExecutor.map`` runs per image."""

    dst: Path
    size: int
    decode: str
    overwrite: bool
    split: str
    rle: dict[str, str] | None
    threshold: int | None = None
    soft: bool = False

    def __call__(self, sample: Sample) -> tuple[dict[str, Any], bool]:
        car_id, view = parse_carvana_id(sample.id)
        image_rel, mask_rel = f"images/{sample.id}.png", f"masks/{sample.id}.png"
        soft_rel = f"soft_masks/{sample.id}.png"
        width, height = image_size(sample.image_path)
        row = {"id": sample.id, "car_id": car_id, "view": view, "image": image_rel,
               "mask": mask_rel, "width": width, "height": height, "split": self.split}  # fmt: skip
        done = _is_prepared(self.dst / image_rel, self.size) and _is_prepared(
            self.dst / mask_rel, self.size
        )
        has_soft = _is_prepared(self.dst / soft_rel, self.size)
        if done and not self.overwrite and (has_soft or not self.soft):
            if has_soft:  # a pair kept as it is keeps its coverage mask (from the same source)
                row[SOFT_COLUMN] = soft_rel
            return row, False
        if self.rle is not None:
            mask = rle_decode(self.rle[sample.id], (height, width))
        else:
            mask = read_mask(sample.mask_path)
        if mask.shape != (height, width):
            raise DataError(
                f"Image {str(sample.image_path)!r} is {width}x{height} but its mask "
                f"{str(sample.mask_path)!r} is {mask.shape[1]}x{mask.shape[0]}. Re-export the mask."
            )
        if self.threshold is not None and mask.size and mask.max() > 1:
            mask = (mask >= self.threshold).astype(np.uint8)  # soft (anti-aliased) edges
        mask = map_255_to_1(mask)
        if mask.size and mask.max() > 1:
            bad = np.unique(mask[mask > 1]).tolist()
            raise DataError(
                f"Mask {str(sample.mask_path)!r} is not binary: it holds {name_some(bad, 8)} "
                "besides 0 and 1 (255 counts as 1). Save it with 0 = background, 1 or 255 = car, "
                "or, for soft (anti-aliased) edges, pass threshold=128 (--threshold 128) to read "
                "values >= 128 as car."
            )
        # by pixel centres, as the image is resized (INTER_NEAREST would shift it by 7 px)
        write_image(self.dst / image_rel, load_resized(sample.image_path, self.size, self.decode))
        write_mask(self.dst / mask_rel, shrink_labels(mask, self.size))
        if self.soft:
            write_mask(self.dst / soft_rel, encode_coverage(shrink_coverage(mask, self.size)))
            row[SOFT_COLUMN] = soft_rel
        return row, True


def prepared_side(root: str | Path) -> int | None:
    """The side of the square images in a folder written by :func:`prepare_carvana`.

    Returns None when ``root`` holds no ``index.csv`` (it is not a prepared folder), or when
    the first listed image is missing or unreadable (reading the folder then says why).
    """
    root = Path(root)
    if not (root / "index.csv").is_file():
        return None
    index = read_index(root)
    if index.empty:
        return None
    try:
        width, height = image_size(root / str(index["image"].iloc[0]))
    except (DataError, OSError):
        return None
    return width if width == height else None


def ensure_prepared(
    root: str | Path, dst: str | Path, size: int, workers: int | None = None, soft: bool = False
) -> Path:
    """The folder to train on when a config asks for Carvana prepared at ``size``.

    A folder already written by :func:`prepare_carvana` at ``size`` is used as is; the Kaggle
    layout is prepared into ``dst`` (pairs already there are kept), with coverage masks when
    ``soft`` (``data.soft_targets``).

    Raises:
        DataError: ``root`` was prepared at another size.
    """
    side = prepared_side(root)
    if side is None and not (Path(root) / "index.csv").is_file():
        prepare_carvana(root, dst, size=size, workers=workers, soft=soft)
        return Path(dst)
    if side is not None and side != size:
        raise DataError(
            f"data.root {str(root)!r} was prepared at {side}x{side}, but data.prepare_size is "
            f"{size}: set data.prepare_size={side} (or null) to train on it as it is, or point "
            "data.root at the Kaggle folder (train/, train_masks/) to prepare it at "
            f"{size}x{size}."
        )
    return Path(root)


def prepare_carvana(
    src: str | Path,
    dst: str | Path,
    size: int = 128,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    decode: str = "reduced",
    split: str = "train",
    threshold: int | None = None,
    soft: bool = False,
) -> pd.DataFrame:
    """Resize the Kaggle Carvana data to ``size x size`` PNGs (masks 0/1) with a thread pool.

    Writes ``dst/images/<id>.png``, ``dst/masks/<id>.png`` and ``dst/index.csv`` (columns id,
    car_id, view, image, mask, width, height of the original, split); with ``soft`` also
    ``dst/soft_masks/<id>.png``, the fraction of each small pixel that is car (area
    averaging of the full-size mask, 0..255 for 0..1; :mod:`segkit.data.soft`), listed in a
    ``soft_mask`` column, which is present only when some pair has one. Streams over the files
    (``pool.map`` over paths); every file is written to a temporary name and renamed, so an
    interrupted run resumes where it stopped. The source is only read.

    Args:
        src: Kaggle folder holding ``<split>/`` and ``<split>_masks/`` (or ``<split>_masks.csv``).
        dst: output folder (created).
        size: side of the square output.
        workers: threads; None = ``os.cpu_count()``.
        overwrite: redo pairs that are already prepared (default: skip them).
        decode: "reduced" (libjpeg DCT scaling, see :func:`decode_strategy`) or "full".
        split: which split folder of ``src`` to prepare.
        threshold: masks holding values above 1 other than 255 (soft, anti-aliased edges) are
            read as car where ``value >= threshold``; None refuses them.
        soft: also write the coverage masks that ``data.soft_targets`` trains on; pairs kept
            as they are keep theirs either way.

    Returns:
        The index as a DataFrame; ``attrs["written"]`` / ``attrs["skipped"]`` count the pairs
        and ``attrs["notes"]``, when present, what a user may want to know (sources enlarged).

    Raises:
        DataError: bad source layout, unpaired files, unreadable or non-binary masks, size
            mismatches, or ``dst`` being ``src``, inside it or holding it.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    decode_strategy(decode, 1, 1, 1)  # validates the mode before any work
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    src, dst = require_dir(src, "Carvana source folder"), Path(dst)
    samples, rle = _samples_to_prepare(src, dst, split)
    if threshold is not None and not 1 <= threshold <= 255:
        raise ValueError(f"threshold must be between 1 and 255, got {threshold!r}.")
    folders = [dst, dst / "images", dst / "masks"] + [dst / "soft_masks"] * bool(soft)
    job = _Preparer(dst, size, decode, overwrite, split, rle, threshold, bool(soft))
    results = _run_pool(job, samples, folders, workers)
    return _write_index(dst, results, size)


def _samples_to_prepare(
    src: Path, dst: Path, split: str
) -> tuple[list[Sample], dict[str, str] | None]:
    """The Kaggle pairs of ``split`` and their RLE masks, once ``dst`` is known to be a
    folder of its own (not ``src``, not holding another split) and every id is well named."""
    refuse_overlap(src, dst, "prepare_carvana")
    samples, rle = find_kaggle_samples(src, split)
    if (dst / "index.csv").is_file():
        held = set(read_index(dst).get("split", pd.Series(dtype=str)).dropna()) - {split}
        if held:
            raise DataError(
                f"{str(dst)!r} already holds the prepared split(s) {sorted(held)}; prepare split "
                f"{split!r} into its own folder."
            )
    for sample in samples:
        parse_carvana_id(sample.id)  # reject badly named files before writing anything
    return samples, rle


def _run_pool(
    job: _Preparer, samples: list[Sample], folders: list[Path], workers: int
) -> list[tuple[dict[str, Any], bool]]:
    """``job`` over ``samples`` in a thread pool, into ``folders`` (created first; those this
    call created are removed again if it fails and they are still empty)."""
    created = [f for f in folders if not f.exists()]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, samples))
    except BaseException:
        for folder in reversed(created):  # a failed first run leaves no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _write_index(dst: Path, results: list[tuple[dict[str, Any], bool]], size: int) -> pd.DataFrame:
    """``dst/index.csv`` from the pool's rows; the DataFrame with its counts and notes."""
    rows = [row for row, _ in results]
    columns = INDEX_COLUMNS + [SOFT_COLUMN] * any(SOFT_COLUMN in row for row in rows)
    index = pd.DataFrame(rows, columns=columns)
    write_bytes_atomic(dst / "index.csv", index.to_csv(index=False).encode())
    index.attrs["written"] = sum(wrote for _, wrote in results)
    index.attrs["skipped"] = len(results) - index.attrs["written"]
    notes = _upscale_notes(index, size)
    if notes:
        index.attrs["notes"] = notes
    return index


def _upscale_notes(index: pd.DataFrame, size: int) -> list[str]:
    """A note when sources are smaller than ``size`` (they were enlarged, adding no detail)."""
    small = index[(index["width"] < size) | (index["height"] < size)]
    if small.empty:
        return []
    row = small.iloc[0]
    return [
        f"{len(small)} source image(s) are smaller than {size}x{size} (e.g. {row['id']}: "
        f"{row['width']}x{row['height']}) and were enlarged to it; a smaller size keeps "
        "their detail without inventing any."
    ]
