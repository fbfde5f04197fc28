"""Prediction runtimes and precisions: their labels against fp32's, and their speed.

Labels: for each ``--labels name:checkpoint:folder`` set, up to ``--images`` photos of the
folder are predicted by ``Predictor.labels`` with each variant (``torch/fp32``, the exact
reference; ``torch/bf16``: channels_last under bfloat16 autocast; ``onnxruntime/fp32``;
``onnxruntime/int8`` where ``segkit export --int8`` made the checkpoint's int8 model;
``default``: ``runtime="auto"``, ``precision="auto"``); reported is the share of pixels whose
label differs from the reference's, in percent.

Speed (``speed``): one ``--size`` x ``--size`` photo (``--photo`` resized, else a smooth
random image) predicted by ``Predictor.labels`` with ``--tile`` (overlap 0.25, Gaussian
blending, labels band by band) with each variant, against the bare fp32 model (contiguous,
``inference_mode``) on the same windows (the same boxes, pre-cut and normalised, in batches
of the same size). Sides alternate in rounds after a warm-up; the paired median ratio
bare/variant is reported (above 1: faster than the bare model).

Whole command (``command``): ``python -m segkit predict --tile`` of that photo, saved as a
JPEG, timed from the process's start to its end (start-up, reading, windows, writing the
label PNG), with the default runtime: ``default_first`` with no ONNX export cached (the
export included), ``default_cached`` with it, and ``torch_fp32`` (``--runtime torch
--precision fp32``); each against the bare fp32 model on the same windows in this process,
alternating.

The model is ``--checkpoint`` (default: a random smp ResNet18 U-Net, binary). Run:
``python benchmarks/bench_runtimes.py --checkpoint best.pt --photo photo.jpg --labels
carvana:carvana.pt:photos/`` (``--parts speed,command`` picks parts; ``--quick``: a smoke run
of the speed and labels parts).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import alternate, carvana_model, emit, median, option, paired_ratio, parse_args

from segkit.engine.checkpoint import save_checkpoint
from segkit.inference import PredictOptions, Predictor, find_images, normalize
from segkit.inference.runtimes import onnx_cache_path, onnxruntime_installed
from segkit.models.windows import window_boxes

VARIANTS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def variants(checkpoint: Path) -> list[tuple[str, str]]:
    """The variants this machine can run: onnxruntime where installed, int8 where
    ``segkit export --int8`` made the checkpoint's int8 model; and the default."""
    ort = onnxruntime_installed()
    int8 = ort and onnx_cache_path(checkpoint, "int8").is_file()
    found = [v for v in VARIANTS if v[0] == "torch" or (ort and (v[1] != "int8" or int8))]
    return [*found, ("auto", "auto")]


def _key(runtime: str, precision: str) -> str:
    return "default" if runtime == "auto" else f"{runtime}/{precision}"


