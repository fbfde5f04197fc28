"""Inputs of prediction: find image files, decode them at reduced size, batch, read ahead,
normalise on the model's device.

Images stream one file per item, so memory stays flat however many images there are.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.data.bands import BandReader
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    check_pixels,
    header_size,
    list_files,
    read_resized,
)
from segkit.data.resize import resize_for_model
from segkit.errors import DataError

#: a data set folder that holds each sample's files side by side names its photo
#: ``<name>_image.*`` (Helen's release: ``_image.jpg`` + ``_label.png`` + ``_viz.jpg``)
IMAGE_TAG = "_image"


def sample_images(files: list[Path], folder: Path) -> list[Path]:
    """The photos among ``files`` of ``folder``: all of them, unless the folder keeps each
    sample's files side by side as ``<name>_image.*`` beside ``<name>_<other>.*`` (labels,
    visualisations), where only the ``_image`` files are photos (with a warning naming the rest).
    """
    bases = {p.stem[: -len(IMAGE_TAG)] for p in files if p.stem.endswith(IMAGE_TAG)}
    others = [
        p for p in files if not p.stem.endswith(IMAGE_TAG) and p.stem.rpartition("_")[0] in bases
    ]
    if not others:
        return files
    kinds = sorted({p.stem.rpartition("_")[2] for p in others})
    example = f"*_{others[0].stem.rpartition('_')[2]}{others[0].suffix}"
    warnings.warn(
        f"{str(folder)!r} holds a data set's files side by side: predicting its "
        f"{len(files) - len(others)} *{IMAGE_TAG} image(s), not the {len(others)} "
        f"{'/'.join('_' + k for k in kinds)} file(s) beside them. Pass those files (e.g. "
        f"{str(folder / example)!r}) to predict them.",
        stacklevel=2,
    )
    return [p for p in files if p not in set(others)]


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """The image files named by ``inputs`` (files, or folders searched non-recursively), sorted.

    A file named twice (directly and through its folder, say) is kept once, where first named.

    Raises:
        FileNotFoundError: an input does not exist.
        DataError: a folder holds no image files.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = [p for p in list_files(path, IMAGE_EXTENSIONS) if p.is_file()]
            if not images:
                inside = (path / "images").is_dir()
                hint = f" It holds images/: pass {str(path / 'images')!r}." if inside else ""
                raise DataError(
                    f"No images found in folder {str(path)!r} (looked for "
                    f"{', '.join(IMAGE_EXTENSIONS)}). Pass image files or a folder that holds "
                    f"them.{hint}"
                )
            found.extend(sample_images(images, path))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(
                f"Input {str(path)!r} does not exist. Pass image files or folders of images."
            )
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def read_for_model(
    path: str | Path,
    size: int | None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    mode: str = "squash",
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an RGB image resized to ``size`` x ``size`` (``None``: as it is) and its original
    size.

    ``mode`` is training's ``data.resize`` (:mod:`segkit.data.resize`): ``longest_side_pad``
    gives the aspect-kept image padded to ``size x size``, ``shortest_side_crop`` the whole
    aspect-kept image whose shortest side is ``size``.

    A JPEG at least twice as large as ``size`` is decoded at 1/2, 1/4 or 1/8 scale (much
    faster) before an area resize (:func:`segkit.data.io.read_resized`). EXIF orientation is
    ignored, so the label map lines up with the stored pixel grid. An image whose header claims
    more than ``max_pixels`` pixels is refused before decoding (None: no limit of segkit's own).

    Raises:
        DataError: the file is missing, not an image, corrupt, truncated or too large (names
            the file).
    """
    return read_resized(path, size, max_pixels=max_pixels, mode=mode)


def read_bands_for_model(
    path: str | Path,
    size: int | None,
    reader: BandReader,
    channels: int,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    mode: str = "squash",
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`read_for_model` for a model trained on bands: ``H x W x channels`` float32 on
    the input scale (:class:`~segkit.data.bands.BandReader`), resized as training did.

    Raises:
        DataError: unreadable, too large, or another band count than ``channels``.
    """
    if max_pixels is not None and Path(path).is_file():  # else the reader names what is wrong
        check_pixels(path, header_size(np.fromfile(path, np.uint8, count=64), path), max_pixels)
    image = reader.read(path, channels, trained=True)
    return resize_for_model(image, size, mode), image.shape[:2]


class ImageFiles(torch.utils.data.Dataset):
    """One image file per item, read and resized for a model (only the paths are held).

    Items are ``{"image": HxWx3 uint8 tensor, "index": i, "size": (h, w)}`` with the original
    size, or ``{"index": i, "error": message}`` for an unreadable file so that the caller
    decides whether to fail or skip. Images travel as uint8 (4x less to copy to a GPU) and
    are normalised on the model's device by :func:`normalize`. ``mode``: training's
    ``data.resize`` (:func:`read_for_model`).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int | None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        mode: str = "squash",
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.size, self.max_pixels, self.mode = size, max_pixels, mode

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """The image at ``path`` for the model and its original ``(height, width)``."""
        return read_for_model(path, self.size, self.max_pixels, self.mode)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            image, size = self.read(self.paths[index])
        except DataError as exc:
            return {"index": index, "error": str(exc)}
        return {"image": torch.from_numpy(image), "index": index, "size": size}


class BandFiles(ImageFiles):
    """:class:`ImageFiles` for a model trained on bands: items hold ``H x W x channels``
    float32 images on the input scale (:func:`read_bands_for_model`)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        size: int | None,
        reader: BandReader,
        channels: int,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        mode: str = "squash",
    ) -> None:
        super().__init__(paths, size, max_pixels, mode)
        self.reader, self.channels = reader, channels

    def read(self, path: Path) -> tuple[np.ndarray, tuple[int, int]]:
        """The bands at ``path`` for the model and their original ``(height, width)``."""
        args = (self.max_pixels, self.mode)
        return read_bands_for_model(path, self.size, self.reader, self.channels, *args)


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Group readable images by shape into stacks and list the unreadable ones.

    ``groups`` holds ``(positions, N x H x W x 3 tensor)`` pairs, ``positions`` pointing into
    ``index`` and ``size``. Images of different shapes (``size=None``) are never padded to a
    common shape, so an image's prediction does not depend on the others in its batch.
    """
    good = [it for it in items if "error" not in it]
    shapes: dict[tuple[int, ...], list[int]] = {}
    for position, item in enumerate(good):
        shapes.setdefault(tuple(item["image"].shape), []).append(position)
    return {
        "index": [it["index"] for it in good],
        "size": [it["size"] for it in good],
        "groups": [(pos, torch.stack([good[p]["image"] for p in pos])) for pos in shapes.values()],
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
    }


def pooled_batches(
    files: ImageFiles, batch_size: int, pool: ThreadPoolExecutor
) -> Iterator[dict[str, Any]]:
    """Collated batches of ``files``, each batch's images read by ``pool``'s threads at once.

    OpenCV decodes without holding the GIL, so the threads spread a batch over the cores.
    """
    for start in range(0, len(files), batch_size):
        indices = range(start, min(start + batch_size, len(files)))
        yield collate_images(list(pool.map(files.__getitem__, indices)))


def close_batches(batches: Any) -> None:
    """Stop what produces ``batches`` now, also after an error: a generator (and the thread
    behind :func:`prefetch`), or a ``DataLoader`` iterator's worker processes.
    """
    close = getattr(batches, "close", None)
    if close is not None:
        close()
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``N x H x W x C`` uint8 -> ``N x C x H x W`` float32 ``(x / 255 - mean) / std``; a
    float batch (bands on their input scale) gives ``(x - mean) / std``."""
    unit = 255.0 if images.dtype == torch.uint8 else 1.0
    shift = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * unit
    scale = 1.0 / (unit * torch.tensor(std, device=images.device).view(1, -1, 1, 1))
    x = images.permute(0, 3, 1, 2).float().contiguous()
    return x.sub_(shift).mul_(scale)


def prefetch(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """Yield ``items`` while a background thread reads up to ``depth`` of them ahead.

    Decoding (OpenCV releases the GIL) then overlaps the model. An exception raised while
    reading is raised here, at the item where it happened; stopping early stops the thread.
    """
    done = object()
    ahead: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[Any, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((done, exc))

    reader = threading.Thread(target=read, name="segkit-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item, error = ahead.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        reader.join()
