"""Streaming image files through a model: read a batch, predict it, hand each image to writers.

On the CPU the phases take turns, each spread over the cores (a thread pool reads a batch, the
model runs, the pool post-processes it): threads working beside the model would stall its
OpenMP threads (a parallel region waits for its slowest thread). On a GPU a thread reads the
next batch while the model runs, and with ``num_workers`` a ``DataLoader``'s processes read.
At most about ``2 * batch_size + writers`` finished images wait to be written, so memory stays
flat however many images there are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit._signals import SigtermAsInterrupt
from segkit.errors import DataError, Interrupted, option
from segkit.inference.inputs import (
    ImageFiles,
    close_batches,
    collate_images,
    pooled_batches,
    prefetch,
)
from segkit.inference.options import PredictOptions
from segkit.inference.outputs import ImageWriter, Outputs

logger = logging.getLogger(__name__)


@dataclass
class FileStream:
    """One run over image files: batches in, one writer job per image out, in input order.

    Attributes:
        files: the images, read and resized for the model.
        options: the run's options (batch size, workers, writers, skip_bad, progress).
        probs: normalised ``N x H x W x 3`` uint8 batch on the device -> ``N x C x h x w``.
        writer: post-processes and writes one image (runs in the writer threads).
        results: finished images, in input order, and the RLE CSV.
        device: the model's device.
        per_call: images per model call (1 in windows: an image's windows are the batch).
    """

    files: ImageFiles
    options: PredictOptions
    probs: Callable[[torch.Tensor], np.ndarray]
    writer: ImageWriter
    results: Outputs
    device: torch.device
    per_call: int = 1
    skipped: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Predict every file; an interrupt becomes :class:`~segkit.errors.Interrupted`."""
        from tqdm.auto import tqdm

        opts, total = self.options, len(self.files)
        per_call = self.per_call
        in_turn = self.device.type == "cpu" and opts.num_workers == 0
        bar = tqdm(total=total, disable=not opts.progress, unit="img")
        batches: Any = None
        signals, done = SigtermAsInterrupt(), False
        try:
            with signals, ThreadPoolExecutor(opts.writers) as pool:
                batches = self._batches(per_call, pool, in_turn)
                for batch in batches:
                    self._predict(batch, pool)
                    self.results.drain(keep=0 if in_turn else 2 * opts.batch_size + opts.writers)
                    bar.update(len(batch["index"]) + len(batch["errors"]))
                self.results.drain()
            done = True
        except KeyboardInterrupt:
            message = self.results.stopped_message(total, signals.signum)
            raise Interrupted(message, signals.signum) from None
        finally:
            close_batches(batches)
            bar.close()
            self.results.close(complete=done)

    def _batches(self, per_call: int, pool: ThreadPoolExecutor, in_turn: bool) -> Any:
        if in_turn:
            return pooled_batches(self.files, per_call, pool)
        loader = torch.utils.data.DataLoader(
            self.files,
            batch_size=per_call,
            num_workers=self.options.num_workers,
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader) if self.options.num_workers else prefetch(loader)

    def _predict(self, batch: dict[str, Any], pool: ThreadPoolExecutor) -> None:
        """Predict one collated batch (its same-shape groups) and queue the outputs."""
        paths = self.files.paths
        for index, message in batch["errors"]:
            if not self.options.skip_bad:
                raise DataError(f"{message} (Or pass {option('skip_bad')} to skip such images.)")
            logger.warning("skipped %s", message)
            self.skipped.append(str(paths[index]))
        queued = []
        for positions, images in batch["groups"]:
            probs = self.probs(images.to(self.device, non_blocking=True))
            for j, p in enumerate(positions):
                path: Path = paths[batch["index"][p]]
                future = pool.submit(self.writer, probs[j], path, batch["size"][p])
                queued.append((p, path, future))
        for _, path, future in sorted(queued, key=lambda q: q[0]):  # input order, not by shape
            self.results.pending.append((path, future))
