"""Training speed by setting: fp32, channels_last, bf16 + channels_last, + torch.compile.

segkit's ``Trainer`` on the Carvana example (smp U-Net ResNet18, 128x128, batch 16, prepared
PNGs through ``CarvanaDataset`` + transforms + ``make_loader``), once per variant and round,
variants alternating, on the GPU (``--device cuda``) or the CPU (``--device cpu``; ``auto``,
the default, is the GPU when there is one):

- ``fp32``: ``amp=off``, ``channels_last=false``, no compile (segkit's CPU default before
  ``channels_last: auto``);
- ``cl``: ``channels_last=true`` alone;
- ``bf16_cl``: ``amp=bf16`` + ``channels_last``;
- ``bf16_cl_compile``: the same plus ``compile``.

Reported per variant: training images/s (``history.csv``, median over the epochs after the
first, which holds compilation, cuDNN autotuning and worker start-up), its paired ratio to
``fp32`` and the data-loader wait per step (time the loop spent waiting for the next batch),
plus the rate at which the loader alone delivers batches and what ``amp: auto`` and
``channels_last: auto`` resolve to on the device. When the loader alone is much faster than
training and the wait per step is small against the step time, the loader keeps up.

Run: ``python benchmarks/bench_speed.py`` (``--quick`` for a smoke run of fp32 and cl;
``--variants fp32,cl`` for a subset).
"""

from __future__ import annotations

import copy
import csv
import os
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from _common import (
    alternate,
    carvana_images,
    carvana_model,
    emit,
    median,
    option,
    paired_ratio,
    parse_args,
    quiet,
    workdir,
)

from segkit.engine.loaders import release_workers

BATCH = 16
VARIANTS = {
    "fp32": {"amp": "off", "channels_last": False, "compile": False},
    "cl": {"amp": "off", "channels_last": True, "compile": False},
    "bf16_cl": {"amp": "bf16", "channels_last": True, "compile": False},
    "bf16_cl_compile": {"amp": "bf16", "channels_last": True, "compile": True},
}