def predictors(checkpoint: Path, **options) -> dict[str, Predictor]:
    return {
        _key(rt, pr): Predictor(
            checkpoint, PredictOptions(runtime=rt, precision=pr, **options), "cpu"
        )
        for rt, pr in variants(checkpoint)
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
    default = runs["default"].recipe
    return {
        "set": name,
        "images": len(paths),
        "default_is": f"{default.runtime}/{default.precision}",
        "differing_pixels_percent": percent,
    }


def photo(size: int, source: str) -> np.ndarray:
    """A ``size`` x ``size`` RGB photo: ``source`` resized, else smooth random pixels."""
    if source:
        image = cv2.cvtColor(cv2.imread(source), cv2.COLOR_BGR2RGB)
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    coarse = np.random.default_rng(0).integers(0, 256, (size // 64, size // 64, 3), np.uint8)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_LINEAR)


def bare_model(predictor: Predictor, image: np.ndarray, tile: int, batch: int):
    """Seconds of the bare fp32 model over ``image``'s windows (pre-cut and normalised)."""
    height, width = image.shape[:2]
    boxes = window_boxes(height, width, tile, 0.25)
    x = torch.from_numpy(image)
    windows = torch.stack([x[y : y + h, c : c + w] for y, c, h, w in boxes])
    windows = normalize(windows, predictor.recipe.mean, predictor.recipe.std)
    model = predictor.model

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(windows), batch):
                model(windows[i : i + batch])
        return time.perf_counter() - start

    return bare, len(boxes)


def speed(checkpoint: Path, image: np.ndarray, tile: int, batch: int, rounds: int) -> dict:
    """Seconds of each variant and of the bare fp32 model on the same windows."""
    runs = predictors(checkpoint, tile=tile, batch_size=batch)
    runs.pop("default")  # one of the others, named in the labels part
    bare, count = bare_model(runs["torch/fp32"], image, tile, batch)

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
        "windows": count,
        "seconds": {k: median(v) for k, v in seconds.items()},
        "speedup_vs_bare_fp32": speedup,
    }


def whole_command(
    checkpoint: Path,
    image: np.ndarray,
    tile: int,
    batch: int,
    rounds: int,
    work: Path,
) -> dict:
    """Seconds of whole ``segkit predict`` processes against the bare fp32 model."""
    path = work / "photo.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    reference = Predictor(checkpoint, PredictOptions(runtime="torch", precision="fp32"), "cpu")
    bare, count = bare_model(reference, image, tile, batch)
    cached = onnx_cache_path(checkpoint)

    def command(*extra: str, first: bool = False):
        argv = [sys.executable, "-m", "segkit", "predict", "--checkpoint", str(checkpoint)]
        argv += [str(path), "--out", str(work / "out"), "--tile", str(tile), "--overwrite"]
        argv += ["--batch-size", str(batch), "--device", "cpu", *extra]

        def timed() -> float:
            if first:
                cached.unlink(missing_ok=True)
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            return time.perf_counter() - start

        return timed

    sides = {
        "bare_fp32_model": bare,
        "default_first": command(first=True),
        "default_cached": command(),
        "torch_fp32": command("--runtime", "torch", "--precision", "fp32"),
    }
    bare()  # warm-up of this process's kernels; each command is a process of its own
    seconds = alternate(sides, rounds)
    names = [k for k in sides if k != "bare_fp32_model"]
    speedup = {k: round(1 / paired_ratio(seconds, k, "bare_fp32_model"), 3) for k in names}
    labels = cv2.imread(str(work / "out" / "photo.png"), cv2.IMREAD_UNCHANGED)
    return {
        "windows": count,
        "label_png": list(labels.shape),
        "seconds": {k: median(v) for k, v in seconds.items()},
        "speedup_vs_bare_fp32": speedup,
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        checkpoint=(str, None, "segkit checkpoint (default: a random smp ResNet18 U-Net)"),
        labels=(str, "", "name:checkpoint:folder[,name:checkpoint:folder...] label sets"),
        images=(int, 100, "photos per label set"),
        photo=(str, "", "a photo to resize to --size (default: smooth random pixels)"),
        size=(int, 4096, "side of the tiled image"),
        tile=(int, 512, "window side"),
        batch=(int, 8, "windows per model call"),
        rounds=(int, 2, "timed rounds per side"),
        parts=(str, "speed,command,labels", "which parts to run"),
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
        checkpoint = Path(checkpoint)
        parts = option(args, "parts", "speed,labels").split(",")  # quick: no 5 s processes
        image = photo(option(args, "size", 256), option(args, "photo", ""))
        sizes = (option(args, "tile", 128), option(args, "batch", 8), option(args, "rounds", 1))
        figures: dict = {}
        if "speed" in parts:
            figures["speed"] = speed(checkpoint, image, *sizes)
        if "command" in parts:
            figures["command"] = whole_command(checkpoint, image, *sizes, Path(tmp))
        sets = [s.split(":") for s in option(args, "labels", "").split(",") if s]
        count = option(args, "images", 2)
        if "labels" in parts:
            figures["labels"] = [label_differences(n, Path(c), Path(f), count) for n, c, f in sets]
    emit("runtimes", figures)


if __name__ == "__main__":
    main()
