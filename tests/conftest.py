"""Fixtures shared by the test modules: tiny data, tiny models, a Trainer factory.

Test modules take these as fixtures (``def test_x(make_trainer, tiny_set): ...``) rather
than importing them, so that the suite also runs under ``--import-mode=importlib``. Scripts
that the tests start in a subprocess put ``tests/`` on ``sys.path`` and import
:func:`build_trainer`, :class:`TinySet` and :func:`build_tiny_net` from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from segkit.config import HooksConfig, SchedulerConfig, TrainConfig
from segkit.engine import Trainer, TrainerOptions, make_loader


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


def build_tiny_net(out: int = 3, dropout: float = 0.0, seed: int = 0) -> nn.Module:
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


def build_trainer(
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
    hooks_cfg: HooksConfig | None = None,
    **train: Any,
) -> Trainer:
    """A Trainer on :class:`TinySet` data; ``train`` overrides :class:`TrainConfig` fields
    (``hooks_cfg`` is ``train.hooks``: ``hooks`` are Hook objects)."""
    model = model if model is not None else build_tiny_net(classes)
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    data_classes = 2 if classes == 1 else classes
    train.setdefault("progress", False)
    train.setdefault("preview", 0)
    train.setdefault("epochs", 2)
    # full precision whatever the CPU: ``amp: auto`` is bf16 only where the CPU has native
    # bfloat16, and these tests compare the loop's numbers with exact float32 computations
    train.setdefault("amp", "off")
    if hooks_cfg is not None:
        train["hooks"] = hooks_cfg
    cfg = TrainConfig(out_dir=str(out_dir), **train)
    return Trainer(
        model,
        loss if loss is not None else nn.CrossEntropyLoss(),
        opt,
        make_loader(TinySet(n_train, data_classes, seed=0), batch_size, shuffle=shuffle),
        make_loader(TinySet(n_val, data_classes, seed=1), batch_size, shuffle=False),
        cfg=cfg,
        options=TrainerOptions(
            scheduler=scheduler or SchedulerConfig(name="none"),
            full_config=full_config,
            class_names=class_names,
        ),
        hooks=hooks,
    )


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: on a small shared machine this is many times faster for tiny nets."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def torch_runtime(request, monkeypatch):
    """Prediction's ``runtime="auto"`` means torch here, unless a test is marked
    ``default_runtime``: on the CPU it would mean onnxruntime, and each test's new checkpoint
    would be exported to ONNX first (about a second each). Tests of runtimes name theirs."""
    if request.node.get_closest_marker("default_runtime") is None:
        from segkit.inference.runtimes import AUTO_RUNTIME

        monkeypatch.setitem(AUTO_RUNTIME, "cpu", "torch")


@pytest.fixture(autouse=True, scope="session")
def python_sigint_handler():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, even when the suite was started in
    the background, where the shell makes SIGINT ignored (the signal tests rely on it)."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="session")
def tiny_set() -> type[TinySet]:
    """The :class:`TinySet` class: ``tiny_set(n, classes=3, seed=0)``."""
    return TinySet


@pytest.fixture(scope="session")
def tiny_net():
    """``tiny_net(out=3, dropout=0.0, seed=0)``: a two-convolution network."""
    return build_tiny_net


@pytest.fixture(scope="session")
def binary_bce() -> BinaryBCE:
    """A binary BCE loss on segkit's ``(logits, labels)`` contract."""
    return BinaryBCE()


@pytest.fixture(scope="session")
def make_trainer():
    """``make_trainer(out_dir, **options)``: a Trainer on tiny data (see :func:`build_trainer`)."""
    return build_trainer
