"""How an image's aspect meets the square network input (``data.resize``), both ways.

Three modes, each a training geometry (albumentations steps, built by
:func:`segkit.data.transforms.build_transforms`) and a
prediction geometry (:func:`resize_for_model` forward, :func:`resized_shape` to undo):

- ``squash`` (default): resize to ``size x size``, whatever the aspect; prediction resizes
  the output back to the image's own size.
- ``longest_side_pad``: scale so that the longest side is ``size`` (aspect kept), then pad the
  bottom and right to ``size x size``: images with black, masks with the ignore index (else
  background, see :func:`mask_fill`). Prediction does the same, crops the padding away from
  the output and resizes the rest to the image's own size.
- ``shortest_side_crop``: scale so that the shortest side is ``size``; training takes a random
  ``size x size`` crop of that (validation: the centre crop). Prediction scales the same way
  but predicts the *whole* scaled image (padded to the model's divisor only), since every
  pixel of the image needs a label; a fully convolutional model sees objects at the scale it
  learned them either way.

Pure functions over numpy arrays. Training uses albumentations' own ``LongestMaxSize`` /
``SmallestMaxSize``, whose rounding :func:`resized_shape` repeats
(``round(side * size / longest or shortest side)``); the tests check that prediction's
input equals training's pixel for pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

from segkit.errors import ConfigError, suggest

#: the values of ``data.resize``
RESIZE_MODES = ("squash", "longest_side_pad", "shortest_side_crop")


def check_resize_mode(mode: object) -> str:
    """``mode`` if it is one of :data:`RESIZE_MODES`.

    Raises:
        ConfigError: anything else, naming ``data.resize`` and the valid values.
    """
    if isinstance(mode, str) and mode in RESIZE_MODES:
        return mode
    hint = suggest(mode, RESIZE_MODES) if isinstance(mode, str) else ""
    raise ConfigError(
        f"data.resize: unknown resize mode {mode!r}.{hint} Use one of {', '.join(RESIZE_MODES)} "
        "(squash: to a square whatever the aspect, the default; longest_side_pad: longest side "
        "to data.image_size, padded; shortest_side_crop: shortest side to data.image_size, "
        "cropped)."
    )


def mask_fill(ignore_index: int | None) -> int:
    """The label of the padding ``longest_side_pad`` adds to masks.

    The ignore index when the data has one, so that the padding is left out of loss and
    metrics. Without one, background (0): segkit does not invent an ignore value (that would
    change a binary data set's label space and metrics). The model then learns that the black
    bars are background, which is harmless since prediction crops them away, but the bars
    count as easy background pixels in the validation metrics; set ``loss.ignore_index``
    (e.g. 255) to leave them out.
    """
    return 0 if ignore_index is None else int(ignore_index)


def resize_image(image: np.ndarray, dsize: tuple[int, int], interpolation: int) -> np.ndarray:
    """``cv2.resize(image, dsize, interpolation=...)`` for any channel count: OpenCV resizes
    at most 4 channels at a time, so more (multi-band images) go through in groups; an
    ``H x W x 1`` image keeps its channel axis."""
    if image.ndim == 2 or image.shape[2] <= 4:
        out = cv2.resize(image, dsize, interpolation=interpolation)
        return out[..., None] if image.ndim == 3 and out.ndim == 2 else out
    parts = [
        cv2.resize(image[..., i : i + 4], dsize, interpolation=interpolation)
        for i in range(0, image.shape[2], 4)
    ]
    return np.ascontiguousarray(np.dstack(parts))


def resized_shape(
    height: int, width: int, size: int | None, mode: str = "squash"
) -> tuple[int, int]:
    """``(height, width)`` of an image of that size once scaled for the model (``None``: as it
    is): ``(size, size)`` for ``squash``, else the aspect-kept shape whose longest
    (``longest_side_pad``) or shortest (``shortest_side_crop``) side is ``size``.

    For ``longest_side_pad`` this is the part of the ``size x size`` input (its top-left) that
    holds the image; for the others it is the whole input.
    """
    if size is None:
        return height, width
    mode = check_resize_mode(mode)
    if mode == "squash":
        return size, size
    side = max(height, width) if mode == "longest_side_pad" else min(height, width)
    scale = size / side  # as albumentations' LongestMaxSize / SmallestMaxSize compute it
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_for_model(
    image: np.ndarray,
    size: int | None,
    mode: str = "squash",
    original: tuple[int, int] | None = None,
) -> np.ndarray:
    """The network input of ``image`` at prediction, as training's :func:`resize_steps` made it.

    Area averaging when shrinking, bilinear when enlarging. ``longest_side_pad`` pads the
    bottom and right with zeros to ``size x size``; ``shortest_side_crop`` keeps the whole
    scaled image. ``original`` is the image's own ``(height, width)`` when ``image`` was
    decoded at reduced size, so that the shape is the one training computed from the full
    image.
    """
    if size is None:
        return image
    height, width = original or image.shape[:2]
    target = resized_shape(height, width, size, mode)
    if image.shape[:2] != target:
        shrink = image.shape[0] > target[0] or image.shape[1] > target[1]
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        image = resize_image(image, target[::-1], interpolation)
    if mode == "longest_side_pad" and target != (size, size):
        padded = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
        padded[: target[0], : target[1]] = image
        image = padded
    return image


def crop_padding(
    output: np.ndarray, original: tuple[int, int], size: int | None, mode: str = "squash"
) -> np.ndarray:
    """The part of a network output (``... x H x W``) that covers an image of ``original``
    ``(height, width)``: ``longest_side_pad``'s padding cropped away (a view), else all of it.

    Resizing that part to ``original`` undoes :func:`resize_for_model`.
    """
    height, width = resized_shape(*original, size, mode)
    return output[..., :height, :width]
