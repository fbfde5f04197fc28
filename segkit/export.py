"""ONNX export with dynamic batch, height and width, and an onnxruntime check.

The graph takes ``image`` (``N x in_channels x H x W`` float32, normalised with the model's
mean/std, H and W multiples of the model's divisor) and returns ``logits`` (``N x C x H x W``).
The preprocessing a consumer needs (input channels, how the bands were read, mean, std,
divisor, class names, task) is stored in the model's metadata properties as ``segkit.*`` keys.

onnx and onnxruntime are optional (``pip install segkit[onnx]``) and imported only here,
only when used. ``exporter="auto"`` uses torch's TorchScript-based exporter (``dynamo=False``,
deprecated but present in torch 2.14), which needs nothing beyond onnx; ``"dynamo"`` (the
torch.export-based one, torch's own default) needs onnxscript as well.
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from segkit.inference import load_model

EXPORTERS = ("auto", "torchscript", "dynamo")
_AXES = {0: "batch", 2: "height", 3: "width"}


def _require(module: str, why: str, install: str = "pip install 'segkit[onnx]'") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{why} needs the {module!r} package, which is not installed. Install it: {install}."
        ) from None


def _sample_side(size: int | None, divisor: int) -> int:
    """The square sample side: ``size`` (default ``4 * divisor``) rounded up to the divisor."""
    size = 4 * divisor if size is None else int(size)
    if size < 1:
        raise ValueError(f"Export sample size must be positive, got {size}.")
    return -(-size // divisor) * divisor


def _export(
    model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int, exporter: str
) -> str:
    """Run torch.onnx.export with dynamic axes; returns the exporter used."""
    if exporter == "auto":
        exporter = "torchscript"
    kwargs: dict[str, Any] = {
        "input_names": ["image"],
        "output_names": ["logits"],
        "opset_version": opset,
    }
    if exporter == "torchscript":
        kwargs.update(dynamo=False, dynamic_axes={"image": _AXES, "logits": _AXES})
    else:
        _require("onnxscript", "The dynamo ONNX exporter", "pip install onnxscript")
        dims = {axis: torch.export.Dim.AUTO for axis in _AXES}
        kwargs.update(dynamo=True, dynamic_shapes={"x": dims}, external_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices and tracer warnings
        torch.onnx.export(model, (sample,), str(path), **kwargs)
    return exporter


def _add_metadata(onnx: Any, path: Path, spec: Any) -> None:
    """Store the preprocessing a consumer needs in the ONNX metadata properties."""
    proto = onnx.load(str(path))
    props = {
        "segkit.arch": spec.arch,
        "segkit.encoder": spec.encoder,
        "segkit.task": spec.task,
        "segkit.classes": spec.classes,
        "segkit.class_names": spec.class_names,
        "segkit.in_channels": spec.in_channels,
        # None: 8-bit RGB, x / 255; else bands kept / NaN fill (segkit.data.bands' scale rule)
        "segkit.input": (spec.meta or {}).get("input"),
        "segkit.mean": list(spec.mean) if spec.mean else None,
        "segkit.std": list(spec.std) if spec.std else None,
        "segkit.divisor": spec.divisor,
    }
    if spec.task == "multilabel":  # a sigmoid per channel, thresholded per class
        props["segkit.thresholds"] = (spec.meta or {}).get("thresholds") or [0.5] * spec.classes
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in props.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def check_onnx(
    model: torch.nn.Module, path: str | Path, shape: tuple[int, int, int, int], seed: int = 0
) -> float:
    """Largest absolute difference of onnxruntime's logits from PyTorch's on a random input.

    Args:
        model: the PyTorch model that was exported (CPU).
        path: the ``.onnx`` file.
        shape: ``(N, C, H, W)`` of the random sample; H and W multiples of the divisor.
        seed: seed of the sample.
    """
    ort = _require("onnxruntime", "Checking an ONNX export")
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(shape, generator=generator)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": sample.numpy()})[0]
    with torch.inference_mode():
        expected = model(sample).float().numpy()
    if got.shape != expected.shape:
        raise RuntimeError(
            f"The ONNX model at {str(path)!r} returned shape {got.shape} for input {shape}, "
            f"but PyTorch returns {expected.shape}; the export is not usable at this size."
        )
    return float(abs(got - expected).max())


def export_onnx(
    checkpoint_or_model: str | Path | torch.nn.Module,
    out_path: str | Path,
    *,
    opset: int = 17,
    size: int | None = None,
    check: bool = False,
    exporter: str = "auto",
) -> dict[str, Any]:
    """Export a checkpoint or model to ONNX with dynamic batch, height and width axes.

    Args:
        checkpoint_or_model: a segkit ``best.pt`` / ``last.pt``, or a model with a ``.spec``.
        out_path: the ``.onnx`` file to write (folders are created).
        opset: ONNX opset version.
        size: side of the square sample traced; default the training size (rounded up to
            the model's divisor). Other sizes work too: the spatial axes are dynamic.
        check: run onnxruntime on a random batch of 2 at another size and compare with PyTorch.
        exporter: "auto" (TorchScript-based), "torchscript" or "dynamo" (needs onnxscript).

    Returns:
        ``path``, ``exporter``, ``opset``, ``sample_shape``, ``seconds`` and, with ``check``,
        ``max_abs_diff`` and ``check_shape``.

    Raises:
        ImportError: onnx (or, for ``check``, onnxruntime) is not installed.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"Unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}.")
    onnx = _require("onnx", "ONNX export")
    if check:
        _require("onnxruntime", "export_onnx(check=True) / segkit export --check")
    given = isinstance(checkpoint_or_model, torch.nn.Module)  # a given model goes back where it was
    model, train_size = load_model(checkpoint_or_model, device="auto" if given else "cpu")
    side = _sample_side(size or train_size, model.spec.divisor or 1)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters()).device
    model.cpu().eval()
    start = time.perf_counter()
    try:
        sample = torch.randn(1, model.spec.in_channels, side, side)
        used = _export(model, sample, out_path, opset, exporter)
        _add_metadata(onnx, out_path, model.spec)
        result: dict[str, Any] = {
            "path": str(out_path),
            "exporter": used,
            "opset": opset,
            "sample_shape": tuple(sample.shape),
        }
        if check:
            divisor = model.spec.divisor or 1
            shape = (2, model.spec.in_channels, side + divisor, side)
            result["max_abs_diff"] = check_onnx(model, out_path, shape)
            result["check_shape"] = shape
    finally:
        model.to(device).train(was_training)
    result["seconds"] = time.perf_counter() - start
    return result
