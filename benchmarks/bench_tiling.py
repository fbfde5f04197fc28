"""Sliding-window prediction of large images against the model alone, and its memory.

Speed: one ``--size`` x ``--size`` uint8 image predicted by ``Predictor.labels`` with
``tile``/``overlap`` (windows normalised as they are batched, Gaussian blending, each
finished band turned into labels), against the model alone on the same pixels: the image
pre-cut into non-overlapping normalised ``tile`` x ``tile`` windows, ``model(x)`` under
``inference_mode`` in batches of the same size. Sides alternate in rounds after a warm-up;
the paired median ratio is reported (with overlap 0.25 the windows cover about 1.8 times
the image's pixels, so a ratio near 0.55 means blending costs little).

Memory: each of ``--memory-sizes`` is predicted in a fresh process; reported are its peak
resident memory above what the process held before predicting (the peak is reset after the
model, the image and a one-window warm-up are in place), the uint8 input plus label
map that any prediction must hold, and the largest float tensor any torch op returned (one
band of windows, not the image). ``--memory-scale 0.5`` measures a model trained on crops at
half scale instead (``spec.options["crop"]``: its ``tile`` windows cover ``2 * tile`` image
pixels, each resized to ``tile`` for the model and its probabilities back).

The model is a from-scratch U-Net (``--base-channels``), random weights: speed and memory do
not depend on what it learned.

Run: ``python benchmarks/bench_tiling.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import (
    alternate,
    emit,
    median,
    option,
    paired_ratio,
    parse_args,
    peak_rss_mib,
    reset_peak_rss,
)
from torch.utils._python_dispatch import TorchDispatchMode

from segkit.inference import PredictOptions, Predictor, normalize
from segkit.models import build_model
from segkit.models.windows import window_span


class LargestFloat(TorchDispatchMode):
    """Bytes of the largest floating-point tensor any torch op returns while active."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def _model(base: int, tile: int = 512, scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(arch="unet", classes=1, base_channels=base).eval()
    if scale != 1.0:  # as if trained on tile x tile crops at that scale
        model.spec.options["crop"] = {"size": tile, "scale": scale, "overlap": 0.25}
    return model


def _image(size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _windows(image: np.ndarray, tile: int, mean, std) -> torch.Tensor:
    """The image cut into non-overlapping ``tile`` windows, normalised (the model-only side)."""
    x = torch.from_numpy(image)
    h, w = image.shape[:2]
    crops = [x[y : y + tile, c : c + tile] for y in range(0, h, tile) for c in range(0, w, tile)]
    return normalize(torch.stack(crops), mean, std)


def memory_child(size: int, tile: int, batch: int, base: int, scale: float) -> None:
    """Predict one ``size``^2 image in this fresh process; print its memory figures as JSON."""
    model = _model(base, tile, scale)
    predictor = Predictor(model, PredictOptions(tile=tile, batch_size=batch), "cpu")
    image = _image(size)
    span = window_span(tile, scale)  # one window's image pixels
    predictor.labels(image[:span, :span].copy())  # warm-up: kernels, one window
    reset = reset_peak_rss()  # the peak of loading the model and making the image is not counted
    before = peak_rss_mib()
    with LargestFloat() as seen:
        labels = predictor.labels(image)
    after = peak_rss_mib()
    print(
        json.dumps(
            {
                "size": size,
                "scale": scale,
                "peak_rss_above_start_mib": round(after - before, 1),
                "peak_reset": reset,  # False: the peak includes loading (no /proc/self/clear_refs)
                "input_plus_labels_mib": round((image.nbytes + labels.nbytes) / 2**20, 1),
                "largest_float_tensor_mib": round(seen.largest / 2**20, 2),
            }
        )
    )


def main() -> None:
    args = parse_args(
        "tiled prediction vs the model alone, and peak memory by image size",
        size=(int, 4096, "side of the square image timed"),
        tile=(int, 512, "window side"),
        overlap=(float, 0.25, "fraction of a window neighbours share"),
        batch=(int, 8, "windows per model call"),
        rounds=(int, 3, "timed rounds per side"),
        base_channels=(int, 8, "U-Net width"),
        memory_sizes=(str, "2048,8192", "image sides whose memory is measured"),
        memory_scale=(float, 1.0, "crop scale of the model whose memory is measured"),
        memory_child=(int, None, "internal: measure one size in this process"),
    )
    tile, batch = option(args, "tile", 64), option(args, "batch", 4)
    base = option(args, "base_channels", 4)
    if args.memory_child:
        memory_child(args.memory_child, tile, batch, base, option(args, "memory_scale", 1.0))
        return
    size, rounds = option(args, "size", 256), option(args, "rounds", 1)
    overlap = option(args, "overlap", 0.25)
    model = _model(base)
    image = _image(size)
    predictor = Predictor(model, PredictOptions(tile=tile, overlap=overlap, batch_size=batch))
    mean, std = model.spec.mean, model.spec.std
    windows = _windows(image, tile, mean, std)

    def tiled() -> float:
        start = time.perf_counter()
        predictor.labels(image)
        return 1.0 / (time.perf_counter() - start)

    def model_alone() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in windows.split(batch):
                model(x)
        return 1.0 / (time.perf_counter() - start)

    sides = {"tiled": tiled, "model_only": model_alone}
    alternate(sides, 1)  # warm-up
    rates = alternate(sides, rounds)
    memory = []
    for side in str(option(args, "memory_sizes", "128,512")).split(","):
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", side]
        command += ["--tile", str(tile), "--batch", str(batch), "--base-channels", str(base)]
        command += ["--memory-scale", str(option(args, "memory_scale", 1.0))]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        memory.append(json.loads(done.stdout.strip().splitlines()[-1]))
    emit(
        "tiling",
        {
            "image": f"{size}x{size}",
            "tile": tile,
            "overlap": overlap,
            "windows_per_call": batch,
            "model": f"unet base_channels={base}, 1 class",
            "tiled_images_per_s": median(rates["tiled"]),
            "model_only_images_per_s": median(rates["model_only"]),
            "ratio_tiled_to_model_only": paired_ratio(rates, "tiled", "model_only"),
            "memory": memory,
        },
    )


if __name__ == "__main__":
    main()
