"""Albumentations pipelines from config: resize or random crops, label-aware flips, light
augmentation, normalise."""

from __future__ import annotations

# isort: off
import segkit._env  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)

# isort: on
import math
from collections.abc import Iterable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from segkit.config import AugmentConfig, CropConfig
from segkit.data.meta import (  # noqa: F401  (their home is data.meta, which needs no albumentations)
    IMAGENET_MEAN,
    IMAGENET_STD,
    flip_pairs_from_names,
)
from segkit.data.resize import check_resize_mode, mask_fill
from segkit.errors import ConfigError


def swap_labels(mask: np.ndarray, flip_pairs: Iterable[tuple[int, int]]) -> np.ndarray:
    """Return ``mask`` with the class ids of each pair exchanged (e.g. left brow <-> right brow)."""
    out = mask.copy()
    for a, b in flip_pairs:
        out[mask == a] = b
        out[mask == b] = a
    return out


class LabelAwareHorizontalFlip(A.HorizontalFlip):
    """Horizontal flip that also swaps left/right class ids in masks.

    A mirrored face has its left brow where the right one was; a plain flip would keep the
    label ``lb`` on what is now the right brow and teach the model wrong labels.

    Args:
        flip_pairs: class id pairs to exchange, e.g. Helen's ``[(2, 3), (4, 5)]``.
        p: probability of flipping.
    """

    class InitSchema(A.HorizontalFlip.InitSchema):
        flip_pairs: Sequence[tuple[int, int]]

    def __init__(self, flip_pairs: Sequence[tuple[int, int]] = (), p: float = 0.5) -> None:
        super().__init__(p=p)
        pairs = [(int(a), int(b)) for a, b in flip_pairs]
        ids = [i for pair in pairs for i in pair]
        if len(set(ids)) != len(ids) or any(a == b for a, b in pairs):
            raise ValueError(f"flip_pairs must name each class id at most once, got {pairs}.")
        self.flip_pairs = pairs
        lut = np.arange(256, dtype=np.uint8)
        for a, b in pairs:
            if not (0 <= a < 256 and 0 <= b < 256):
                raise ValueError(f"flip_pairs hold class ids 0..255, got {(a, b)}.")
            lut[a], lut[b] = b, a
        self._lut = lut

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        """Flip the mask and swap the paired class ids."""
        flipped = super().apply_to_mask(mask, **params)
        if flipped.dtype == np.uint8:
            return self._lut[flipped]
        return swap_labels(flipped, self.flip_pairs)

    def apply_to_masks(self, masks: np.ndarray, **params: Any) -> np.ndarray:
        """Flip and swap each mask of a stack."""
        return np.stack([self.apply_to_mask(m, **params) for m in masks])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("flip_pairs",)


def check_crop(crop: CropConfig) -> CropConfig:
    """``crop`` if its values make sense (see :class:`~segkit.config.CropConfig`).

    Raises:
        ConfigError: a crop size below 1, a scale or jitter factor that is not positive,
            jitter not ``[low, high]`` with ``low <= high``, a foreground probability outside
            0..1 or an overlap outside [0, 1); the message names the key.
    """
    size = crop.size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"data.crop.size must be a positive number of pixels, got {size!r}.")
    if not (math.isfinite(crop.scale) and crop.scale > 0):
        raise ConfigError(
            f"data.crop.scale is the factor images are resized by before cropping (1: native "
            f"resolution, 0.5: half) and must be positive, got {crop.scale}."
        )
    jitter = list(crop.jitter)
    if len(jitter) != 2 or not all(math.isfinite(j) and j > 0 for j in jitter):
        raise ConfigError(
            f"data.crop.jitter is [low, high], two positive scale factors (e.g. [0.75, 1.25]; "
            f"[1, 1]: none), got {jitter}."
        )
    if jitter[0] > jitter[1]:
        raise ConfigError(
            f"data.crop.jitter is [low, high] with low <= high, got {jitter}; write "
            f"[{jitter[1]:g}, {jitter[0]:g}]."
        )
    if not 0.0 <= crop.foreground <= 1.0:
        raise ConfigError(f"data.crop.foreground is a probability in 0..1, got {crop.foreground}.")
    if not 0.0 <= crop.overlap < 1.0:
        raise ConfigError(
            f"data.crop.overlap is the fraction of a window that neighbouring windows share, "
            f"at least 0 and below 1 (e.g. 0.25), got {crop.overlap}."
        )
    return crop