class TimedLoader:
    """A DataLoader that records how long each ``next()`` waited (everything else passes through)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.waits: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            start = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - start)
            yield batch


def train_variant(
    model: torch.nn.Module, dataset: Any, variant: dict[str, Any], epochs: int, workers: int,
    device: str, out_dir: Path,
) -> dict[str, float]:  # fmt: skip
    """One fit of the Trainer; steady-state images/s and loader wait per step (epochs 2..)."""
    from segkit.config import SchedulerConfig, TrainConfig
    from segkit.engine import Trainer, TrainerOptions, make_loader
    from segkit.losses import build_loss

    loader = TimedLoader(make_loader(dataset, BATCH, shuffle=True, num_workers=workers))
    cfg = TrainConfig(epochs=epochs, device=device, monitor="train_loss", out_dir=str(out_dir),
                      progress=False, **variant)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on CPU warns that it is slow
        trainer = Trainer(model, build_loss("soft_dice"), optimizer, loader, None, cfg,
                          TrainerOptions(SchedulerConfig("none")))  # fmt: skip
        trainer.fit()
    release_workers(loader.loader)
    with open(out_dir / "history.csv", newline="") as fh:
        rates = [float(r["images_per_s"]) for r in csv.DictReader(fh)]
    steps = len(loader)
    steady_waits = loader.waits[steps:] if epochs > 1 else loader.waits
    return {
        "images_per_s": statistics.median(rates[1:] if epochs > 1 else rates),
        "loader_wait_ms_per_step": 1000 * statistics.median(steady_waits),
        "loader_wait_ms_mean": 1000 * statistics.mean(steady_waits),
    }


def loader_only(dataset: Any, workers: int, epochs: int) -> float:
    """Images per second the loader delivers with nothing else running (after one epoch)."""
    from segkit.engine import make_loader

    loader = make_loader(dataset, BATCH, shuffle=True, num_workers=workers)
    for _ in loader:
        pass
    start = time.perf_counter()
    for _ in range(epochs):
        for _ in loader:
            pass
    rate = len(dataset) * epochs / (time.perf_counter() - start)
    release_workers(loader)
    return rate


def bench_model(arch: str, base_channels: int) -> tuple[torch.nn.Module, str]:
    """The Carvana example's network (``smp``) or the from-scratch U-Net (``unet``), 1 class,
    and its description."""
    if arch == "smp":
        return carvana_model(), "smp.Unet resnet18, 1 class"
    if arch != "unet":
        raise SystemExit(f"--arch: smp or unet, not {arch!r}")
    from segkit.models import build_model

    torch.manual_seed(0)
    model = build_model(arch="unet", classes=1, base_channels=base_channels)
    return model, f"unet base_channels={base_channels}, 1 class"


def resolve_device(name: str) -> str:
    """``auto``: ``cuda`` when a CUDA device is available, else ``cpu``."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def auto_settings(device: str) -> dict[str, Any]:
    """What ``train.amp: auto`` and ``train.channels_last: auto`` resolve to on ``device``."""
    from segkit.engine.runtime import resolve_amp, resolve_channels_last

    where = torch.device(device)
    dtype = resolve_amp("auto", where)
    return {
        "amp": str(dtype).replace("torch.", "") if dtype is not None else "off",
        "channels_last": resolve_channels_last("auto", where),
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        device=(str, "auto", "auto (cuda when available, else cpu), cuda or cpu"),
        variants=(str, ",".join(VARIANTS), "variants to run, comma-separated"),
        cars=(int, 16, "synthetic cars, 16 views each (16 = 256 images per epoch)"),
        epochs=(int, 5, "epochs per fit (the first is left out of the rates)"),
        rounds=(int, 2, "rounds of the variants"),
        workers=(int, min(8, os.cpu_count() or 1), "DataLoader workers"),
        size=(int, 128, "square training size"),
        arch=(
            str,
            "smp",
            "smp: the Carvana example's ResNet18 U-Net; unet: the from-scratch U-Net",
        ),
        base_channels=(int, 64, "width of the from-scratch U-Net (Helen's tutorial: 64)"),
    )
    device = resolve_device(option(args, "device", "auto"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        emit("speed", {"skipped": "no CUDA device"})
        return
    names = [v.strip() for v in option(args, "variants", "fp32,cl").split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or "fp32" not in names:
        raise SystemExit(f"--variants: pick from {', '.join(VARIANTS)}, fp32 included")
    from segkit.config import AugmentConfig
    from segkit.data import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        CarvanaDataset,
        build_transforms,
        prepare_carvana,
    )

    cars, epochs = option(args, "cars", 1), option(args, "epochs", 2)
    rounds, workers = option(args, "rounds", 1), option(args, "workers", 0)
    size = option(args, "size", 32)
    views = 4 if args.quick else 16
    variants = {name: VARIANTS[name] for name in names}
    with workdir() as tmp:
        carvana_images(tmp / "raw", cars, (3 * size, 2 * size), views=views)
        prepare_carvana(tmp / "raw", tmp / "prepared", size=size)
        transform = build_transforms(
            AugmentConfig(hflip=0.5), size, True, IMAGENET_MEAN, IMAGENET_STD
        )
        dataset = CarvanaDataset(tmp / "prepared", transform=transform)
        initial, described = bench_model(
            option(args, "arch", "smp"), option(args, "base_channels", 8)
        )
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        errors: dict[str, str] = {}
        runs = {"n": 0}

        def side(name: str) -> float:
            runs["n"] += 1
            if name in errors:
                return float("nan")
            try:
                result = train_variant(copy.deepcopy(initial), dataset, variants[name], epochs,
                                       workers, device, tmp / f"run{runs['n']}")  # fmt: skip
            except Exception as exc:  # noqa: BLE001 (compile may be unavailable; report why)
                errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                return float("nan")
            results[name].append(result)
            return result["images_per_s"]

        rates = alternate({name: (lambda n=name: side(n)) for name in variants}, rounds)
        delivered = loader_only(dataset, workers, max(1, epochs - 1))

    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(torch.device(device))
        if device.startswith("cuda")
        else device,
        "images_per_epoch": len(dataset),
        "model": described,
        "image_size": size,
        "batch": BATCH,
        "num_workers": workers,
        "epochs_per_fit": epochs,
        "rounds": rounds,
        "loader_only_images_per_s": round(delivered, 1),
        "auto_resolves_to": auto_settings(device),
    }
    if device.startswith("cuda"):  # PyTorch's defaults: TF32 for convolutions, not for matmuls
        figures["fp32_conv_tf32"] = torch.backends.cudnn.allow_tf32
        figures["fp32_matmul_tf32"] = torch.backends.cuda.matmul.allow_tf32
    steps = -(-len(dataset) // BATCH)
    for name, runs_of in results.items():
        if not runs_of:
            figures[name] = {"error": errors.get(name, "no run")}
            continue
        rate = median([r["images_per_s"] for r in runs_of])
        figures[name] = {
            "images_per_s": rate,
            "ms_per_step": round(1000 * len(dataset) / rate / steps, 2),
            "loader_wait_ms_per_step": median([r["loader_wait_ms_per_step"] for r in runs_of]),
            "loader_wait_ms_mean": median([r["loader_wait_ms_mean"] for r in runs_of]),
        }
    for name in variants:
        if results[name] and results["fp32"]:  # per round, each variant against that round's fp32
            figures[name]["speedup_vs_fp32"] = paired_ratio(rates, name, "fp32")
    if {"bf16_cl", "bf16_cl_compile"} <= set(variants):
        plain, compiled = (figures[k].get("images_per_s") for k in ("bf16_cl", "bf16_cl_compile"))
        figures["compile_helps"] = bool(plain and compiled and compiled > plain * 1.02)
    emit("speed", figures)


if __name__ == "__main__":
    main()
