"""Helpers shared by the engine tests (tiny data, tiny models), and the seeding/loader tests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from segkit.config import SchedulerConfig, TrainConfig
from segkit.engine import Trainer, make_loader, seed_everything, set_loader_epoch, worker_init_fn
from segkit.errors import ConfigError


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: on a small shared machine this is many times faster for tiny nets."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinySet(torch.utils.data.Dataset):
    """``n`` random 3 x 32 x 64 images whose label is a threshold of the first channel."""

    def __init__(self, n: int, classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 3, 32, 64, generator=g)
        self.y = (self.x[:, 0] * classes).long().clamp(max=classes - 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.x[i], "mask": self.y[i], "id": f"s{i}"}


def tiny_net(out: int = 3, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """Two convolutions, no batch norm (so batch splits do not change the maths)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    layers.append(nn.Conv2d(4, out, 1))
    return nn.Sequential(*layers)


class BinaryBCE(nn.Module):
    """BCE-with-logits on ``(N x 1 x H x W logits, N x H x W labels)``, segkit's loss contract."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target.float())


def make_trainer(
    out_dir: Path,
    model: nn.Module | None = None,
    n_train: int = 8,
    n_val: int = 4,
    batch_size: int = 2,
    classes: int = 3,
    lr: float = 1e-2,
    optimizer: torch.optim.Optimizer | None = None,
    loss: nn.Module | None = None,
    scheduler: SchedulerConfig | None = None,
    shuffle: bool = True,
    hooks: list | None = None,
    full_config: dict | None = None,
    class_names: list[str] | None = None,
    **train: Any,
) -> Trainer:
    """A Trainer on :class:`TinySet` data; ``train`` overrides :class:`TrainConfig` fields."""
    model = model if model is not None else tiny_net(classes)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    data_classes = 2 if classes == 1 else classes
    train.setdefault("progress", False)
    train.setdefault("preview", 0)
    train.setdefault("epochs", 2)
    cfg = TrainConfig(out_dir=str(out_dir), **train)
    return Trainer(
        model,
        loss if loss is not None else nn.CrossEntropyLoss(),
        opt,
        make_loader(TinySet(n_train, data_classes, seed=0), batch_size, shuffle=shuffle),
        make_loader(TinySet(n_val, data_classes, seed=1), batch_size, shuffle=False),
        cfg=cfg,
        scheduler_cfg=scheduler or SchedulerConfig(name="none"),
        hooks=hooks,
        full_config=full_config,
        class_names=class_names,
    )


# ------------------------------------------------------------------ seeding and loaders


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_torch():
    seed_everything(3)
    first = _draws()
    seed_everything(3)
    assert _draws() == first
    seed_everything(4)
    assert _draws() != first


def test_loader_order_depends_only_on_seed_and_epoch():
    data = TinySet(10)

    def order(loader, epoch):
        set_loader_epoch(loader, epoch, seed=7)
        return [i for b in loader for i in b["id"]]

    a = make_loader(data, 3, shuffle=True, seed=7)
    b = make_loader(data, 3, shuffle=True, seed=7)
    assert order(a, 0) == order(b, 0)
    assert order(a, 1) == order(b, 1)
    assert order(a, 0) != order(a, 1)
    assert sorted(order(a, 2)) == sorted(f"s{i}" for i in range(10))


class _NumpyDraw(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> float:
        return float(np.random.rand())


def test_workers_are_seeded_reproducibly_and_differently():
    def draws(seed):
        loader = make_loader(_NumpyDraw(), 1, shuffle=False, num_workers=2, seed=seed)
        set_loader_epoch(loader, 0, seed)
        return [float(x) for x in loader]

    first = draws(5)
    assert first == draws(5)
    # worker 0 serves samples 0 and 2, worker 1 samples 1 and 3: their streams differ
    assert first[0] != first[1]
    assert draws(6) != first


def test_worker_init_fn_outside_a_worker_seeds_globals():
    torch.manual_seed(11)
    worker_init_fn(0)
    a = np.random.rand()
    torch.manual_seed(11)
    worker_init_fn(0)
    assert np.random.rand() == a


class _Recorder:
    def __init__(self) -> None:
        self.seeds: list[int] = []

    def set_random_seed(self, seed: int) -> None:
        self.seeds.append(seed)


def test_augmentation_pipeline_is_reseeded_each_epoch():
    data = TinySet(4)
    data.transform = _Recorder()
    loader = make_loader(data, 2, shuffle=True, seed=3)
    set_loader_epoch(loader, 0, 3)
    set_loader_epoch(loader, 5, 3)
    assert data.transform.seeds == [3, 8]


@pytest.mark.parametrize(("batch_size", "workers"), [(0, 0), (2, -1)])
def test_make_loader_rejects_bad_sizes(batch_size, workers):
    with pytest.raises(ConfigError, match="must be"):
        make_loader(TinySet(2), batch_size, shuffle=False, num_workers=workers)