def crop_steps(crop: CropConfig, ignore_index: int | None = None) -> list[Any]:
    """Random ``crop.size`` squares at ``crop.scale`` times the native size, jittered.

    ``RandomScale`` by a factor drawn from ``scale * jitter`` (area averaging when shrinking,
    masks by pixel centres; left out at factor 1), ``PadIfNeeded`` up to the crop where the
    image is smaller (pixels 0, masks ``ignore_index`` where the data has one, else
    background), then ``RandomCrop``, or with probability ``crop.foreground``
    ``CropNonEmptyMaskIfExists`` (a crop holding a labelled pixel other than background and
    ``ignore_index``).
    """
    check_crop(crop)
    low, high = (crop.scale * j for j in crop.jitter)
    steps: list[Any] = []
    if (low, high) != (1.0, 1.0):
        steps.append(
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),  # the factor is 1 + a draw from this range
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST_EXACT,
                area_for_downscale="image",
                p=1.0,
            )
        )
    size, fill_mask = crop.size, mask_fill(ignore_index)
    steps.append(
        A.PadIfNeeded(
            size,
            size,
            position="random",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=fill_mask,
        )
    )
    random_crop = A.RandomCrop(size, size, p=1.0 - crop.foreground)
    ignore = None if ignore_index is None else [ignore_index]
    on_label = A.CropNonEmptyMaskIfExists(size, size, ignore_values=ignore, p=crop.foreground)
    if crop.foreground == 0.0:
        steps.append(A.RandomCrop(size, size))
    elif crop.foreground == 1.0:
        steps.append(A.CropNonEmptyMaskIfExists(size, size, ignore_values=ignore))
    else:  # OneOf picks a child with its p as the weight
        steps.append(A.OneOf([on_label, random_crop], p=1.0))
    return steps


def build_transforms(
    augment: AugmentConfig | None,
    size: int,
    train: bool,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    flip_pairs: Iterable[tuple[int, int]] = (),
    ignore_index: int | None = None,
    resize: str = "squash",
    crop: CropConfig | None = None,
    max_pixel_value: float = 255.0,
    soft: bool = False,
) -> A.Compose:
    """The albumentations pipeline for training or evaluation.

    To ``size x size`` as ``resize`` says (:mod:`segkit.data.resize`: ``squash``,
    ``longest_side_pad``, ``shortest_side_crop``; images by area averaging when shrinking,
    bilinear when enlarging, as prediction reads them; masks nearest-neighbour by pixel
    centres); with ``crop`` instead random crops for training (:func:`crop_steps`) and
    nothing for evaluation, which sees whole images at their native size (the model runs on
    them in windows at ``crop.scale``). For training only, as ``augment`` sets the
    probabilities: horizontal flip (label-aware when ``flip_pairs``), vertical flip, a
    light ``Affine`` (scale, rotate, small shift) and colour jitter; then
    ``Normalize(mean, std)`` of ``x / max_pixel_value`` and ``ToTensorV2``. ``mean=(0, 0, 0)``,
    ``std=(1, 1, 1)`` gives ``x / 255``. Which mean/std to use (``augment.normalize``) is the
    caller's choice: it knows the model. Any channel count works; images read as bands
    (:mod:`segkit.data.bands`, float32 on their input scale) take ``max_pixel_value=1``.

    Args:
        augment: augmentation settings; None: no augmentation.
        size: side of the square network input.
        train: add the random augmentations.
        mean: per-channel mean (one value per image channel, of ``x / max_pixel_value``).
        std: per-channel standard deviation.
        flip_pairs: class id pairs that a horizontal flip swaps.
        ignore_index: label of the border an ``Affine`` shift or rotation and the padding of
            ``longest_side_pad`` bring in (default background, 0); give the loss's ignore
            value so that the border is left out.
        resize: ``data.resize``, how the image's aspect meets the square input.
        crop: ``data.crop``, random crops at native resolution instead (``size`` and
            ``resize`` unused; padding brings in ``ignore_index`` too).
        max_pixel_value: what the pixels are divided by before ``mean``/``std`` apply (255
            for 8-bit RGB; 1 for images already on their input scale).
        soft: masks are float coverage in 0..1 (soft targets): they are resized as the image
            is (area averaging when shrinking, bilinear otherwise, also in the ``Affine``),
            so a 0/1 mask shrinks to the fraction of each pixel that is foreground; not
            with ``crop`` (crops keep native resolution, where there is nothing to average).

    Raises:
        ConfigError: a non-positive size, a probability outside 0..1, bad mean/std, an
            unknown resize mode, bad crop settings (:func:`check_crop`), colour jitter on
            images that are not 8-bit RGB.
    """
    mean, std = _check_input(size, mean, std)
    _check_combination(augment, train, crop, max_pixel_value, soft)
    steps = _spatial_steps(size, resize, train, crop, ignore_index, soft)
    if train and augment is not None:
        steps += _augmentations(augment, list(flip_pairs), ignore_index, soft)
    normalize = A.Normalize(mean=mean, std=std, max_pixel_value=max_pixel_value)
    steps += [normalize, ToTensorV2()]
    return A.Compose(steps)


