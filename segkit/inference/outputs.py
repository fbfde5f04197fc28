"""Outputs of prediction: what is written per image, refused before anything is written, and
kept in input order.

Per image: ``<stem>.png`` (class ids at the image's own size, or the data set's own label
values where its metadata declares ``output_ids``; a multi-label model writes
``<stem>_<class>.png`` instead, 0/255 per class), optionally
``<stem>_overlay.png`` (PNG: JPEG's halved colour resolution smeared thin classes),
``<stem>_color.png``, a row ``img,rle_mask`` of a Kaggle CSV,
which goes to a temporary name and is renamed into place once every row is in, and polygons
(:mod:`segkit.inference.polygons`): a labelme ``<stem>.json`` beside ``labels.txt``, or the
image's objects in one COCO ``annotations.json``, written (like the CSV) once every image is in.
"""

from __future__ import annotations

import csv
import os
import signal
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit import viz
from segkit.data.io import name_some, read_image, write_image, write_mask
from segkit.data.resize import crop_padding
from segkit.errors import DataError, option
from segkit.inference.options import PredictOptions
from segkit.inference.polygons import CocoCollector, PolygonWriter
from segkit.inference.probs import probs_to_labels, probs_to_masks


def output_names(
    stem: str,
    save_masks: bool = True,
    overlay: bool = False,
    color: bool = False,
    classes: Sequence[str] | None = None,
    *,
    polygons: PolygonWriter | None = None,
) -> list[str]:
    """The files prediction writes for an input named ``<stem>.*`` (``classes``: a
    multi-label model's, one mask ``<stem>_<class>.png`` each; ``polygons``: its files)."""
    masks = [f"{stem}.png"] if classes is None else [f"{stem}_{c}.png" for c in classes]
    names = masks * save_masks + [f"{stem}_overlay.png"] * overlay
    polygon_files = polygons.image_files(stem) if polygons is not None else []
    return names + [f"{stem}_color.png"] * color + polygon_files


def check_outputs(
    paths: list[Path],
    out_dir: Path,
    overlay: bool,
    save_masks: bool = True,
    rle_csv: str | Path | None = None,
    overwrite: bool = False,
    color: bool = False,
    classes: Sequence[str] | None = None,
    *,
    polygons: PolygonWriter | None = None,
) -> None:
    """Refuse what prediction must not write, before anything is written.

    Duplicate stems (outputs would collide) and outputs that would overwrite inputs are always
    refused; outputs (label PNGs, overlays, the RLE CSV, polygon files) that exist already are
    refused unless ``overwrite``: segkit does not replace a file it did not write in this run.

    Raises:
        DataError: names the file and the way out.
    """
    inputs = {p.resolve() for p in paths}
    seen: dict[str, Path] = {}
    targets = []
    for path in paths:
        if path.stem in seen:
            raise DataError(
                f"Inputs {str(seen[path.stem])!r} and {str(path)!r} share the name {path.stem!r}, "
                f"so both would be written to {path.stem}.png. Predict them into separate folders."
            )
        seen[path.stem] = path
        for name in output_names(path.stem, True, overlay, color, classes, polygons=polygons):
            if (out_dir / name).resolve() in inputs:
                raise DataError(
                    f"Writing {str(out_dir / name)!r} would overwrite an input image. "
                    "Choose another output folder."
                )
        names = output_names(path.stem, save_masks, overlay, color, classes, polygons=polygons)
        targets += [out_dir / name for name in names]
    targets += [out_dir / name for name in (polygons.run_files() if polygons else [])]
    if overwrite:
        return
    present = set(os.listdir(out_dir)) if out_dir.is_dir() else set()
    existing = [str(t) for t in targets if t.name in present]
    if rle_csv is not None and Path(rle_csv).exists():
        existing.insert(0, str(rle_csv))
    if existing:
        more = f" ({len(existing)} files: {name_some(existing, 3)})" if len(existing) > 1 else ""
        raise DataError(
            f"{existing[0]!r} already exists and prediction would replace it{more}. Pass "
            f"{option('overwrite')} to replace such files, or choose another output folder."
        )


class Outputs:
    """Finished images in input order (a bounded queue of futures) and the RLE CSV rows.

    The CSV goes to a temporary name and is renamed into place once every row is in.
    """

    def __init__(
        self,
        rle_csv: str | Path | None,
        out_dir: Path,
        save_masks: bool,
        classes: Sequence[str] | None = None,
        *,
        coco: CocoCollector | None = None,
    ) -> None:
        self.classes = classes  # a multi-label model's: one mask file per class
        self.coco = coco  # gathers the COCO annotations, written by close()
        self.pending: deque[tuple[Path, Future]] = deque()
        self.outputs: list[str] = []
        self.done = 0
        self.out_dir, self.save_masks, self.csv_path = out_dir, save_masks, rle_csv
        self._file = self._writer = None
        if rle_csv is not None:
            self._tmp = Path(rle_csv).with_name(f".{Path(rle_csv).name}.tmp")
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self._tmp, "w", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.writer(self._file)
            self._writer.writerow(["img", "rle_mask"])

    def drain(self, keep: int = 0) -> None:
        """Wait for the oldest images until at most ``keep`` are in flight."""
        while len(self.pending) > keep:
            path, future = self.pending[0]
            rle, size, objects = future.result()  # an interrupt leaves it pending: counted
            self.pending.popleft()
            if self.coco is not None:
                self.coco.add(path, size, objects)
            if self.save_masks:
                names = output_names(path.stem, classes=self.classes)
                self.outputs += [str(self.out_dir / name) for name in names]
            if self._writer is not None:
                self._writer.writerow([path.name, rle])
            self.done += 1

    def stopped_message(self, total: int, signum: int) -> str:
        """How far a run stopped by signal ``signum`` got, and what it kept."""
        finished = self.done + sum(
            f.done() and not f.cancelled() and f.exception() is None for _, f in self.pending
        )
        kept = f"their outputs are in {str(self.out_dir)!r}"
        if self.csv_path is not None:
            kept += f"; {str(self.csv_path)!r} was not written (it needs every image)"
        if self.coco is not None:
            kept += f"; {str(self.coco.path)!r} was not written (it needs every image)"
        name = signal.Signals(signum).name
        return f"stopped by {name} after {finished} of {total} images; {kept}"

    def close(self, complete: bool) -> None:
        """Close the CSV; move it into place (and write the COCO JSON) only when every image
        got its row."""
        if self.coco is not None and complete:
            self.coco.write()
        if self._file is not None:
            self._file.close()
            if complete:
                os.replace(self._tmp, self.csv_path)
            else:
                self._tmp.unlink(missing_ok=True)


