"""Reading and writing images and masks, with errors that name the file and say what to do.

OpenCV decodes JPEG/PNG (``cv2.imdecode`` over ``np.fromfile``, so non-ASCII paths work);
Pillow decodes GIF and palette PNG masks, where the palette decides what a pixel means.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segkit._files import write_bytes_atomic  # noqa: F401  (part of segkit.data.io's API)
from segkit.data.resize import resize_for_model, resize_image, resized_shape
from segkit.errors import DataError, option

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_EXTENSIONS = (".png", ".gif", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")

_JPEG_MAGIC = b"\xff\xd8"
_PILLOW_LIMIT = threading.Lock()
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: the default pixel limit of prediction's reader: Pillow's decompression-bomb error threshold
#: (2 x ``PIL.Image.MAX_IMAGE_PIXELS``, about 13400 x 13400); a 3-channel image this large
#: decodes to 537 MB
MAX_IMAGE_PIXELS = 178_956_970


class DataNotFoundError(DataError, FileNotFoundError):
    """A data root, split folder or file does not exist (both a DataError and FileNotFoundError)."""


def name_some(names: Iterable[object], limit: int = 5) -> str:
    """``"a, b, c, d, e and 7 more"``: at most ``limit`` names of a list, for error messages."""
    names = [str(n) for n in names]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def split_list_lines(path: str | Path) -> list[tuple[int, str]]:
    """The entries of a split list as whole lines: ``(line number, stripped text)`` for each
    non-empty line that is not a ``#`` comment (a UTF-8 byte-order mark is dropped).

    Raises:
        DataError: the file is not UTF-8 text.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(
            f"Split list {str(path)!r} is not UTF-8 text. Give a text file with one entry a line."
        ) from None
    entries = [(n, line.strip()) for n, line in enumerate(lines, 1)]
    return [(n, text) for n, text in entries if text and not text.startswith("#")]


def split_list_entries(path: str | Path) -> list[tuple[int, list[str]]]:
    """The entries of a split list: ``(line number, words)`` for each non-empty line that is
    not a ``#`` comment (ids, or image and mask paths, as VOC and SegNet write them).

    Raises:
        DataError: the file is not UTF-8 text.
    """
    return [(n, text.split()) for n, text in split_list_lines(path)]


def require_dir(path: str | Path, what: str = "Data root") -> Path:
    """Return ``path`` as a Path if it is a folder holding something, else raise.

    Raises:
        DataNotFoundError: the folder does not exist.
        DataError: it is a file, or it is empty.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(
            f"{what} {str(path)!r} does not exist. Check the path (relative paths are taken from "
            f"{os.getcwd()!r}); see docs/data.md for the layouts segkit reads."
        )
    if not path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a file, not a folder. Pass the folder instead.")
    if not any(path.iterdir()):
        raise DataError(
            f"{what} {str(path)!r} is empty. Unpack the data set there (see docs/data.md), "
            "or write a synthetic one with `segkit synth`."
        )
    return path


def refuse_overlap(src: Path, dst: Path, what: str) -> None:
    """Raise DataError when ``dst`` is ``src``, lies inside it or holds it (symlinks resolved).

    Writing there would add files to the user's source folder, which is only ever read.
    """
    src_real, dst_real = src.resolve(), dst.resolve()
    if dst_real == src_real:
        raise DataError(f"{what}: dst {str(dst)!r} is the source; pick another folder.")
    if src_real in dst_real.parents:
        raise DataError(
            f"{what}: dst {str(dst)!r} is inside the source {str(src)!r}, which is only read; "
            "pick a destination outside it."
        )
    if dst_real in src_real.parents:
        raise DataError(
            f"{what}: dst {str(dst)!r} holds the source {str(src)!r}; pick a destination "
            "outside it (for example a sibling folder)."
        )


def list_files(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Files directly in ``folder`` whose suffix (any case) is one of ``extensions``, sorted."""
    exts = {e.lower() for e in extensions}
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in exts and not p.name.startswith(".")
    )