def _check_input(
    size: int, mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``size`` a positive int, ``mean``/``std`` one value per channel each (std > 0), as tuples."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"Image size must be a positive integer, got {size!r}.")
    mean, std = tuple(mean), tuple(std)
    if not mean or len(mean) != len(std) or min(std) <= 0:
        raise ConfigError(
            f"mean/std need one value per image channel each and std > 0, got mean={mean}, "
            f"std={std} ({len(mean)} and {len(std)} values)."
        )
    return mean, std


def _check_combination(
    augment: AugmentConfig | None,
    train: bool,
    crop: CropConfig | None,
    max_pixel_value: float,
    soft: bool,
) -> None:
    """Refuse settings that do not go together: colour jitter on images that are not 8-bit
    RGB, soft targets with crops."""
    if train and augment is not None and augment.color > 0 and max_pixel_value != 255.0:
        raise ConfigError(
            f"augment.color={augment.color} jitters the colours of 8-bit RGB images, but these "
            "images are read with their own bands and bit depth; set augment.color=0."
        )
    if crop is not None and soft:
        raise ConfigError(
            "data.soft_targets averages masks when training resizes them below native "
            "resolution; data.crop trains at native resolution. Unset one of them."
        )


def _spatial_steps(
    size: int,
    resize: str,
    train: bool,
    crop: CropConfig | None,
    ignore_index: int | None,
    soft: bool,
) -> list[Any]:
    """Random crops (training) or nothing (evaluation) with ``crop``; else the resize to
    ``size x size`` (:func:`_resize_steps`)."""
    if crop is None:
        return _resize_steps(size, resize, train, ignore_index, soft)
    steps = crop_steps(crop, ignore_index) if train else []  # evaluation: the whole image
    check_crop(crop)
    return steps


def _resize_steps(
    size: int, mode: str, train: bool, ignore_index: int | None, soft: bool = False
) -> list[Any]:
    """The steps that bring an image and its mask to ``size x size`` (``data.resize``).

    Prediction repeats them with :func:`segkit.data.resize.resize_for_model`.
    ``shortest_side_crop`` crops at random for training, in the centre otherwise. Soft
    (float coverage) masks are resized as the image is.
    """
    mode = check_resize_mode(mode)
    # area averaging when shrinking, bilinear when enlarging: what prediction's read_resized does;
    # masks by pixel centres (INTER_NEAREST_EXACT), as the image is, or they shift by half a
    # source pixel per pixel of scale (7 px at 1918 -> 128)
    interp: dict[str, Any] = {
        "interpolation": cv2.INTER_LINEAR,
        "mask_interpolation": cv2.INTER_LINEAR if soft else cv2.INTER_NEAREST_EXACT,
        "area_for_downscale": "image_mask" if soft else "image",
    }
    if mode == "squash":
        return [A.Resize(size, size, **interp)]
    if mode == "longest_side_pad":
        pad = A.PadIfNeeded(
            size,
            size,
            position="top_left",  # bottom and right, as pad_to_divisor pads: one crop undoes it
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=mask_fill(ignore_index),
        )
        return [A.LongestMaxSize(max_size=size, **interp), pad]
    crop = A.RandomCrop(size, size) if train else A.CenterCrop(size, size)
    return [A.SmallestMaxSize(max_size=size, **interp), crop]


def _augmentations(
    augment: AugmentConfig,
    flip_pairs: list[tuple[int, int]],
    ignore_index: int | None,
    soft: bool = False,
) -> list[Any]:
    for key in ("hflip", "vflip", "affine", "color"):
        p = getattr(augment, key)
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"augment.{key} is a probability in 0..1, got {p}.")
    steps: list[Any] = []
    if augment.hflip > 0:
        if flip_pairs:
            steps.append(LabelAwareHorizontalFlip(flip_pairs, p=augment.hflip))
        else:
            steps.append(A.HorizontalFlip(p=augment.hflip))
    if augment.vflip > 0:
        steps.append(A.VerticalFlip(p=augment.vflip))
    if augment.affine > 0:
        steps.append(
            A.Affine(
                scale=(1.0 - augment.scale, 1.0 + augment.scale),
                rotate=(-augment.rotate, augment.rotate),
                translate_percent=(-0.05, 0.05),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0 if ignore_index is None else ignore_index,  # no made-up background
                mask_interpolation=cv2.INTER_LINEAR if soft else cv2.INTER_NEAREST,
                p=augment.affine,
            )
        )
    if not 0.0 <= augment.hue <= 0.5:
        raise ConfigError(
            f"augment.hue is a fraction of the colour wheel in 0..0.5, got {augment.hue}."
        )
    if augment.color > 0:
        steps.append(
            A.ColorJitter(
                brightness=0.2, contrast=0.2, saturation=0.2, hue=augment.hue, p=augment.color
            )
        )
    return steps
