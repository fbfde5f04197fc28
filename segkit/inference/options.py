"""What a prediction run may be asked to do, each setting checked here and nowhere else.

:class:`PredictOptions` checks its fields when it is made; :func:`parse_tta` is the one reader
of a test-time augmentation, used by the options, by :func:`~segkit.inference.predict_proba`
and by ``segkit.api.evaluate``, so a bad value gives the same message wherever it comes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from segkit.data.io import MAX_IMAGE_PIXELS
from segkit.errors import ConfigError, option, unknown_name
from segkit.inference.polygons import check_polygons
from segkit.inference.runtimes import check_precision, check_runtime
from segkit.models.windows import check_blend, check_overlap

#: how a test-time augmentation is written, for messages and help texts
TTA_FORMS = "'flip', 'scales=0.75,1,1.25' or 'flip+scales=0.75,1,1.25'"


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: average the probabilities over input scales and mirror images.

    Attributes:
        flip: also predict the mirrored input (left/right classes swapped back).
        scales: input scale factors; the probabilities of each are resized back and averaged.
    """

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __str__(self) -> str:
        parts = ["flip"] * self.flip
        if self.scales != (1.0,):
            parts.append("scales=" + ",".join(f"{s:g}" for s in self.scales))
        return "+".join(parts) or "none"


def _bad_tta(value: object) -> ConfigError:
    return ConfigError(
        f"Unknown test-time augmentation {option('tta', repr(value))}; use {TTA_FORMS}, "
        "or leave it out."
    )


def parse_tta(value: TTA | str | None) -> TTA | None:
    """A :class:`TTA` from ``"flip"``, ``"scales=0.75,1,1.25"``, ``"flip+scales=..."``, a
    :class:`TTA` or None (no augmentation; so is ``"none"``).

    Raises:
        ConfigError: anything else, or a scale that is not a positive number.
    """
    if value is None or isinstance(value, TTA):
        return value
    if not isinstance(value, str):
        raise _bad_tta(value)
    text = value.replace(" ", "").lower()
    if text == "none":
        return None
    flip, scales = False, (1.0,)
    for part in text.split("+"):
        if part == "flip" and not flip:
            flip = True
        elif part.startswith("scales=") and scales == (1.0,):
            try:
                scales = tuple(float(s) for s in part[len("scales=") :].split(","))
            except ValueError:
                raise _bad_tta(value) from None
            if not all(math.isfinite(s) and s > 0 for s in scales):
                raise _bad_tta(value)
        else:
            raise _bad_tta(value)
    return TTA(flip, scales) if flip or scales != (1.0,) else None


def _positive(name: str, value: Any, optional: bool = False, least: int = 1) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive whole number" if least == 1 else f"a whole number >= {least}"
        leave = " (or leave it out)" if optional else ""
        raise ConfigError(f"{option(name, value)}: must be {what}{leave}.")


def parse_threshold(value: Any) -> float | tuple[float, ...]:
    """A threshold (a number) or per-class thresholds (a sequence, or ``"0.4,0.6"``)."""
    given = value
    if isinstance(value, str):
        try:
            value = tuple(float(v) for v in value.split(","))
        except ValueError:
            value = None
        value = value[0] if value is not None and len(value) == 1 else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise ConfigError(
        f"{option('threshold', given)}: give a probability (e.g. 0.5) or, for a multi-label "
        "model, one per class (e.g. 0.4,0.6)."
    )


