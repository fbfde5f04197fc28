"""Shared helpers of the benchmark scripts: machine description, timing, JSON output."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import segkit._env  # noqa: F401


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version and GPU (if any) of this machine."""
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (since ``reset_peak_rss``), in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``. ``ru_maxrss`` is not used there: a child
    process inherits its parent's peak through ``execve``, so a child started by a large
    parent reported the parent's peak, not its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start ``peak_rss_mib`` afresh from the current resident memory (Linux); False elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def alternate(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each side's timed function in turn, ``rounds`` times (A B A B ...), return the rates."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            rates[name].append(fn())
    return rates


def median(values: list[float]) -> float:
    """The median, rounded for printing."""
    return round(statistics.median(values), 3)


def paired_ratio(rates: dict[str, list[float]], side: str, reference: str) -> float:
    """Median over rounds of ``side / reference``, each round's pair measured back to back.

    Pairing cancels the slow drift of a shared machine that medians taken per side keep.
    """
    return median([a / b for a, b in zip(rates[side], rates[reference])])


def timed(fn: Callable[[], Any]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def emit(name: str, figures: dict[str, Any]) -> None:
    """Print the benchmark's single JSON line."""
    print(json.dumps({"benchmark": name, **figures, "machine": machine()}))


def parse_args(description: str, **options: tuple[type, Any, str]) -> argparse.Namespace:
    """``--quick`` (a smoke run of seconds) plus the script's own ``--name value`` options.

    Args:
        description: what the benchmark measures.
        options: ``name=(type, default, help)``; the default applies to the full run and
            ``--quick`` scripts pick their own small values when the option is left out.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    for name, (kind, _, text) in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)
    args = parser.parse_args()
    args.defaults = {name: default for name, (_, default, _) in options.items()}
    return args


def option(args: argparse.Namespace, name: str, quick: Any) -> Any:
    """The value of ``--name``: as given, else ``quick`` under ``--quick``, else the default."""
    value = getattr(args, name)
    if value is not None:
        return value
    return quick if args.quick else args.defaults[name]


@contextmanager
def workdir() -> Iterator[Path]:
    """A temporary folder, removed at the end (errors included)."""
    path = Path(tempfile.mkdtemp(prefix="segkit-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def quiet() -> Iterator[None]:
    """Send what segkit prints (per-epoch lines) to nowhere: a script prints one JSON line."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def carvana_images(root: Path, cars: int, size: tuple[int, int], views: int = 16) -> Path:
    """Synthetic Carvana photos + GIF masks in the Kaggle layout under ``root``."""
    from segkit.data import synth_carvana

    return synth_carvana(root, cars=cars, views=views, size=size)


def carvana_model(seed: int = 0) -> Any:
    """The Carvana example's network: smp U-Net with a ResNet18 encoder, 1 output, random init."""
    import torch

    from segkit.models import build_model

    torch.manual_seed(seed)
    return build_model(arch="smp.Unet", encoder="resnet18", classes=1, encoder_weights=None)
