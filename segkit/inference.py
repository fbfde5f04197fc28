"""Prediction: stream images through a model and write label maps at their own resolution.

The pipeline per image: read (a reduced-size JPEG decode when the model input is much
smaller), resize to the training size, normalise, pad to the model's divisor, model
(optionally flip TTA), crop, resize the *probabilities* back to the original size with
bilinear interpolation, argmax / threshold, write ``<stem>.png`` (class ids), optionally
``<stem>_overlay.jpg`` and a Kaggle ``img,rle_mask`` row.

Images stream one file per item, so memory stays flat however many images there are. On
the CPU the phases take turns, each spread over the cores (a thread pool reads a batch, the
model runs, the pool post-processes it): threads working beside the model would stall its
OpenMP threads. On a GPU a thread reads the next batch while the model runs, and with
``num_workers`` a ``DataLoader``'s processes read.

Resizing back: bilinear on the probabilities is the accurate choice. A one-channel (binary)
model's probabilities are resized in 16-bit fixed point, which halves the memory traffic of a
float32 1918x1280 plane; for many classes at a large size the per-class planes cost more
(11 classes, 256 -> 2000x1500: about 50 ms against about 3 ms for nearest on the label map),
so ``resize_back="nearest"`` is offered. Speed against the model alone: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from segkit import viz
from segkit._signals import SigtermAsInterrupt
from segkit.data.io import (
    MAX_IMAGE_PIXELS,
    read_image,
    write_image,
    write_mask,
)
from segkit.data.meta import DatasetMeta
from segkit.errors import DataError, Interrupted, option
from segkit.inference_io import (
    ImageFiles,
    Outputs,
    check_outputs,
    close_batches,
    collate_images,
    find_images,
    flip_pairs_from_names,  # noqa: F401  (re-exported: part of segkit.inference's API)
    normalize,
    pooled_batches,
    prefetch,
    read_for_model,  # noqa: F401  (re-exported: part of segkit.inference's API)
)
from segkit.models.factory import crop, pad_to_divisor
from segkit.models.tta import flip_average

logger = logging.getLogger(__name__)


def _forward_probs(model: torch.nn.Module, x: torch.Tensor, binary: bool) -> torch.Tensor:
    padded, (h, w) = pad_to_divisor(x, model.spec.divisor or 1)
    logits = crop(model(padded), (h, w)).float()
    return torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)


def predict_proba(
    model: torch.nn.Module,
    x: torch.Tensor,
    tta: str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> torch.Tensor:
    """Class probabilities ``N x C x H x W`` for a normalised batch of any size.

    Binary models (one output channel) give the foreground probability (sigmoid), others a
    softmax. ``tta="flip"`` averages with the prediction on the mirrored batch, swapping the
    channels in ``flip_pairs`` back (left/right classes).
    """
    binary = model.spec.classes == 1
    if tta is None:
        return _forward_probs(model, x, binary)
    if tta != "flip":
        raise ValueError(f"Unknown tta {tta!r}; use None or 'flip'.")
    return flip_average(lambda batch: _forward_probs(model, batch, binary), x, flip_pairs)


def _windows(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def predict_tiled(
    model: torch.nn.Module,
    image: torch.Tensor,
    tile: int,
    overlap: float = 0.25,
    batch_size: int = 8,
    tta: str | None = None,
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> torch.Tensor:
    """Sliding-window probabilities ``C x H x W`` for one normalised ``3 x H x W`` image.

    Windows of ``tile`` x ``tile`` pixels (smaller where the image is) overlap by ``overlap``
    of a tile; where they overlap the probabilities are averaged.
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"Tile overlap must be in [0, 1), got {overlap}.")
    _, height, width = image.shape
    stride = max(1, int(round(tile * (1.0 - overlap))))
    boxes = [
        (y, x, min(tile, height), min(tile, width))
        for y in _windows(height, tile, stride)
        for x in _windows(width, tile, stride)
    ]
    out: torch.Tensor | None = None
    counts = torch.zeros((1, height, width), device=image.device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = torch.stack([image[:, y : y + h, x : x + w] for y, x, h, w in chunk])
        probs = predict_proba(model, batch, tta, flip_pairs)
        if out is None:
            out = torch.zeros((probs.shape[1], height, width), device=image.device)
        for (y, x, h, w), p in zip(chunk, probs):
            out[:, y : y + h, x : x + w] += p
            counts[:, y : y + h, x : x + w] += 1
    return out / counts


#: one-channel probabilities are resized as 16-bit fixed point: 0..1 -> 0..PROB_SCALE
PROB_SCALE = 65535


def _threshold_resized(plane: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    """``plane > threshold`` after a bilinear resize to ``size``, computed in 16-bit fixed point.

    A float32 1918x1280 intermediate is 9.8 MB of memory traffic per image; 16 bits halve it
    and OpenCV's 16-bit resize is faster (1.4 against 1.9 ms per image on 2 CPU cores, right
    after a model call). Rounding to 1/65535 can only flip pixels whose resized probability
    lies within about 2e-5 of the threshold (9 of 19.6 million pixels over 8 Carvana masks).
    """
    height, width = size
    if not 0.0 <= threshold < 1.0:  # all or nothing; no rounding question to ask
        return np.full(size, threshold < 0.0, dtype=np.uint8)
    fixed = (np.clip(plane, 0.0, 1.0) * PROB_SCALE + 0.5).astype(np.uint16)
    resized = cv2.resize(fixed, (width, height), interpolation=cv2.INTER_LINEAR)
    return (resized > int(threshold * PROB_SCALE)).view(np.uint8)


def probs_to_labels(
    probs: np.ndarray, size: tuple[int, int], threshold: float = 0.5, resize_back: str = "bilinear"
) -> np.ndarray:
    """An ``H x W`` uint8 label map at ``size`` from ``C x h x w`` probabilities.

    One channel is thresholded (foreground probability), several take the argmax.
    ``resize_back="bilinear"`` resizes the probabilities first (accurate; one channel in
    16-bit fixed point, see :func:`_threshold_resized`); ``"nearest"`` resizes the label map
    (pixel-centre nearest neighbour; faster for many classes). The argmax runs one class
    plane at a time, so no full-size ``C x H x W`` array is made.
    """
    height, width = size
    if len(probs) == 1 and resize_back == "bilinear" and probs.shape[1:] != (height, width):
        return _threshold_resized(probs[0], size, threshold)
    labels = best = None
    for c, plane in enumerate(probs):
        if resize_back == "bilinear" and plane.shape != (height, width):
            plane = cv2.resize(np.ascontiguousarray(plane), (width, height))
        if len(probs) == 1:
            labels = (plane > threshold).view(np.uint8)
        elif best is None:
            best, labels = plane.copy(), np.zeros(plane.shape, np.uint8)
        else:
            labels[plane > best] = c  # strict: ties keep the lower class, as argmax does
            np.maximum(best, plane, out=best)
    if labels.shape != (height, width):
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    return labels


@dataclass(frozen=True)
class _Job:
    """The settings one prediction run applies to every batch and image."""

    out_dir: Path
    classes: int
    threshold: float = 0.5
    resize_back: str = "bilinear"
    tta: str | None = None
    flip_pairs: Sequence[tuple[int, int]] = ()
    tile: int | None = None
    overlap: float = 0.25
    batch_size: int = 8
    overlay: bool = False
    save_masks: bool = True
    color: bool = False
    colors: np.ndarray | None = None  #: RGB per class (the data set's palette)
    rle_encode: Callable[[np.ndarray], str] | None = None

    def probs(self, model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        """``N x C x H x W`` probabilities of a normalised batch (one image when tiling)."""
        if self.tile:
            args = (self.tile, self.overlap, self.batch_size, self.tta, self.flip_pairs)
            return predict_tiled(model, x[0], *args)[None].cpu().numpy()
        return predict_proba(model, x, self.tta, self.flip_pairs).cpu().numpy()

    def finish(self, probs: np.ndarray, path: Path, size: tuple[int, int]) -> str | None:
        """Post-process one image (in a writer thread); returns its RLE when one is wanted."""
        labels = probs_to_labels(probs, size, self.threshold, self.resize_back)
        if self.save_masks:
            write_mask(self.out_dir / f"{path.stem}.png", labels)
        colors = self.colors
        if colors is None or len(colors) <= int(labels.max()):
            colors = viz.palette(max(self.classes, int(labels.max()) + 1))
        if self.color:
            write_image(self.out_dir / f"{path.stem}_color.png", viz.colorize(labels, colors))
        if self.overlay:
            image = read_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            blended = viz.overlay(image, labels, colors=colors)
            write_image(self.out_dir / f"{path.stem}_overlay.jpg", blended, quality=90)
        return self.rle_encode(labels) if self.rle_encode else None


def _palette(spec: Any) -> np.ndarray | None:
    """The class colours training recorded (``spec.meta["palette"]``), or None."""
    colors = (getattr(spec, "meta", None) or {}).get("palette")
    return np.asarray(colors, dtype=np.uint8).reshape(-1, 3) if colors else None


def load_model(
    checkpoint_or_model: str | Path | torch.nn.Module, device: str = "auto"
) -> tuple[torch.nn.Module, int | None]:
    """The model to predict with (on ``device``) and the square image size it was trained at.

    The size comes from ``spec.options["image_size"]``, else the checkpoint's
    ``config.data.image_size``; ``None`` when neither says.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable (names the file).
        TypeError: a module without a ``.spec``.
    """
    if isinstance(checkpoint_or_model, torch.nn.Module):
        model = checkpoint_or_model
        if getattr(model, "spec", None) is None:
            raise TypeError(
                f"{type(model).__name__} has no .spec describing its input; build a segkit model "
                "with segkit.models.build_model or pass a checkpoint path."
            )
        if device != "auto":
            model.to(device)
        return model, model.spec.options.get("image_size")
    from segkit.engine.checkpoint import load_checkpoint, model_from_checkpoint

    model = model_from_checkpoint(checkpoint_or_model, device=device)
    size = model.spec.options.get("image_size")
    if size is None:
        config = load_checkpoint(checkpoint_or_model).get("config") or {}
        size = (config.get("data") or {}).get("image_size")
    return model, size


@dataclass
class _Stream:
    """Runs the model over each batch and hands every image to the writer pool."""

    job: _Job
    model: torch.nn.Module
    paths: list[Path]
    pool: ThreadPoolExecutor
    results: Outputs
    skip_bad: bool
    mean_std: tuple[Sequence[float], Sequence[float]]
    skipped: list[str] = field(default_factory=list)

    def run(self, batch: dict[str, Any]) -> None:
        """Predict one collated batch (its same-shape groups) and queue the outputs."""
        for index, message in batch["errors"]:
            if not self.skip_bad:
                raise DataError(f"{message} (Or pass {option('skip_bad')} to skip such images.)")
            logger.warning("skipped %s", message)
            self.skipped.append(str(self.paths[index]))
        device = next(self.model.parameters()).device
        queued = []
        for positions, images in batch["groups"]:
            x = normalize(images.to(device, non_blocking=True), *self.mean_std)
            probs = self.job.probs(self.model, x)
            for j, p in enumerate(positions):
                path = self.paths[batch["index"][p]]
                future = self.pool.submit(self.job.finish, probs[j], path, batch["size"][p])
                queued.append((p, path, future))
        for _, path, future in sorted(queued, key=lambda q: q[0]):  # input order, not by shape
            self.results.pending.append((path, future))


def predict(
    checkpoint_or_model: str | Path | torch.nn.Module,
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str = "auto",
    overlay: bool = False,
    rle_csv: str | Path | None = None,
    tta: str | None = None,
    tile: int | None = None,
    threshold: float = 0.5,
    size: int | None = None,
    progress: bool = False,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
    overlap: float = 0.25,
    resize_back: str = "bilinear",
    save_masks: bool = True,
    skip_bad: bool = False,
    writers: int = 2,
    overwrite: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    color: bool = False,
) -> dict[str, Any]:
    """Predict label maps for image files or folders and write them at each input's resolution.

    Args:
        checkpoint_or_model: a segkit ``best.pt`` / ``last.pt``, or a model with a ``.spec``.
        inputs: image files and/or folders of images (not searched recursively).
        out_dir: where ``<stem>.png`` (class ids) and ``<stem>_overlay.jpg`` go.
        batch_size: images per model call (tiles per call when tiling).
        num_workers: DataLoader worker processes reading images. 0: on the CPU the
            ``writers`` threads read each batch before the model runs; on a GPU a thread reads
            the next batch while the model runs.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        overlay: also write a colour overlay per image.
        rle_csv: write a Kaggle ``img,rle_mask`` CSV here (two-class models only).
        tta: "flip" averages with the mirrored prediction (left/right classes swapped back).
        tile: predict at the original resolution in sliding windows of this size.
        threshold: foreground probability threshold of a one-channel (binary) model.
        size: square model input size; default the training size (``data.image_size``),
            else the original size padded to the model's divisor. Ignored when tiling.
        progress: show a progress bar.
        flip_pairs: class pairs swapped by ``tta="flip"``; default from left/right class names.
        overlap: fraction of a tile that neighbouring windows share.
        resize_back: "bilinear" (probabilities, accurate) or "nearest" (labels, faster).
        save_masks: write the label PNGs (False: only the RLE CSV / overlays).
        skip_bad: skip unreadable images (and those over ``max_pixels``) with a warning
            instead of failing.
        writers: threads that resize back, encode and write outputs (and read, see above).
        overwrite: replace output files (label PNGs, overlays, the RLE CSV) that exist already;
            without it they are refused before anything is written. Inputs are never replaced.
        max_pixels: refuse an image whose header claims more pixels, before decoding it
            (decompression-bomb guard; default about 179 million; None: no limit of segkit's
            own, OpenCV's 2**30 still applies).
        color: also write ``<stem>_color.png``, each class in the data set's colour (the
            palette recorded in the checkpoint, e.g. a colour-coded data set's class table).

    Returns:
        ``count`` (images predicted), ``outputs`` (label PNG paths), ``skipped``, ``rle_csv``,
        ``out_dir``, ``seconds`` and ``images_per_s``.

    Raises:
        Interrupted: SIGINT or SIGTERM stopped the run (a ``KeyboardInterrupt``); the outputs
            of finished images are kept, the RLE CSV is not written, no temporary file is left.
    """
    if batch_size < 1 or writers < 1:
        raise ValueError(f"batch_size and writers must be >= 1, got {batch_size} and {writers}.")
    if tta not in (None, "flip"):
        raise ValueError(f"Unknown tta {tta!r}; use 'flip' or leave it out.")
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}.")
    if resize_back not in ("bilinear", "nearest"):
        raise ValueError(f"Unknown resize_back {resize_back!r}; use 'bilinear' or 'nearest'.")
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not inputs:
        raise ValueError("No inputs given; pass image files or folders of images.")
    paths = find_images(inputs)
    given = checkpoint_or_model if isinstance(checkpoint_or_model, torch.nn.Module) else None
    home = next(given.parameters()).device if given is not None else None  # moved back after
    model, train_size = load_model(checkpoint_or_model, device)
    spec, dev = model.spec, next(model.parameters()).device
    if rle_csv is not None and spec.classes > 2:
        raise ValueError(
            f"An RLE CSV (rle_csv / --rle) holds binary masks, but this model predicts "
            f"{spec.classes} classes. Leave it out and use the label PNGs."
        )
    if tile is not None and tile < (spec.divisor or 1):
        raise ValueError(f"Tile size {tile} is smaller than the model's divisor {spec.divisor}.")
    if size is None and tile is None:
        size = train_size
    if flip_pairs is None:  # what training flipped (recorded in the spec), else from the names
        flip_pairs = DatasetMeta.from_dict(spec.meta or {}).pairs_for(spec.class_names or [])
    if tta == "flip":
        names = spec.class_names or [str(c) for c in range(spec.classes)]
        swapped = ", ".join(f"{names[a]}<->{names[b]}" for a, b in flip_pairs) or "none"
        logger.info("flip TTA swaps these classes back after mirroring: %s", swapped)
    out_dir = Path(out_dir)
    check_outputs(paths, out_dir, overlay, save_masks, rle_csv, overwrite, color)
    out_dir.mkdir(parents=True, exist_ok=True)
    encode = None
    if rle_csv is not None:
        from segkit.data.rle import rle_encode as encode
    job = _Job(
        out_dir=out_dir,
        classes=max(2, spec.classes),
        threshold=threshold,
        resize_back=resize_back,
        tta=tta,
        flip_pairs=flip_pairs,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        overlay=overlay,
        save_masks=save_masks,
        rle_encode=encode,
        color=color,
        colors=_palette(spec),
    )
    mean, std = spec.mean or (0.0, 0.0, 0.0), spec.std or (1.0, 1.0, 1.0)
    files = ImageFiles(paths, None if tile else size, max_pixels)
    per_call = 1 if tile else batch_size
    # On the CPU the model's threads already use every core, and reading or writing in other
    # threads at the same time stalls them (a parallel region waits for its slowest thread).
    # So there the phases take turns, each spread over the cores: read a batch with the pool,
    # run the model, post-process with the pool. Elsewhere reading runs ahead of the model.
    in_turn = dev.type == "cpu" and num_workers == 0
    loader = torch.utils.data.DataLoader(
        files,
        batch_size=per_call,
        num_workers=num_workers,
        collate_fn=collate_images,
        pin_memory=dev.type == "cuda",
    )
    from tqdm.auto import tqdm

    was_training, done = model.training, False
    model.eval()
    results = Outputs(rle_csv, out_dir, save_masks)
    start = time.perf_counter()
    bar = tqdm(total=len(paths), disable=not progress, unit="img")
    batches: Any = None
    signals = SigtermAsInterrupt()
    try:
        with signals, ThreadPoolExecutor(writers) as pool, torch.inference_mode():
            if in_turn:
                batches = pooled_batches(files, per_call, pool)
            else:
                batches = iter(loader) if num_workers else prefetch(loader)
            stream = _Stream(job, model, paths, pool, results, skip_bad, (mean, std))
            for batch in batches:
                stream.run(batch)
                results.drain(keep=0 if in_turn else 2 * batch_size + writers)
                bar.update(len(batch["index"]) + len(batch["errors"]))
            results.drain()
        done = True
    except KeyboardInterrupt:
        raise Interrupted(
            results.stopped_message(len(paths), signals.signum), signals.signum
        ) from None
    finally:
        close_batches(batches)
        bar.close()
        results.close(complete=done)
        model.train(was_training)
        if home is not None:
            model.to(home)  # a caller's model goes back where it was (e.g. mid-training, on a GPU)
    skipped = stream.skipped
    seconds = time.perf_counter() - start
    if skipped:
        logger.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    count = len(paths) - len(skipped)
    return {
        "count": count,
        "outputs": results.outputs,
        "skipped": skipped,
        "rle_csv": str(rle_csv) if rle_csv is not None else None,
        "out_dir": str(out_dir),
        "seconds": seconds,
        "images_per_s": count / seconds if seconds > 0 else 0.0,
    }
