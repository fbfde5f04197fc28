"""Prediction runtimes and precisions: their labels against fp32's, and their speed.

Labels: for each ``--labels name:checkpoint:folder`` set, up to ``--images`` photos of the
folder are predicted by ``Predictor.labels`` with each variant (``torch/fp32``, the exact
reference; ``torch/bf16``: channels_last under bfloat16 autocast; ``onnxruntime/fp32``);
reported is the share of pixels whose label differs from the reference's, in percent.

Speed: one ``--size`` x ``--size`` photo-like uint8 image predicted by ``Predictor.labels``
with ``--tile`` (overlap 0.25, Gaussian blending, labels band by band) with each variant,
against the bare fp32 model (contiguous, ``inference_mode``) on the same windows (the same
boxes, pre-cut and normalised, in batches of the same size). Sides alternate in rounds after
a warm-up; the paired median ratio bare/variant is reported (above 1: faster than the bare
model). The model is ``--checkpoint`` (default: a random smp ResNet18 U-Net, binary).

Run: ``python benchmarks/bench_runtimes.py --checkpoint best.pt --labels
carvana:carvana.pt:photos/`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import alternate, carvana_model, emit, median, option, paired_ratio, parse_args

from segkit.engine.checkpoint import save_checkpoint
from segkit.inference import PredictOptions, Predictor, find_images, normalize
from segkit.models.windows import window_boxes

VARIANTS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"))


def variants() -> list[tuple[str, str]]:
    """The variants this machine can run (onnxruntime only where installed)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return [v for v in VARIANTS if v[0] != "onnxruntime"]
    return list(VARIANTS)


def predictors(checkpoint: Path, **options) -> dict[str, Predictor]:
    return {
        f"{rt}/{pr}": Predictor(
            checkpoint, PredictOptions(runtime=rt, precision=pr, **options), "cpu"
        )
        for rt, pr in variants()
    }


def label_differences(name: str, checkpoint: Path, folder: Path, count: int) -> dict:
    """Percent of pixels each variant labels otherwise than torch/fp32, over the photos."""
    runs = predictors(checkpoint)
    paths = find_images([folder])[:count]
    differ = dict.fromkeys(runs, 0)
    pixels = 0
    for path in paths:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        ref = runs["torch/fp32"].labels(image)
        pixels += ref.size
        for key, predictor in runs.items():
            differ[key] += int((predictor.labels(image) != ref).sum())
    percent = {k: round(100 * v / pixels, 4) for k, v in differ.items() if k != "torch/fp32"}
    return {"set": name, "images": len(paths), "differing_pixels_percent": percent}


def speed(checkpoint: Path, size: int, tile: int, batch: int, rounds: int) -> dict:
    """Seconds of each variant and of the bare fp32 model on the same windows."""
    runs = predictors(checkpoint, tile=tile, batch_size=batch)
    ref = runs["torch/fp32"]
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (size // 64, size // 64, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)  # smooth, photo-like
    boxes = window_boxes(size, size, tile, 0.25)
    x = torch.from_numpy(image)
    windows = torch.stack([x[y : y + h, c : c + w] for y, c, h, w in boxes])
    windows = normalize(windows, ref.recipe.mean, ref.recipe.std)
    model = ref.model

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(windows), batch):
                model(windows[i : i + batch])
        return time.perf_counter() - start

    def run(predictor: Predictor):
        def timed() -> float:
            start = time.perf_counter()
            predictor.labels(image)
            return time.perf_counter() - start

        return timed

    sides = {"bare_fp32_model": bare, **{k: run(p) for k, p in runs.items()}}
    for fn in sides.values():  # warm-up (ONNX sessions, oneDNN kernels)
        fn()
    seconds = alternate(sides, rounds)
    speedup = {k: round(1 / paired_ratio(seconds, k, "bare_fp32_model"), 3) for k in runs}
    return {
        "windows": len(boxes),
        "seconds": {k: median(v) for k, v in seconds.items()},
        "speedup_vs_bare_fp32": speedup,
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        checkpoint=(str, None, "segkit checkpoint (default: a random smp ResNet18 U-Net)"),
        labels=(str, "", "name:checkpoint:folder[,name:checkpoint:folder...] label sets"),
        images=(int, 100, "photos per label set"),
        size=(int, 4096, "side of the tiled image"),
        tile=(int, 512, "window side"),
        batch=(int, 8, "windows per model call"),
        rounds=(int, 2, "timed rounds per side"),
    )
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = option(args, "checkpoint", None)
        if checkpoint is None:
            model = carvana_model()
            checkpoint = Path(tmp) / "model.pt"
            save_checkpoint(
                checkpoint, {"model": model.state_dict(), "model_spec": model.spec.to_dict()}
            )
        figures = {
            "speed": speed(
                Path(checkpoint),
                option(args, "size", 256),
                option(args, "tile", 128),
                option(args, "batch", 8),
                option(args, "rounds", 1),
            )
        }
        sets = [s.split(":") for s in option(args, "labels", "").split(",") if s]
        count = option(args, "images", 2)
        figures["labels"] = [label_differences(n, Path(c), Path(f), count) for n, c, f in sets]
    emit("runtimes", figures)


if __name__ == "__main__":
    main()