@dataclass(frozen=True)
class PredictOptions:
    """How a :class:`~segkit.inference.Predictor` predicts and what it writes.

    Every field is checked when the options are made (:class:`~segkit.errors.ConfigError`,
    naming the option as the interface in use spells it).

    Attributes:
        size: model input size: the square's side (with training's ``data.resize`` of
            ``shortest_side_crop``, the shortest side of the whole image); default the
            training size, else the original size padded to the model's divisor. Ignored
            when tiling.
        tile: predict at the original resolution in sliding windows of this size.
        overlap: fraction of a window that neighbouring windows share.
        blend: how overlapping windows are blended: "gaussian" (window centres weigh more)
            or "uniform" (a plain mean).
        tta: test-time augmentation (:func:`parse_tta`): ``"flip"``, ``"scales=0.75,1,1.25"``
            or both (``"flip+scales=..."``).
        flip_pairs: class pairs that flip TTA swaps back; default what training flipped.
        threshold: foreground probability threshold of a one-channel (binary) model (None:
            0.5), or of a multi-label model: one value for every class or one per class
            (None: the thresholds training recorded, else 0.5).
        resize_back: "bilinear" (probabilities, accurate) or "nearest" (labels, faster).
        batch_size: images per model call (windows per call when tiling).
        num_workers: DataLoader worker processes reading files (0: threads of this process).
        writers: threads that resize back, encode and write outputs (and read, on the CPU).
        save_masks: write ``<stem>.png`` label maps, in the data set's own label values
            where its metadata declares them (``output_ids``: Cityscapes' labelIds).
        ids: write plain class ids 0..C-1 in ``<stem>.png`` even so.
        overlay: also write ``<stem>_overlay.png``.
        color: also write ``<stem>_color.png`` in the data set's class colours.
        polygons: also write the predicted objects as polygons annotation tools open:
            ``"labelme"`` (``<stem>.json`` per image and ``labels.txt``), ``"coco"`` (one
            ``annotations.json``: polygons, RLE for objects with holes) or ``"coco-rle"``
            (RLE for every object); :mod:`segkit.inference.polygons`.
        polygon_epsilon: how far (pixels) a simplified outline may stray (``approxPolyDP``).
        polygon_min_area: objects (and holes) of fewer pixels are left out of the polygons.
        overwrite: replace output files that exist already (inputs never are).
        skip_bad: skip unreadable images with a warning instead of failing.
        max_pixels: refuse an image whose header claims more pixels (None: no own limit).
        progress: show a progress bar.
        runtime: what runs the model: "auto" (onnxruntime on the CPU where it is installed
            and the model comes from a checkpoint, else torch: the measured default),
            "torch" or "onnxruntime" (CPU; the ONNX export is cached beside the checkpoint,
            keyed by its content).
        precision: "auto" (the measured default for the device), "fp32" (the exact
            reference with torch), "bf16" (torch, channels_last under bfloat16 autocast) or
            "int8" (onnxruntime, the model ``segkit export --int8`` quantised).
    """

    size: int | None = None
    tile: int | None = None
    overlap: float = 0.25
    blend: str = "gaussian"
    tta: TTA | str | None = None
    flip_pairs: tuple[tuple[int, int], ...] | None = None
    threshold: float | tuple[float, ...] | None = None
    resize_back: str = "bilinear"
    batch_size: int = 8
    num_workers: int = 0
    writers: int = 2
    save_masks: bool = True
    ids: bool = False
    overlay: bool = False
    color: bool = False
    polygons: str | None = None
    polygon_epsilon: float = 0.5
    polygon_min_area: int = 0
    overwrite: bool = False
    skip_bad: bool = False
    max_pixels: int | None = MAX_IMAGE_PIXELS
    progress: bool = False
    runtime: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tta", parse_tta(self.tta))
        check_runtime(self.runtime)
        check_precision(self.precision)
        check_overlap(self.overlap)
        check_blend(self.blend)
        for name in ("batch_size", "writers"):
            _positive(name, getattr(self, name))
        for name in ("size", "tile", "max_pixels"):
            _positive(name, getattr(self, name), optional=True)
        _positive("num_workers", self.num_workers, least=0)
        check_polygons(self.polygons, self.polygon_epsilon, self.polygon_min_area)
        if self.resize_back not in ("bilinear", "nearest"):
            raise ConfigError(
                f"Unknown {option('resize_back', repr(self.resize_back))}; use 'bilinear' "
                "(accurate) or 'nearest' (faster for many classes)."
            )
        if self.threshold is not None:
            object.__setattr__(self, "threshold", parse_threshold(self.threshold))
        if self.flip_pairs is not None:
            pairs = tuple((int(a), int(b)) for a, b in self.flip_pairs)
            object.__setattr__(self, "flip_pairs", pairs)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> PredictOptions:
        """Options from keyword arguments; an unknown name is an error suggesting the closest.

        Raises:
            ConfigError: an unknown name or a bad value.
        """
        known = [f.name for f in fields(cls)]
        for name in kwargs:
            if name not in known:
                raise ConfigError(unknown_name("prediction option", name, known))
        return cls(**kwargs)
