"""int8 models: a checkpoint's ONNX export statically quantised, calibrated on its training data.

:func:`export_int8` picks ``calib`` images of the training part of the checkpoint's data set
(the images training learnt from, validation ones held out as training held them out), turns
each into what prediction feeds the model (the Predictor's recipe: size, resize, mean/std, the
model's divisor; a model run in windows: one window batch per image, its middle one), and
calibrates onnxruntime's static quantisation on them (:func:`segkit.export.quantize_onnx`).
The int8 model is written beside the checkpoint (``<stem>.<key>.int8.onnx``), where
``--precision int8`` finds it. Its speed and accuracy against fp32: ``docs/benchmarks.md``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.errors import ConfigError, DataError, option

#: training images calibrated on by default
CALIBRATION_IMAGES = 64


class _Recorder:
    """In a Predictor's runtime's place: keeps each batch the model would be fed and returns
    zeros of the logits' shape (the model itself need not run)."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.inputs = spec, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().float().cpu().numpy())
        return x.new_zeros((x.shape[0], self.spec.classes, *x.shape[2:]))


def _check_calib(calib: Any) -> int:
    if isinstance(calib, bool) or not isinstance(calib, int) or calib < 1:
        raise ConfigError(
            f"{option('calib', calib)}: the number of training images to calibrate on must be "
            f"a positive whole number (default {CALIBRATION_IMAGES})."
        )
    return calib


def _training_set(cfg: Any, calib: int, checkpoint: str | Path) -> Any:
    """The training part of the checkpoint's data set, checked to hold ``calib`` images."""
    from segkit.api.data import build_datasets

    train_set, _ = build_datasets(cfg)
    if calib > len(train_set):
        raise DataError(
            f"{option('calib', calib)}: the training part of {str(cfg.data.root)!r} (the data "
            f"{str(checkpoint)!r} was trained on) holds {len(train_set)} images; calibrate on "
            f"at most {len(train_set)}, or point --data at a larger copy."
        )
    return train_set


def calibration_inputs(predictor: Any, dataset: Any, count: int, seed: int = 0) -> list:
    """What ``predictor`` feeds its model for ``count`` images of ``dataset`` (drawn with
    ``seed``), as float32 arrays: a ``1 x C x H x W`` batch per image (the data set's items
    are then the normalised tensors of the recipe's size), or, in windows (items as read),
    the image's middle window batch."""
    recorder = _Recorder(predictor.spec)
    runtime, predictor.runtime = predictor.runtime, recorder
    picked = sorted(int(i) for i in np.random.default_rng(seed).permutation(len(dataset))[:count])
    inputs = []
    try:
        with predictor.evaluating():
            for index in picked:
                recorder.inputs = []
                image = torch.as_tensor(dataset[index]["image"])
                if predictor.recipe.windows is not None:
                    for _ in predictor.window_bands(image):
                        pass
                else:
                    predictor.model_probs(image[None])
                inputs.append(recorder.inputs[len(recorder.inputs) // 2])
    finally:
        predictor.runtime = runtime
    return inputs


def export_int8(
    checkpoint: str | Path,
    out: str | Path | None = None,
    *,
    calib: int = CALIBRATION_IMAGES,
    root: str | Path | None = None,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Quantise a checkpoint's model to int8 for ``--precision int8`` (onnxruntime).

    Args:
        checkpoint: a segkit ``best.pt`` / ``last.pt`` (or a Hub folder).
        out: also write the int8 model here (for deployment); it is always written beside
            the checkpoint (:func:`~segkit.inference.runtimes.onnx_cache_path`), where
            prediction finds it.
        calib: training images to calibrate on (:func:`calibration_inputs`).
        root: the data set's folder (default: the one training recorded).
        per_channel: int8 weights with a scale per output channel (else one per tensor).

    Returns:
        ``path`` (beside the checkpoint), ``out`` (or None), ``calibration`` (images),
        ``seconds``.

    Raises:
        ImportError: onnx or onnxruntime is not installed (names the extra).
        ConfigError: a ``calib`` that is not a positive whole number.
        DataError: the data set is missing or holds fewer than ``calib`` training images.
        CheckpointError: an unreadable checkpoint.
    """
    from segkit.api.evaluation import _evaluation_config, _scoring_transform
    from segkit.engine.checkpoint import load_checkpoint, model_from_state
    from segkit.export import _require, export_onnx, quantize_onnx
    from segkit.inference import PredictOptions, Predictor
    from segkit.inference.runtimes import onnx_cache_path

    for module in ("onnx", "onnxruntime"):
        _require(module, "segkit export --int8")
    calib = _check_calib(calib)
    start = time.perf_counter()
    state = load_checkpoint(checkpoint)
    cfg = _evaluation_config(state, root)
    model = model_from_state(state, checkpoint)
    predictor = Predictor(model, PredictOptions(runtime="torch", precision="fp32"), "cpu")
    dataset = _training_set(cfg, calib, checkpoint)
    windows = predictor.recipe.windows is not None
    dataset.transform = None if windows else _scoring_transform(cfg, dataset, predictor.recipe)
    inputs = calibration_inputs(predictor, dataset, calib)
    target = onnx_cache_path(checkpoint, "int8")
    with tempfile.TemporaryDirectory(prefix="segkit-int8-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx")["path"]
        quantize_onnx(fp32, target, inputs, per_channel=per_channel)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, out)
    return {
        "path": str(target),
        "out": None if out is None else str(out),
        "calibration": calib,
        "seconds": time.perf_counter() - start,
    }
