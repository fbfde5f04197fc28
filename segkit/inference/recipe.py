"""The recipe: how a trained model sees images and what its outputs mean, decided once.

A :class:`Recipe` is made once (:meth:`Recipe.make`) from what the model records (its spec:
training size, ``data.resize``, mean/std, how images were read, a crop-trained model's
windows, flip pairs, multi-label thresholds, output ids and palette) and the caller's
options (:class:`~segkit.inference.PredictOptions`: size, tile, overlap, blend, window
batch, TTA, flip pairs, thresholds, runtime and precision). The :class:`~segkit.inference.Predictor` runs it
(predict, and evaluate's scorer, which is a Predictor); export reads its size. Nothing
downstream picks any of these again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.data.bands import BandReader
from segkit.data.meta import DatasetMeta, check_thresholds
from segkit.data.resize import check_resize_mode
from segkit.errors import ConfigError, option
from segkit.inference.options import TTA, PredictOptions
from segkit.inference.outputs import background, encoding, palette
from segkit.inference.runtimes import resolve_runtime
from segkit.models.windows import Windows, check_tile, crop_record


@dataclass(frozen=True)
class Recipe:
    """How a trained model sees images and what its outputs mean (frozen, made once).

    Attributes:
        size: the square side images are resized to (``data.resize``'s meaning); None: as
            they are (always when run in windows).
        resize: how images meet ``size``: training's ``data.resize`` (older: ``squash``).
        mean: per-channel mean the input is normalised with (0..1 scale).
        std: per-channel standard deviation, likewise.
        reader: how training read its images (bands, NaN fill); None: 8-bit RGB.
        windows: how images are run in windows (``tile``, or a crop-trained model's crop
            size at its training scale); None: whole.
        tta: test-time augmentation (None: none).
        flip_pairs: class pairs that flip TTA swaps back.
        threshold: a one-channel model's foreground probability threshold.
        thresholds: a multi-label model's threshold per class; None for other models.
        mask_names: a multi-label model's classes, one mask each; None for other models.
        classes: label values written (2 for a binary model).
        colors: the data set's class colours (``spec.meta["palette"]``), or None.
        encoding: class id -> the value a label PNG holds (``output_ids``); None: class ids
            (also with ``ids=True`` and for multi-label models).
        background: the class id overlays leave clear: 0 where class 0 is background, None
            where it is a real class (:func:`segkit.viz.background_label`).

        runtime: what runs the model, ``auto`` resolved: "torch" or "onnxruntime"
            (:mod:`segkit.inference.runtimes`).
        precision: the precision it runs in, ``auto`` resolved for the device: "fp32",
            "bf16" (torch) or "int8" (onnxruntime).
    """

    size: int | None
    resize: str = "squash"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    reader: BandReader | None = None
    windows: Windows | None = None
    tta: TTA | None = None
    flip_pairs: tuple[tuple[int, int], ...] = ()
    threshold: float = 0.5
    thresholds: tuple[float, ...] | None = None
    mask_names: tuple[str, ...] | None = None
    classes: int = 2
    colors: np.ndarray | None = field(default=None, compare=False)
    encoding: np.ndarray | None = field(default=None, compare=False)
    background: int | None = 0
    runtime: str = "torch"
    precision: str = "fp32"

    @property
    def multilabel(self) -> bool:
        """Whether each class is its own 0/1 mask (thresholded at its own value)."""
        return self.thresholds is not None

    @property
    def scale(self) -> float:
        """The factor windows are resized by for the model (1: none, or not in windows)."""
        return self.windows.scale if self.windows is not None else 1.0

    @classmethod
    def make(
        cls,
        spec: Any,
        options: PredictOptions | None = None,
        train_size: int | None = None,
        device: torch.device | str = "cpu",
        checkpoint: str | Path | None = None,
    ) -> Recipe:
        """The recipe of a model with ``spec`` run with ``options``.

        Args:
            spec: the model's :class:`~segkit.models.ModelSpec` (as loading left it).
            options: the caller's options (default :class:`PredictOptions()`).
            train_size: the square size it was trained at (default
                ``spec.options["image_size"]``).
            device: where the model runs (what ``precision="auto"`` means there).
            checkpoint: the file the model was loaded from (None: a model in memory), which
                ``runtime="auto"`` takes into account (:func:`~segkit.inference.runtimes.auto_runtime`).

        Raises:
            ConfigError: a window smaller than the model's divisor; thresholds that do not
                fit the model; a runtime and precision that do not go together (or with
                the device).
        """
        opts = options if options is not None else PredictOptions()
        if train_size is None:
            train_size = spec.options.get("image_size")
        windows = _windows(spec, opts)
        meta = DatasetMeta.from_dict(spec.meta or {})
        multilabel = spec.task == "multilabel"
        thresholds = _thresholds(opts.threshold, meta, spec.classes) if multilabel else None
        if not multilabel and isinstance(opts.threshold, tuple):
            raise ConfigError(
                f"{option('threshold', ','.join(map(str, opts.threshold)))}: one threshold per "
                "class is for multi-label models; this one takes one value (e.g. 0.5)."
            )
        names = tuple(spec.class_names or ()) if multilabel else None
        runtime = resolve_runtime(opts.runtime, opts.precision, torch.device(device), checkpoint)
        return cls(
            size=None if windows is not None else (opts.size or train_size),
            resize=check_resize_mode(spec.options.get("resize", "squash")),
            mean=tuple(spec.mean or (0.0, 0.0, 0.0)),
            std=tuple(spec.std or (1.0, 1.0, 1.0)),
            reader=_reader(meta, spec.in_channels),
            windows=windows,
            tta=opts.tta,
            flip_pairs=_flip_pairs(opts, meta, spec),
            threshold=0.5 if opts.threshold is None or multilabel else opts.threshold,
            thresholds=thresholds,
            mask_names=names,
            classes=max(2, spec.classes),
            colors=palette(spec),
            encoding=None if opts.ids or multilabel else encoding(spec),
            background=background(spec),
            runtime=runtime[0],
            precision=runtime[1],
        )


def _windows(spec: Any, opts: PredictOptions) -> Windows | None:
    """The windows: ``tile``'s; a model trained on crops runs whole images at its training
    scale in windows of its crop size unless a size (a square resize) or a tile is asked for
    (a tile is then the window as the model sees it, covering ``tile / scale`` image pixels)."""
    check_tile(opts.tile, spec.divisor)
    record = crop_record(spec)
    tile, overlap = opts.tile, opts.overlap
    if record is not None and tile is None and opts.size is None:
        tile, overlap = int(record["size"]), float(record.get("overlap", 0.25))
    if not tile:
        return None
    scale = float(record.get("scale", 1.0)) if record is not None else 1.0
    return Windows(tile, overlap, opts.blend, opts.batch_size, scale)


def _reader(meta: DatasetMeta, in_channels: int) -> BandReader | None:
    """How training read its images; a model of other than 3 channels built outside
    training reads its bands as stored."""
    reader = BandReader.from_dict(meta.input)
    if reader is None and in_channels != 3:
        reader = BandReader()
    return reader


def _flip_pairs(opts: PredictOptions, meta: DatasetMeta, spec: Any) -> tuple[tuple[int, int], ...]:
    """``flip_pairs`` given, else what training flipped (recorded in the spec)."""
    if opts.flip_pairs is not None:
        return opts.flip_pairs
    return tuple(tuple(p) for p in meta.pairs_for(spec.class_names or []))


def _thresholds(
    given: float | tuple[float, ...] | None, meta: DatasetMeta, classes: int
) -> tuple[float, ...]:
    """Per-class thresholds: the option's, else what training recorded, else 0.5 each."""
    if given is None:
        given = meta.thresholds if meta.thresholds is not None else 0.5
    values = (given,) * classes if isinstance(given, float) else tuple(given)
    return check_thresholds(values, classes, option("threshold", given))
