"""Images of any channel count and bit depth: greyscale, RGBA, 16-bit PNG/TIFF, multi-band
(GeoTIFF) rasters with no-data.

Training's default reader (:func:`segkit.data.io.read_image`) makes every image 8-bit RGB.
A :class:`BandReader` instead keeps the bands as stored and turns them into the network's
input scale, one rule for every file:

- values are divided by the type's range for 8-bit and 16-bit unsigned integers (``x / 255``,
  ``x / 65535``: the 0-1 scale ImageNet statistics are given in) and kept as stored for every
  other type (int16 reflectances, float32 decibels);
- NaN (no data) becomes ``nan_fill``;
- ``bands`` picks and orders the bands to keep (0-based), else all are kept.

The mean/std a model is normalised with (``spec.mean`` / ``spec.std``, ``segkit stats``) are
on that scale. TIFF files are read with tifffile (``pip install 'segkit[tiff]'``), since
Pillow returns only the first band of a multi-band TIFF; other formats with OpenCV as stored
(``IMREAD_UNCHANGED``: 16 bits kept, alpha kept, BGR turned to RGB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.data.io import _read_bytes, _unreadable
from segkit.errors import ConfigError, DataError

TIFF_SUFFIXES = (".tif", ".tiff")


def pixel_scale(dtype: np.dtype) -> float:
    """What an image's values are divided by: 255 for uint8, 65535 for uint16, else 1."""
    return {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(np.dtype(dtype), 1.0)


def _tifffile() -> Any:
    try:
        import tifffile
    except ImportError:
        raise ImportError(
            "Reading TIFF images band by band needs the 'tifffile' package, which is not "
            "installed. Install it: pip install 'segkit[tiff]'."
        ) from None
    return tifffile


def read_tiff(path: str | Path) -> np.ndarray:
    """The first image of a TIFF file as stored (2-D, or 3-D with a band axis), via tifffile.

    Raises:
        DataError: the file is missing, empty or not a TIFF tifffile can decode.
    """
    _read_bytes(path)  # missing / empty / unreadable: the same messages as every reader
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array, axes = series.asarray(), series.axes
    except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError):
        raise _unreadable(path, "TIFF image") from None
    drop = [i for i, n in enumerate(array.shape) if n == 1 and axes[i] not in "YX"]
    array = np.squeeze(array, axis=tuple(drop)) if drop else array
    axes = "".join(a for i, a in enumerate(axes) if i not in drop)
    if array.ndim == 3 and "Y" in axes and "X" in axes:  # the band axis last: H x W x C
        band = next(i for i, a in enumerate(axes) if a not in "YX")
        array = np.moveaxis(array, band, -1)
    elif array.ndim != 2:
        raise DataError(
            f"TIFF {str(path)!r} holds an array of shape {array.shape} (axes {axes!r}); segkit "
            "reads one 2-D image with its bands. Save one image per file."
        )
    return np.ascontiguousarray(array)


def read_bands(path: str | Path) -> np.ndarray:
    """An image file as stored: ``H x W x C`` in its own type (uint8, uint16, int16, float32...).

    TIFF goes through tifffile; other formats through OpenCV unchanged (16 bits and alpha
    kept, colour channels as RGB / RGBA).

    Raises:
        DataError: the file is missing, empty, corrupt or not an image (names it).
    """
    if Path(path).suffix.lower() in TIFF_SUFFIXES:
        image = read_tiff(path)
    else:
        data = _read_bytes(path)
        try:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            image = None
        if image is None:
            raise _unreadable(path, "image")
        if image.ndim == 3 and image.shape[2] in (3, 4):
            code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
            image = cv2.cvtColor(image, code)
    return image[..., None] if image.ndim == 2 else image


def check_channels(
    image: np.ndarray, expected: int, path: str | Path, trained: bool = False
) -> None:
    """Raise a DataError naming ``path`` when ``image`` has not ``expected`` bands
    (``trained``: for a trained model, whose band count is fixed)."""
    found = image.shape[2] if image.ndim == 3 else 1
    if found == expected:
        return
    if trained:
        raise DataError(
            f"Image {str(path)!r} has {found} band(s) but the model was trained on {expected}; "
            "give it images with the bands of its training images."
        )
    pick = (
        f", or keep {expected} of them with the raster data set's bands option "
        f"(data.options.bands: {list(range(expected))})"
        if found > expected
        else ""
    )
    raise DataError(
        f"Image {str(path)!r} has {found} band(s) but model.in_channels is {expected}. Set "
        f"model.in_channels={found} to use every band{pick}; every image needs the same bands."
    )