def encoding(spec: Any) -> np.ndarray | None:
    """Class id -> label value to write, from the ``output_ids`` training recorded, or None."""
    ids = (getattr(spec, "meta", None) or {}).get("output_ids")
    return np.asarray(ids, dtype=np.uint8) if ids else None


def background(spec: Any) -> int | None:
    """The class id overlays leave clear for this model: 0 where class 0 is background, None
    where it is a real class (Cityscapes' road), from the class names training recorded."""
    names = getattr(spec, "class_names", None)
    return viz.background_label(names, getattr(spec, "task", None) == "multilabel")


def palette(spec: Any) -> np.ndarray | None:
    """The class colours training recorded (``spec.meta["palette"]``), or None."""
    colors = (getattr(spec, "meta", None) or {}).get("palette")
    return np.asarray(colors, dtype=np.uint8).reshape(-1, 3) if colors else None


@dataclass(frozen=True)
class ImageWriter:
    """Turns one image's probabilities into its label map and writes what the options ask for.

    Attributes:
        out_dir: the output folder.
        options: the run's options (resize_back and the output kinds).
        recipe: what the outputs mean (:class:`~segkit.inference.recipe.Recipe`): label
            values (``classes``), the data set's colours (else a generated palette), a
            multi-label model's classes (one 0/255 mask ``<stem>_<class>.png`` each; overlays
            and colour maps draw the later class where classes overlap) and thresholds, the
            threshold, the size and ``data.resize`` images met the model at
            (``longest_side_pad``'s padding is cropped away before the probabilities are
            resized back), how images are read (bands: the overlay shows their first bands,
            :func:`segkit.viz.display_bands`), and ``encoding``: class id -> the value
            ``<stem>.png`` holds (the data set's ``output_ids``); colours, overlays and RLE
            use class ids; ``background``: the class overlays leave clear (None: none).
        rle_encode: turns a label map into an RLE string when a CSV is wanted.
        polygons: writes (labelme) or returns (COCO) the image's objects as polygons.
    """

    out_dir: Path
    options: PredictOptions
    recipe: Any
    rle_encode: Callable[[np.ndarray], str] | None = None
    polygons: PolygonWriter | None = None

    def _write_labels(self, path: Path, labels: np.ndarray) -> None:
        """``<stem>.png``: the class ids, or the data set's own values for them."""
        encoding = self.recipe.encoding
        own = labels if encoding is None else encoding[labels]
        write_mask(self.out_dir / f"{path.stem}.png", own)

    def __call__(self, probs: np.ndarray, path: Path, size: tuple[int, int]) -> tuple[Any, ...]:
        """Post-process one image (in a writer thread); returns its RLE (when one is wanted),
        its size and its COCO annotations (when wanted).

        ``probs`` are ``C x h x w`` float probabilities, or (sliding windows at the image's
        own size) its finished uint8 ``H x W`` label map (a multi-label model's ``C x H x W``
        0/1 masks).
        """
        opts, recipe = self.options, self.recipe
        finished = probs.dtype == np.uint8
        if finished and recipe.mask_names is None:
            labels = probs
            if opts.save_masks:
                self._write_labels(path, labels)
        elif recipe.mask_names is not None:
            masks = probs
            if not finished:
                probs = crop_padding(probs, size, recipe.size, recipe.resize)
                masks = probs_to_masks(probs, size, recipe.thresholds, opts.resize_back)
            if opts.save_masks:
                for name, mask in zip(recipe.mask_names, masks):
                    write_mask(self.out_dir / f"{path.stem}_{name}.png", mask * np.uint8(255))
            labels = viz.overlap_labels(masks).astype(np.uint8)
        else:
            probs = crop_padding(probs, size, recipe.size, recipe.resize)
            labels = probs_to_labels(probs, size, recipe.threshold, opts.resize_back)
            if opts.save_masks:
                self._write_labels(path, labels)
        objects = None
        if self.polygons is not None:
            objects = self.polygons(labels if recipe.mask_names is None else masks, path)
        colors = recipe.colors
        if colors is None or len(colors) <= int(labels.max()):
            colors = viz.palette(max(recipe.classes, int(labels.max()) + 1))
        if opts.color:
            write_image(self.out_dir / f"{path.stem}_color.png", viz.colorize(labels, colors))
        if opts.overlay:
            if recipe.reader is None:
                image = read_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            else:
                image = viz.display_bands(recipe.reader.read(path, fill=False))
            blended = viz.overlay(image, labels, colors=colors, background=recipe.background)
            write_image(self.out_dir / f"{path.stem}_overlay.png", blended)
        return (self.rle_encode(labels) if self.rle_encode else None), labels.shape, objects
