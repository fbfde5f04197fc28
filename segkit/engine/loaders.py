"""Seeding and data loaders: one ``seed`` for Python, NumPy, torch and the loader workers."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segkit.errors import ConfigError, DataError


def worker_error(exc: BaseException) -> BaseException | None:
    """The exception a DataLoader worker raised, as it was raised there (None: not one).

    torch raises a worker's exception again in the main process with the worker's whole
    traceback as its message; a segkit error then reads as one line again, the same as with
    ``num_workers=0``.
    """
    text, kind = str(exc), type(exc)
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return None
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    marker = f"\n{name}: "
    at = text.rfind(marker)
    if at < 0:
        return None
    try:
        return kind(text[at + len(marker) :].rstrip("\n"))
    except Exception:  # an exception type that does not take one message
        return None


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally make torch deterministic.

    Args:
        seed: the seed.
        deterministic: use deterministic algorithms (warn where none exists) and switch off
            cuDNN autotuning; otherwise cuDNN may autotune (faster on fixed-size inputs).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def _transform_of(dataset: Any) -> Any:
    """The albumentations pipeline of a data set (looking through ``Subset``-like wrappers)."""
    for _ in range(4):
        transform = getattr(dataset, "transform", None)
        if transform is not None:
            return transform
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def seed_transform(dataset: Any, seed: int) -> None:
    """Reseed a data set's albumentations pipeline, which ignores the global RNGs."""
    transform = _transform_of(dataset)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed % 2**32)


def worker_init_fn(worker_id: int) -> None:
    """Seed a DataLoader worker from its torch seed (different per worker and per epoch).

    torch gives each worker ``base_seed + worker_id``, with ``base_seed`` drawn from the loader's
    generator; this passes it on to Python, NumPy and the data set's albumentations pipeline.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        seed_transform(info.dataset, seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    *,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    persistent_workers: bool = False,
    sampler: Any = None,
) -> DataLoader:
    """A DataLoader seeded for reproducible shuffling (the Trainer reseeds it every epoch).

    Args:
        dataset: a map-style data set yielding ``{"image", "mask", ...}`` dicts.
        batch_size: samples per batch.
        shuffle: shuffle every epoch (training) or keep the order (validation).
        num_workers: worker processes.
        seed: seed of the shuffling generator and of the workers.
        distributed: shard the data over the ``torchrun`` ranks, padded for training
            (``shuffle``) and without repeats for evaluation (the Trainer shards by itself too).
        drop_last: drop the last incomplete batch.
        persistent_workers: keep the worker processes between epochs. Epochs start faster
            (most where workers are spawned, as on macOS and Windows), but workers are then
            seeded once, not per epoch, so a resumed run's augmentations and order differ from
            an uninterrupted one. New workers every epoch (the default) are seeded from
            ``seed`` and the epoch alone, whatever ``num_workers`` is.
        sampler: draws the training images instead of ``shuffle`` (such as
            :class:`~segkit.data.balance.RareClassSampler`); under ``distributed`` its
            ``shard(rank, world_size)`` gives each process its share.

    Raises:
        ConfigError: a non-positive batch size or a negative worker count.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be 0 or more, got {num_workers}.")
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=worker_init_fn,
        generator=generator,
        persistent_workers=persistent_workers and num_workers > 0,
    )
    if distributed:
        from segkit.engine.distributed import setup, shard_loader

        loader = shard_loader(loader, setup(), seed, train=shuffle)
    return loader


def set_loader_epoch(loader: Any, epoch: int, seed: int) -> None:
    """Make epoch ``epoch``'s shuffling depend only on ``seed`` and ``epoch``.

    Calls ``sampler.set_epoch`` where the sampler has one, reseeds the loader's generator, and
    reseeds the data set's augmentation pipeline when there are no workers (workers reseed
    themselves through :func:`worker_init_fn`).
    """
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    generator = getattr(loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed + epoch)
    if getattr(loader, "num_workers", 0) == 0:
        seed_transform(getattr(loader, "dataset", None), seed + epoch)


def release_workers(loader: Any) -> None:
    """Stop a loader's persistent worker processes now (a later epoch simply starts new ones).

    Left to the garbage collector, torch's worker shutdown waits several seconds per worker,
    at whatever moment the collection happens to run.
    """
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def has_no_batches(loader: Any) -> bool:
    """True for a loader with a length of 0 (loaders without a length are not checked)."""
    try:
        return len(loader) == 0
    except TypeError:
        return False


def check_loaders(train_batches: int, val_loader: Any, monitor: str, dist: Any) -> None:
    """Refuse loaders a run cannot train or validate with, before the first epoch.

    Raises:
        DataError: the training loader (or, on any process, the validation loader) is empty.
        ConfigError: ``monitor`` is a validation value and there is no validation loader.
    """
    import segkit.engine.distributed as D

    if train_batches == 0:
        raise DataError(
            "The training loader yields no batches: the data set is empty or smaller than "
            "the batch size with drop_last. Add data or lower the batch size."
        )
    if val_loader is None and not monitor.startswith("train_"):
        raise ConfigError(
            f"train.monitor={monitor!r} needs a validation loader; pass val_loader or "
            "monitor train_loss."
        )
    if val_loader is not None and D.any_rank(has_no_batches(val_loader), dist):
        # found now, not after a first epoch (and under torchrun no rank waits for another)
        raise DataError(
            "The validation loader yields no batches on at least one process: the "
            "validation set is empty or has fewer samples than processes. Add validation "
            "data (data.val_fraction), run fewer processes, or monitor train_loss without "
            "a val_loader."
        )