@dataclass(frozen=True)
class BandReader:
    """Reads images with their own bands and bit depth into the network's input scale.

    Attributes:
        bands: 0-based indices of the bands to keep, in this order (None: all).
        nan_fill: the value NaN (no-data) pixels get, on the input scale.
    """

    bands: tuple[int, ...] | None = None
    nan_fill: float = 0.0

    def __post_init__(self) -> None:
        if self.bands is not None:
            bands = tuple(self.bands)
            if not bands or any(isinstance(b, bool) or not isinstance(b, int) for b in bands):
                raise ConfigError(
                    f"bands must be a list of 0-based band numbers such as [0, 1], got {bands!r}."
                )
            object.__setattr__(self, "bands", bands)
        if isinstance(self.nan_fill, bool) or not isinstance(self.nan_fill, (int, float)):
            raise ConfigError(f"nan_fill must be a number, got {self.nan_fill!r}.")
        object.__setattr__(self, "nan_fill", float(self.nan_fill))

    def prepare(
        self,
        image: np.ndarray,
        channels: int | None,
        where: str | Path,
        fill: bool = True,
        trained: bool = False,
    ) -> np.ndarray:
        """An ``H x W x C`` array as the network's ``float32`` input: bands picked, scaled,
        NaN filled (``fill=False`` keeps NaN, for statistics); ``channels`` is checked
        (``trained``: for a trained model, see :func:`check_channels`).

        Raises:
            DataError: a band number the image does not have, or the wrong band count.
        """
        image = np.asarray(image)
        image = image[..., None] if image.ndim == 2 else image
        if self.bands is not None:
            have = image.shape[2]
            bad = [b for b in self.bands if not -have <= b < have]
            if bad:
                raise DataError(
                    f"Image {str(where)!r} has {have} band(s) (0..{have - 1}) but bands names "
                    f"{bad}. Pick band numbers it has (data.options.bands)."
                )
            image = image[..., list(self.bands)]
        if channels is not None:
            check_channels(image, channels, where, trained)
        out = image.astype(np.float32)
        scale = pixel_scale(image.dtype)
        if scale != 1.0:
            out *= np.float32(1.0 / scale)
        if fill and out.dtype.kind == "f":
            np.nan_to_num(
                out, copy=False, nan=self.nan_fill, posinf=self.nan_fill, neginf=self.nan_fill
            )
        return np.ascontiguousarray(out)

    def read(
        self,
        path: str | Path,
        channels: int | None = None,
        fill: bool = True,
        trained: bool = False,
    ) -> np.ndarray:
        """``H x W x C`` float32 input of the image file ``path`` (see :meth:`prepare`)."""
        return self.prepare(read_bands(path), channels, path, fill, trained)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (``spec.meta["input"]``)."""
        return {"reader": "bands", "bands": list(self.bands) if self.bands else None,
                "nan_fill": self.nan_fill}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BandReader | None:
        """The reader a checkpoint recorded; None: 8-bit RGB (:func:`segkit.data.io.read_image`)."""
        if not data or data.get("reader") != "bands":
            return None
        return cls(tuple(data["bands"]) if data.get("bands") else None, data.get("nan_fill", 0.0))


class ChannelStats:
    """Per-channel mean and standard deviation, accumulated image by image (NaN left out).

    Sums are kept in float64 per image, so millions of pixels lose no precision.
    """

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None
        self.images = 0

    def add(self, image: np.ndarray, where: str | Path = "an image") -> None:
        """Add one ``H x W x C`` image (the network's input scale, NaN for no data)."""
        values = np.asarray(image, dtype=np.float64)
        values = values.reshape(-1, values.shape[-1] if values.ndim == 3 else 1)
        if self.count is not None and values.shape[1] != len(self.count):
            raise DataError(
                f"{str(where)!r} has {values.shape[1]} band(s), the images before it "
                f"{len(self.count)}. Give every image the same bands."
            )
        valid = np.isfinite(values)
        clean = np.where(valid, values, 0.0)
        count, total = valid.sum(axis=0), clean.sum(axis=0)
        if self.count is None:
            self.count, self.total, self.squares = count, total, (clean * clean).sum(axis=0)
        else:
            self.count = self.count + count
            self.total = self.total + total
            self.squares = self.squares + (clean * clean).sum(axis=0)
        self.images += 1

    def result(self) -> tuple[list[float], list[float]]:
        """``(mean, std)`` per channel.

        Raises:
            DataError: no image was added, or a channel holds no valid value (all NaN) or
                never varies (std 0: it cannot be normalised).
        """
        if self.count is None:
            raise DataError("No images to compute statistics from; check data.root and the split.")
        count = np.maximum(self.count, 1)
        mean = self.total / count
        std = np.sqrt(np.maximum(self.squares / count - mean * mean, 0.0))
        empty = [i for i, n in enumerate(self.count) if n == 0]
        flat = [i for i, s in enumerate(std) if s <= 0]
        if empty or flat:
            raise DataError(
                f"Band(s) {empty or flat} hold {'no valid value (all NaN)' if empty else 'one value only'} "
                f"over {self.images} image(s): they cannot be normalised. Leave them out with "
                "the data set's bands option, or give augment.mean/augment.std by hand."
            )
        return [float(v) for v in mean], [float(v) for v in std]


def image_stats(images: Iterable[tuple[np.ndarray, str | Path]]) -> dict[str, Any]:
    """Per-channel ``mean``/``std`` of ``(image, name)`` pairs, with ``images`` and ``pixels``
    (valid values per channel) counted."""
    stats = ChannelStats()
    for image, where in images:
        stats.add(image, where)
    mean, std = stats.result()
    pixels = [int(n) for n in stats.count]  # type: ignore[union-attr]  (set by result())
    return {"mean": mean, "std": std, "images": stats.images, "pixels": pixels}


def fit_stats(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    """``values`` as a tuple of ``channels`` numbers; one value is repeated, others must fit.

    Raises:
        ConfigError: names ``what`` (e.g. ``augment.mean``) and the counts.
    """
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ConfigError(
            f"{what} has {len(values)} values but model.in_channels is {channels}; give one "
            "per input channel (`segkit stats CONFIG` computes them)."
        )
    if what.endswith("std") and min(values) <= 0:
        raise ConfigError(f"{what} must be positive, got {list(values)}.")
    return values


def read_stats(path: str | Path, what: str = "augment.stats") -> tuple[list[float], list[float]]:
    """The per-channel ``mean`` and ``std`` of a statistics file: the JSON ``segkit stats
    CONFIG --json FILE`` writes, or any JSON/YAML mapping with ``mean`` and ``std`` lists
    (other keys are ignored).

    Raises:
        ConfigError: a missing or unreadable file, or one without numeric ``mean``/``std``
            lists (names ``what`` and the file).
    """
    import yaml

    path = Path(path)
    hint = f"write it with `segkit stats CONFIG --json {path.name}`"
    try:
        data = _json_or_yaml(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: statistics file {str(path)!r} does not exist; {hint}."
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"{what}: cannot read statistics file {str(path)!r} ({type(exc).__name__}); {hint}."
        ) from None
    stats = []
    for key in ("mean", "std"):
        values = data.get(key) if isinstance(data, dict) else None
        numbers = isinstance(values, list) and values
        if not numbers or not all(_number(v) for v in values):
            raise ConfigError(
                f"{what}: statistics file {str(path)!r} holds no {key} (a list of numbers, one "
                f"per channel); {hint}."
            )
        stats.append([float(v) for v in values])
    return stats[0], stats[1]


def _json_or_yaml(text: str) -> Any:
    """``text`` read as JSON, else as YAML: PyYAML reads JSON's ``5e-05`` as a string."""
    import json

    import yaml

    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def _number(value: Any) -> bool:
    """Whether ``value`` is a finite-or-infinite number (not NaN, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
