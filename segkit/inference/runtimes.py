"""Prediction runtimes: how a model's forward pass is run, behind one call.

A runtime is called like the model (``runtime(x)``: logits ``N x C x H x W`` of a normalised
``N x in_channels x H x W`` batch whose sides are multiples of the model's divisor) and has
the model's ``.spec``, so the window engine (:mod:`segkit.models.windows`), test-time
augmentation and the whole-image path use it in the model's place.

- ``torch`` / ``fp32``: the model itself, as it is (the exact reference).
- ``torch`` / ``bf16``: the model channels_last under bfloat16 autocast (logits returned in
  float32), where the device runs bfloat16 natively.
- ``onnxruntime`` / ``fp32``: the model exported to ONNX (dynamic batch, height, width) and
  run by onnxruntime's CPU provider. The ``.onnx`` file is cached beside the checkpoint,
  named by the checkpoint's content (``<stem>.<sha256[:16]>.onnx``), so a changed checkpoint
  is exported again; a model given as a module is exported into a temporary folder.

``precision="auto"`` is :data:`AUTO_PRECISION`'s choice for the device: the fastest measured
whose labels differ from fp32's on at most 0.1% of pixels of real photos
(``docs/benchmarks.md``, prediction runtimes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from segkit.errors import ConfigError, option

logger = logging.getLogger(__name__)

#: the runtimes a prediction may run on
RUNTIMES = ("torch", "onnxruntime")

#: the precisions a prediction may ask for
PRECISIONS = ("auto", "fp32", "bf16")

#: what ``precision="auto"`` means per device type where the device runs bfloat16 natively
#: (measured: docs/benchmarks.md, prediction runtimes); elsewhere it is fp32
AUTO_PRECISION = {"cpu": "fp32", "cuda": "fp32"}


def check_runtime(runtime: str) -> str:
    """``runtime`` if it names a prediction runtime (:data:`RUNTIMES`).

    Raises:
        ConfigError: otherwise.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(
            f"Unknown {option('runtime', repr(runtime))}; use 'torch' (the default) or "
            "'onnxruntime' (CPU; needs pip install 'segkit[onnx]')."
        )
    return runtime


def check_precision(precision: str) -> str:
    """``precision`` if it names a prediction precision (:data:`PRECISIONS`).

    Raises:
        ConfigError: otherwise.
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"Unknown {option('precision', repr(precision))}; use 'auto' (the measured default "
            "for the device), 'fp32' (the exact reference) or 'bf16'."
        )
    return precision


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively (a CPU with AVX512-BF16 or AMX; a GPU
    with bfloat16)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        from segkit.engine.runtime import cpu_has_fast_bf16

        return cpu_has_fast_bf16()
    return False


def resolve_precision(runtime: str, precision: str, device: torch.device) -> str:
    """The precision ``precision`` means for ``runtime`` on ``device`` (``auto`` resolved).

    Raises:
        ConfigError: bf16 on onnxruntime, or onnxruntime off the CPU.
    """
    check_runtime(runtime)
    check_precision(precision)
    if runtime == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError(
                f"{option('runtime', 'onnxruntime')} runs on the CPU (its CPU provider), but the "
                f"model is on {device}; use --device cpu, or the torch runtime."
            )
        if precision == "bf16":
            raise ConfigError(
                f"{option('precision', 'bf16')} is for the torch runtime; onnxruntime runs fp32 "
                "(leave --precision out, or use --runtime torch)."
            )
        return "fp32"
    if precision == "auto":
        return AUTO_PRECISION.get(device.type, "fp32") if native_bf16(device) else "fp32"
    return precision


class TorchBF16:
    """A model run channels_last under bfloat16 autocast; logits returned in float32.

    The model's weights are put channels_last (in place: its parameters stay the same
    objects; the values do not change).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.spec = model, model.spec
        self.device_type = next(model.parameters()).device.type
        model.to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x).float()


class OnnxRuntime:
    """A model's ONNX export run by onnxruntime's CPU provider (inputs and outputs on the CPU).

    Args:
        path: the ``.onnx`` file (input ``image``, output ``logits``, dynamic axes).
        spec: the model's spec.
    """

    def __init__(self, path: str | Path, spec: Any) -> None:
        from segkit.export import _require

        ort = _require("onnxruntime", "--runtime onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warnings about unused initialisers
        self.path, self.spec = Path(path), spec
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        feed = {"image": x.detach().float().contiguous().cpu().numpy()}
        return torch.from_numpy(self.session.run(["logits"], feed)[0])


def checkpoint_key(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes (a folder, such as a hub
    folder: of its files' names and bytes, in name order)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def onnx_cache_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's ONNX export is cached: beside it (beside a hub folder, not in
    it), named by its content."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.{checkpoint_key(checkpoint)}.onnx")


def _export_to(model: torch.nn.Module, target: Path) -> Path:
    """Export ``model`` to ``target`` through a temporary file renamed into place (a
    concurrent reader never sees half a file)."""
    from segkit.export import export_onnx

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    logger.info("exporting the model to ONNX for onnxruntime: %s", target)
    try:
        export_onnx(model, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def onnx_runtime(model: torch.nn.Module, checkpoint: str | Path | None) -> OnnxRuntime:
    """onnxruntime running ``model`` (loaded from ``checkpoint``): the cached export beside the
    checkpoint when there is one, else exported now into that cache (or, for a model given
    as a module or a read-only folder, into a temporary folder removed once it is loaded)."""
    if checkpoint is not None:
        target = onnx_cache_path(checkpoint)
        if target.is_file():
            return OnnxRuntime(target, model.spec)
        if os.access(target.parent, os.W_OK):
            return OnnxRuntime(_export_to(model, target), model.spec)
    with tempfile.TemporaryDirectory(prefix="segkit-onnx-") as tmp:
        return OnnxRuntime(_export_to(model, Path(tmp) / "model.onnx"), model.spec)


def make_runtime(
    model: torch.nn.Module, runtime: str, precision: str, checkpoint: str | Path | None = None
) -> Any:
    """The callable that runs ``model`` (``runtime`` and ``precision`` as a Recipe resolved
    them: :func:`resolve_precision`); ``checkpoint``: where the model was loaded from (the
    ONNX cache's home and key)."""
    if runtime == "onnxruntime":
        return onnx_runtime(model, checkpoint)
    if precision == "bf16":
        return TorchBF16(model)
    return model