def _read_bytes(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataNotFoundError(
            f"File {str(path)!r} does not exist. Was it moved or deleted after the data set was "
            "listed? Rebuild the data set or restore the file."
        ) from None
    except OSError as exc:
        raise DataError(f"Cannot read {str(path)!r}: {exc}. Check its permissions.") from None
    if data.size == 0:
        raise DataError(f"File {str(path)!r} is empty (0 bytes). Re-copy or re-download it.")
    return data


def _unreadable(path: str | Path, kind: str) -> DataError:
    return DataError(
        f"Cannot decode {kind} {str(path)!r}: the file is corrupt, truncated or not an image. "
        "Re-copy or re-download it, or remove it from the data set."
    )


def _opencv_refused(path: str | Path, exc: cv2.error) -> DataError:
    """OpenCV's own refusal (an assertion, e.g. its 2**30-pixel limit) as one line naming the file."""
    if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
        return DataError(
            f"Image {str(path)!r} is larger than OpenCV's decoding limit of 2**30 pixels. If the "
            "file is trusted, set the environment variable OPENCV_IO_MAX_IMAGE_PIXELS higher "
            "before starting, or tile the image into smaller files."
        )
    reason = " ".join(str(exc).split())
    return DataError(f"OpenCV cannot decode {str(path)!r} ({reason}); re-save or remove the file.")


#: start-of-frame markers (FF C0..CF except DHT C4, JPG C8 and DAC CC): they carry the size
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_header(data: np.ndarray) -> tuple[int, tuple[int, int] | None]:
    """The offset of a JPEG's first start-of-scan marker and its ``(width, height)``.

    Walks the marker segments from SOI. Walking (rather than searching for ``FF DA``) skips over
    APPn segments, which may hold a whole thumbnail JPEG. Headers that cannot be walked give
    ``(2, None)``: the scan is then searched from just after SOI.
    """
    pos, size, dims = 2, data.size, None
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            break
        marker = int(data[pos + 1])
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xDA:
            return pos, dims
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            if marker in _SOF_MARKERS and pos + 9 <= size:
                height = int(data[pos + 5]) << 8 | int(data[pos + 6])
                dims = (int(data[pos + 7]) << 8 | int(data[pos + 8]), height)
            pos += 2 + (int(data[pos + 2]) << 8 | int(data[pos + 3]))
    return 2, None


def _check_jpeg_complete(data: np.ndarray, path: str | Path) -> None:
    """A JPEG's compressed data must end with the EOI marker (FF D9); libjpeg fills a truncated
    one with grey. Bytes after EOI (phone cameras append metadata there) are allowed, and an EOI
    inside an embedded thumbnail does not count.
    """
    if data[:2].tobytes() != _JPEG_MAGIC:
        return
    scan, _ = _jpeg_header(data)
    tail = max(scan, data.size - 1024)  # the usual case: EOI within the last kilobyte
    if b"\xff\xd9" in data[tail:].tobytes() or b"\xff\xd9" in data[scan:].tobytes():
        return
    raise DataError(
        f"JPEG file {str(path)!r} is truncated (no end-of-image marker). "
        "Re-copy or re-download it, or remove it from the data set."
    )


def decode_image(data: np.ndarray, path: str | Path, flag: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode encoded image bytes to HxWx3 uint8 RGB (``flag`` may be an IMREAD_REDUCED_COLOR_*).

    EXIF orientation is ignored: pixels come as stored, on the same grid as their label map.
    """
    try:
        image = cv2.imdecode(data, flag | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        raise _opencv_refused(path, exc) from None
    if image is None:
        raise _unreadable(path, "image")
    _check_jpeg_complete(data, path)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, flag: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array.

    Args:
        path: a JPEG, PNG, BMP, TIFF or WebP file.
        flag: OpenCV read flag; ``cv2.IMREAD_REDUCED_COLOR_2/4/8`` decode a JPEG at 1/2..1/8 size.
            EXIF orientation is always ignored (pixels as stored, like the masks).

    Raises:
        DataError: the file is missing, empty, unreadable or truncated (the message names it).
    """
    return decode_image(_read_bytes(path), path, flag)


DECODE_MODES = ("reduced", "full")
_REDUCED_FLAGS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}


def decode_strategy(
    decode: str, width: int, height: int, size: int, shape: tuple[int, int] | None = None
) -> int:
    """The ``cv2.imread`` flag used to decode a ``width x height`` JPEG bound for ``size``.

    ``"full"`` decodes every pixel (``IMREAD_COLOR``). ``"reduced"`` lets libjpeg scale the
    DCT by the largest factor 8, 4 or 2 whose output (``ceil(w / f) x ceil(h / f)``) is still
    at least ``size`` on both sides (or at least ``shape`` = (height, width), the scaled shape
    of an aspect-kept resize), so INTER_AREA still only shrinks; else a full decode.

    Raises:
        ValueError: ``decode`` is not "reduced" or "full".
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}.")
    need_h, need_w = shape or (size, size)
    if decode == "reduced":
        for factor, flag in _REDUCED_FLAGS.items():
            if -(-width // factor) >= need_w and -(-height // factor) >= need_h:
                return flag
    return cv2.IMREAD_COLOR


def header_size(data: np.ndarray, path: str | Path) -> tuple[int, int] | None:
    """``(width, height)`` from the header of image file ``path`` holding ``data`` (None: not
    found).

    PNG and JPEG headers are read from ``data``; other formats through Pillow, which reads only
    the header of ``path`` when it opens it.
    """
    head = data[:24].tobytes()
    if head.startswith(_PNG_MAGIC) and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith(_JPEG_MAGIC):
        return _jpeg_header(data)[1]
    try:
        return _pillow_size(path)
    except (OSError, ValueError, SyntaxError):
        return None  # not an image Pillow knows: the decoder says what is wrong


def check_pixels(path: str | Path, size: tuple[int, int] | None, max_pixels: int | None) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels (None: no limit).

    Raises:
        DataError: names the file, its size and the option that raises the limit.
    """
    if max_pixels is None or size is None or size[0] * size[1] <= max_pixels:
        return
    width, height = size
    raise DataError(
        f"Image {str(path)!r} is {width}x{height} pixels ({width * height / 1e6:.0f} Mpx), above "
        f"the limit of {max_pixels / 1e6:.0f} Mpx that guards against decompression bombs; it was "
        f"not decoded. If the file is trusted, raise the limit with "
        f"{option('max_pixels', width * height)}."
    )


def read_resized(
    path: str | Path,
    size: int | None,
    decode: str = "reduced",
    max_pixels: int | None = None,
    mode: str = "squash",
    scale: float | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB image resized to ``size`` x ``size`` (``None``: as stored) and its original
    ``(height, width)``: area averaging when shrinking, bilinear when enlarging, as training's
    ``build_transforms`` resizes. ``mode`` (``data.resize``) keeps the aspect instead
    (:func:`segkit.data.resize.resize_for_model`: ``longest_side_pad``, ``shortest_side_crop``);
    ``scale`` (with ``size=None``) resizes by that factor, keeping the aspect
    (:func:`resize_scaled`: a model trained on ``data.crop`` at that scale).

    A JPEG much larger than ``size`` is decoded at 1/2, 1/4 or 1/8 scale by libjpeg
    (:func:`decode_strategy`), which is much faster; other formats are decoded in full, since
    OpenCV's reduced modes would only drop pixels there (aliasing). The size comes from the
    JPEG header, so no second reader opens the file.

    ``max_pixels`` refuses an image whose header claims more pixels, before decoding it
    (:func:`check_pixels`; None: no limit of segkit's own).

    Raises:
        DataError: the file is missing, not an image, corrupt or truncated, or too large
            (names the file).
    """
    data = _read_bytes(path)
    flag, dims = cv2.IMREAD_COLOR, None
    if max_pixels is not None:
        check_pixels(path, header_size(data, path), max_pixels)
    if (size is not None or scale is not None) and data[:2].tobytes() == _JPEG_MAGIC:
        _, dims = _jpeg_header(data)
        if dims is not None and scale is not None and size is None:
            shape = scaled_shape(dims[1], dims[0], scale)
            flag = decode_strategy(decode, dims[0], dims[1], min(shape), shape)
        elif dims is not None:
            shape = resized_shape(dims[1], dims[0], size, mode)
            flag = decode_strategy(decode, dims[0], dims[1], size, shape)
    image = decode_image(data, path, flag)
    original = (dims[1], dims[0]) if dims is not None else image.shape[:2]
    if scale is not None and size is None:
        return resize_scaled(image, scale, original), original
    return resize_for_model(image, size, mode, original), original


def resize_square(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` (``None``: as it is): area averaging when
    shrinking, bilinear when enlarging, as training's ``build_transforms`` resizes."""
    return resize_for_model(image, size)


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """``(height, width)`` times ``scale``, rounded (at least 1 pixel)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_scaled(
    image: np.ndarray, scale: float, original: tuple[int, int] | None = None
) -> np.ndarray:
    """``image`` resized to ``scale`` times ``original`` (its ``(height, width)``, default the
    image's own; a reduced JPEG decode is smaller), rounded: area averaging when shrinking,
    bilinear when enlarging, as training's crops are scaled."""
    target = scaled_shape(*(original or image.shape[:2]), scale)
    if image.shape[:2] == target:
        return image
    shrink = image.shape[0] > target[0] or image.shape[1] > target[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return resize_image(image, (target[1], target[0]), interpolation)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels.

    Any size is accepted: Pillow's decompression-bomb limit (179 Mpx) guards decoding, and
    nothing is decoded here. Only for an image over that limit is Pillow's global limit lifted,
    briefly and one thread at a time, so other readers keep their protection otherwise.
    """
    try:
        return _pillow_size(path)
    except FileNotFoundError:
        raise DataNotFoundError(f"File {str(path)!r} does not exist.") from None
    except (OSError, ValueError, SyntaxError):
        raise _unreadable(path, "image") from None


def _pillow_size(source: str | Path) -> tuple[int, int]:
    """``(width, height)`` from Pillow, which reads the header only (see :func:`image_size`)."""
    try:
        with Image.open(source) as im:
            return im.size
    except Image.DecompressionBombError:
        with _PILLOW_LIMIT:
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        with im:
            return im.size


def _palette_labels(im: Image.Image, path: str | Path) -> np.ndarray:
    """Labels of a palette image: grey values for a grey palette, palette indices otherwise.

    Kaggle's Carvana GIFs hold indices 0/1 with a black/white palette; encoders may reorder a
    palette (Pillow writes an all-white mask as index 0 = white), so for grey palettes the
    colour is the truth. A coloured palette (Pascal VOC style) stores class ids as indices.
    """
    try:
        index = np.asarray(im)
    except OSError:
        raise _unreadable(path, "mask") from None
    palette = im.getpalette()
    if not palette or index.size == 0:
        return index
    rgb = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[: int(index.max()) + 1]
    if index.dtype == np.uint8 and len(rgb) > int(index.max()) and (rgb == rgb[:, :1]).all():
        table = np.arange(256, dtype=np.uint8)
        table[: len(rgb)] = rgb[:, 0]
        return cv2.LUT(index, table)  # 10x faster than numpy fancy indexing on 1918x1280
    return index


def _read_with_pillow(path: str | Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return _palette_labels(im, path)
            if im.mode in ("L", "1", "I;16", "I"):
                return np.asarray(im.convert("L") if im.mode == "1" else im)
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"Mask {str(path)!r} is too large for Pillow ({exc}). If the file is trusted, set "
            "PIL.Image.MAX_IMAGE_PIXELS = None before reading it, or save it as a greyscale PNG."
        ) from None
    except OSError:
        raise _unreadable(path, "mask") from None


def _palette_head(head: bytes) -> bool:
    """Whether a file starting with ``head`` is a GIF or a palette PNG."""
    is_palette_png = head.startswith(_PNG_MAGIC) and len(head) > 25 and head[25] == 3
    return head.startswith(b"GIF8") or is_palette_png


def is_palette_image(path: str | Path) -> bool:
    """Whether ``path`` is a GIF or palette PNG: a label map stored as palette indices (Kaggle's
    Carvana GIFs: 0/1 with a black/white palette), read through its palette by
    :func:`read_mask`. False for a file that cannot be opened."""
    try:
        with open(path, "rb") as f:
            return _palette_head(f.read(32))
    except OSError:
        return False


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label map as an HxW uint8 array of class ids.

    PNG/BMP/TIFF greyscale files are returned as stored; GIF and palette PNG files go through
    their palette (see :func:`_palette_labels`); an RGB file is accepted only when its three
    channels are equal.

    Raises:
        DataError: missing, unreadable or truncated file; an RGB (colour) label image; values
            above 255.
    """
    data = _read_bytes(path)
    if _palette_head(data[:32].tobytes()):
        mask = _read_with_pillow(path)
    else:
        mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise _unreadable(path, "mask")
        _check_jpeg_complete(data, path)
    if mask.ndim == 3:
        channels = mask[..., :3]
        if not (channels == channels[..., :1]).all():
            raise DataError(
                f"Mask {str(path)!r} is a colour (RGB) image, not a label map. A label map is a "
                "greyscale PNG holding one class id per pixel (0, 1, 2, ...): convert the colours "
                "to class ids first."
            )
        mask = channels[..., 0]
    if mask.dtype != np.uint8:
        if mask.size and (int(mask.max()) > 255 or int(mask.min()) < 0):
            raise DataError(
                f"Mask {str(path)!r} holds values up to {int(mask.max())}; segkit reads class ids "
                "0..255. Save the label map as an 8-bit greyscale PNG."
            )
        mask = mask.astype(np.uint8)
    return np.ascontiguousarray(mask)


_BINARY_TABLE = np.arange(256, dtype=np.uint8)
_BINARY_TABLE[255] = 1


def map_255_to_1(mask: np.ndarray) -> np.ndarray:
    """A uint8 binary mask stored as 0/255 (or 0/1) as 0/1; other values are left as they are."""
    return cv2.LUT(np.ascontiguousarray(mask, dtype=np.uint8), _BINARY_TABLE)


def encode(path: str | Path, array: np.ndarray, params: Iterable[int] = ()) -> bytes:
    """Encode ``array`` (RGB or greyscale) in the format of ``path``'s suffix."""
    path = Path(path)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix.lower(), array, list(params))
    if not ok:
        raise DataError(f"OpenCV cannot encode {str(path)!r}; use a .png or .jpg name.")
    return buf.tobytes()


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write an HxWx3 RGB image of values 0..255 (JPEG at ``quality``, or PNG), atomically.

    Raises:
        ValueError: not HxWx3 (or HxW grey), or values outside 0..255.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"write_image({str(path)!r}): expected HxWx3 RGB, got {image.shape}.")
    if image.dtype.kind not in "ui":
        raise ValueError(
            f"write_image({str(path)!r}): expected integer values 0..255, got {image.dtype} "
            "(for a float image in 0..1, write (image * 255).round().astype('uint8'))."
        )
    if image.dtype != np.uint8:
        if image.size and (image.min() < 0 or image.max() > 255):
            raise ValueError(
                f"write_image({str(path)!r}): values {image.min()}..{image.max()} do not fit "
                "0..255; scale the image to uint8 first."
            )
        image = image.astype(np.uint8)
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if jpeg else []
    write_bytes_atomic(path, encode(path, image, params))


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write an HxW label map of class ids 0..255 as a greyscale PNG, atomically.

    Raises:
        ValueError: the array is not 2-D or holds values outside 0..255.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"write_mask({str(path)!r}): expected an HxW array, got {mask.shape}.")
    if mask.dtype != np.uint8 and mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(
            f"write_mask({str(path)!r}): values {mask.min()}..{mask.max()} do not fit 0..255."
        )
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"write_mask({str(path)!r}): masks are written as .png (lossless).")
    write_bytes_atomic(path, encode(path, mask.astype(np.uint8, copy=False)))
