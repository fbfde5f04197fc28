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
- ``onnxruntime`` / ``int8``: the statically quantised model ``segkit export --int8`` wrote
  beside the checkpoint (``<stem>.<sha256[:16]>.int8.onnx``; :mod:`segkit.api.quantization`).

``runtime="auto"`` (the default) is onnxruntime on the CPU where it is installed and the
model comes from a checkpoint (its export is cached once), else torch; ``precision="auto"``
is :data:`AUTO_PRECISION`'s choice for the device. Both are the fastest measured whose labels
differ from torch fp32's on at most 0.1% of pixels of real photos (``docs/benchmarks.md``,
prediction runtimes).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from segkit.errors import ConfigError, missing_modules, option

logger = logging.getLogger(__name__)

#: the runtimes a prediction may run on
RUNTIMES = ("auto", "torch", "onnxruntime")

#: the precisions a prediction may ask for
PRECISIONS = ("auto", "fp32", "bf16", "int8")

#: what ``precision="auto"`` means per device type where the device runs bfloat16 natively
#: (measured: docs/benchmarks.md, prediction runtimes); elsewhere it is fp32
AUTO_PRECISION = {"cpu": "fp32", "cuda": "fp32"}

#: what ``runtime="auto"`` means per device type where onnxruntime is installed and the model
#: comes from a checkpoint (measured: docs/benchmarks.md, prediction runtimes); else torch
AUTO_RUNTIME = {"cpu": "onnxruntime"}


def check_runtime(runtime: str) -> str:
    """``runtime`` if it names a prediction runtime (:data:`RUNTIMES`).

    Raises:
        ConfigError: otherwise.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(
            f"Unknown {option('runtime', repr(runtime))}; use 'auto' (the default: onnxruntime "
            "on the CPU where installed, else torch), 'torch' or 'onnxruntime' (CPU; needs pip "
            "install 'segkit[onnx]')."
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
            "for the device), 'fp32' (the exact reference), 'bf16' (torch) or 'int8' "
            "(onnxruntime, after segkit export --int8)."
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


def onnxruntime_installed() -> bool:
    """Whether onnx and onnxruntime can be imported (looked up, not imported)."""
    return not missing_modules(("onnx", "onnxruntime"))


def auto_runtime(precision: str, device: torch.device, checkpoint: str | Path | None) -> str:
    """What ``runtime="auto"`` means: :data:`AUTO_RUNTIME` for the device where onnxruntime is
    installed and the model comes from a ``checkpoint`` (its export is cached beside it; a
    model in memory would be exported anew each time), else torch; ``bf16`` is torch's,
    ``int8`` onnxruntime's. Where onnxruntime is missing, a warning says so once."""
    if precision in ("bf16", "int8"):
        return "torch" if precision == "bf16" else "onnxruntime"
    chosen = AUTO_RUNTIME.get(device.type, "torch")
    if chosen != "onnxruntime" or checkpoint is None:
        return "torch"
    if not onnxruntime_installed():
        warnings.warn(
            "predicting with torch: onnxruntime, the faster default on the CPU, is not "
            "installed (pip install 'segkit[onnx]'; --runtime torch silences this).",
            stacklevel=2,
        )
        return "torch"
    return "onnxruntime"


def resolve_runtime(
    runtime: str, precision: str, device: torch.device, checkpoint: str | Path | None = None
) -> tuple[str, str]:
    """The runtime and precision ``runtime`` and ``precision`` mean on ``device`` for a model
    loaded from ``checkpoint`` (None: a model in memory), ``auto`` resolved
    (:func:`auto_runtime`, :func:`resolve_precision`).

    Raises:
        ConfigError: a runtime and precision that do not go together, or with the device.
    """
    check_runtime(runtime)
    check_precision(precision)
    if runtime == "auto":
        runtime = auto_runtime(precision, device, checkpoint)
    return runtime, resolve_precision(runtime, precision, device)


def resolve_precision(runtime: str, precision: str, device: torch.device) -> str:
    """The precision ``precision`` means for ``runtime`` (not ``auto``) on ``device``
    (``auto`` resolved).

    Raises:
        ConfigError: bf16 on onnxruntime, int8 on torch, or onnxruntime off the CPU.
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
                "or int8 (leave --precision out, or use --runtime torch)."
            )
        return "int8" if precision == "int8" else "fp32"
    if precision == "int8":
        raise ConfigError(
            f"{option('precision', 'int8')} runs the quantised ONNX model on onnxruntime; use "
            "--runtime onnxruntime (or auto), or --precision fp32 / bf16 for torch."
        )
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


def onnx_cache_path(checkpoint: str | Path, precision: str = "fp32") -> Path:
    """Where a checkpoint's ONNX export is cached: beside it (beside a hub folder, not in
    it), named by its content (``int8``: the quantised model, ``<stem>.<key>.int8.onnx``)."""
    checkpoint = Path(checkpoint)
    tag = ".int8" if precision == "int8" else ""
    return checkpoint.with_name(f"{checkpoint.stem}.{checkpoint_key(checkpoint)}{tag}.onnx")


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


def int8_runtime(model: torch.nn.Module, checkpoint: str | Path | None) -> OnnxRuntime:
    """onnxruntime running the int8 model ``segkit export --int8`` made for ``checkpoint``.

    Raises:
        ConfigError: there is none (the message gives the command that makes it).
    """
    if checkpoint is None:
        raise ConfigError(
            f"{option('precision', 'int8')} runs the int8 model segkit export --int8 wrote beside "
            "a checkpoint; predict from that checkpoint's path, not a model in memory."
        )
    target = onnx_cache_path(checkpoint, "int8")
    if not target.is_file():
        raise ConfigError(
            f"{option('precision', 'int8')}: there is no int8 model beside {str(checkpoint)!r} "
            f"(looked for {target.name}); make it with segkit export --checkpoint {checkpoint} "
            "--int8 [--calib N]."
        )
    return OnnxRuntime(target, model.spec)


def make_runtime(
    model: torch.nn.Module,
    runtime: str,
    precision: str,
    checkpoint: str | Path | None = None,
    *,
    fallback: bool = False,
) -> Any:
    """The callable that runs ``model`` (``runtime`` and ``precision`` as a Recipe resolved
    them: :func:`resolve_runtime`); ``checkpoint``: where the model was loaded from (the
    ONNX cache's home and key). ``fallback``: an fp32 export that fails gives the model
    itself (torch fp32) with a warning, instead of the error (``runtime="auto"``)."""
    if runtime == "onnxruntime" and precision == "int8":
        return int8_runtime(model, checkpoint)
    if runtime == "onnxruntime":
        if not fallback:
            return onnx_runtime(model, checkpoint)
        try:
            return onnx_runtime(model, checkpoint)
        except Exception as exc:  # any exporter or onnxruntime failure: torch still runs it
            reason = " ".join(str(exc).split())[:200]
            warnings.warn(
                f"predicting with torch: the model did not export to onnxruntime ({reason}); "
                "--runtime torch silences this.",
                stacklevel=2,
            )
            return model
    if precision == "bf16":
        return TorchBF16(model)
    return model
