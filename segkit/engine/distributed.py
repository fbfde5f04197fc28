"""Distributed training under ``torchrun``: process group, samplers, reductions, rank-0 helpers.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the
:class:`~segkit.engine.Trainer` then calls :func:`setup` (NCCL on GPU, gloo on CPU), wraps the
model in DistributedDataParallel and shards its loaders. Without those variables everything
here is a no-op for a single process.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from segkit.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when the environment says this is one of several ``torchrun`` processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def elastic_restart() -> int:
    """How often torchrun's elastic agent has restarted the workers: 0 on a first start
    (and outside torchrun), N on the N-th restart (``TORCHELASTIC_RESTART_COUNT``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)


def elastic_run_id() -> str | None:
    """torchrun's rendezvous id (``TORCHELASTIC_RUN_ID``): the same for every worker and
    every restart of one launch. None outside torchrun and for torchrun's default ``none``
    (a fixed ``--master-port`` without ``--rdzv-id``), which does not tell launches apart."""
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return None if run in ("", "none") else run


def process_rank() -> int:
    """This process's rank under ``torchrun`` (0 otherwise), from the environment."""
    return int(os.environ["RANK"]) if launched_by_torchrun() else 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Turn a config device ("auto", "cpu", "cuda", "cuda:1") into a ``torch.device``.

    Raises:
        ConfigError: CUDA was asked for but is not available, or the name is not a device.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"train.device={name!r} but CUDA is not available on this machine; "
                "use train.device=cpu (or auto)."
            )
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup(device: str = "auto") -> DistInfo:
    """Join the ``torchrun`` process group when launched by it, else describe one process.

    Args:
        device: the configured device; under torchrun CUDA means ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistInfo(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, **_restart_store(rank, world))
        atexit.register(cleanup)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def _restart_store(rank: int, world: int) -> dict[str, Any]:
    """A restarted worker's own key space in the launcher's store (nothing on a first start).

    torchrun's agent can keep one store for every restart of its workers, and what a dead
    worker wrote there (its gloo address) may be read by the restarted ones before the new
    worker replaces it: they then fail with "Connection refused". Under a prefix per restart
    no restart sees an earlier one's keys.
    """
    restart = elastic_restart()
    if restart == 0:
        return {}
    store, _, _ = next(dist.rendezvous("env://", rank, world))
    prefixed = dist.PrefixStore(f"segkit-restart-{restart}", store)
    return {"store": prefixed, "rank": rank, "world_size": world}


_state = {"finished": False}


def mark_finished(finished: bool) -> None:
    """Record whether the last training run ended normally on this rank (see :func:`cleanup`)."""
    _state["finished"] = finished


def cleanup() -> None:
    """Leave the process group; registered to run at exit by :func:`setup`.

    After a normal finish the ranks first wait for each other: a rank that tears the group
    down while another still uses it can abort. After an error nothing waits (another rank
    may never arrive); the launcher ends the remaining processes.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if _state["finished"]:
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place, and return it (through the device for NCCL)."""
    if not info.enabled:
        return tensor
    if info.device.type == "cuda" and tensor.device.type != "cuda":
        moved = tensor.to(info.device)
        dist.all_reduce(moved)
        tensor.copy_(moved.cpu())
    else:
        dist.all_reduce(tensor)
    return tensor


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_buffers(module: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (e.g. BatchNorm running statistics); no-op alone."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on at least one rank."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index from ``rank``, in order, without padding.

    Unlike :class:`~torch.utils.data.DistributedSampler` no sample is repeated, so metrics
    summed over ranks equal those of one process evaluating the whole set.
    """

    def __init__(self, dataset_len: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, dataset_len, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard_loader(loader: Any, info: DistInfo, seed: int = 0, train: bool = False) -> Any:
    """The same loader reading only this rank's part of the data.

    A training loader gets a :class:`DistributedSampler` (shuffling if the loader shuffled;
    padded so that every rank runs the same number of steps; set its epoch each epoch), or
    its sampler's own ``shard(rank, world_size)`` where it has one (a weighted sampler). An
    evaluation loader gets a :class:`ShardSampler` (no sample twice). Loaders that are not
    DataLoaders, or already sharded, are returned unchanged.
    """
    if not info.enabled or not isinstance(loader, DataLoader):
        return loader
    sampler = loader.sampler
    done = (DistributedSampler,) if train else (DistributedSampler, ShardSampler)
    if isinstance(sampler, done) or loader.batch_sampler is None:
        return loader
    if train and callable(getattr(sampler, "shard", None)):
        new: Sampler = sampler.shard(info.rank, info.world_size)
    elif train:
        new = DistributedSampler(
            loader.dataset,
            info.world_size,
            info.rank,
            shuffle=isinstance(sampler, RandomSampler),
            seed=seed,
            drop_last=loader.drop_last,
        )
    else:
        new = ShardSampler(len(loader.dataset), info.rank, info.world_size)
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=new,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
    )
