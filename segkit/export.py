"""ONNX export with dynamic batch, height and width, and an onnxruntime check.

The graph takes ``image`` (``N x in_channels x H x W`` float32, normalised with the model's
mean/std, H and W multiples of the model's divisor) and returns ``logits`` (``N x C x H x W``);
with ``labels=True`` it ends in the labels instead (:class:`LabelsHead`): ``labels``, uint8,
``N x H x W`` (the arg-max; a binary model's foreground probability above its threshold) or,
for a multi-label model, ``N x C x H x W`` 0/1 masks (each class above its own threshold).
The preprocessing a consumer needs (input channels, how the bands were read, mean, std,
divisor, class names, task) is stored in the model's metadata properties as ``segkit.*`` keys.

:func:`quantize_onnx` turns such an export into an int8 model (onnxruntime's static
quantisation; calibration inputs from :mod:`segkit.api.quantization`).

onnx and onnxruntime are optional (``pip install segkit[onnx]``) and imported only here,
only when used. ``exporter="auto"`` uses torch's TorchScript-based exporter (``dynamo=False``,
deprecated but present in torch 2.14), which needs nothing beyond onnx; ``"dynamo"`` (the
torch.export-based one, torch's own default) needs onnxscript as well.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

EXPORTERS = ("auto", "torchscript", "dynamo")
_AXES = {0: "batch", 2: "height", 3: "width"}


def _require(module: str, why: str, install: str = "pip install 'segkit[onnx]'") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{why} needs the {module!r} package, which is not installed. Install it: {install}."
        ) from None


def _load(checkpoint_or_model: str | Path | torch.nn.Module, device: str) -> torch.nn.Module:
    """The model to export (:func:`segkit.inference.load_model`'s rule, without importing
    prediction, which imports this module for its onnxruntime runtime)."""
    if isinstance(checkpoint_or_model, torch.nn.Module):
        if getattr(checkpoint_or_model, "spec", None) is None:
            raise TypeError(
                f"{type(checkpoint_or_model).__name__} has no .spec describing its input; build "
                "a segkit model with segkit.models.build_model or pass a checkpoint path."
            )
        return checkpoint_or_model
    from segkit.engine.checkpoint import model_from_checkpoint

    return model_from_checkpoint(checkpoint_or_model, device=device)


def _sample_side(size: int | None, divisor: int) -> int:
    """The square sample side: ``size`` (default ``4 * divisor``) rounded up to the divisor."""
    size = 4 * divisor if size is None else int(size)
    if size < 1:
        raise ValueError(f"Export sample size must be positive, got {size}.")
    return -(-size // divisor) * divisor


class LabelsHead(torch.nn.Module):
    """A model whose output is its labels (uint8), as :class:`~segkit.inference.Predictor`
    takes them at the model's size: the arg-max over classes; for one channel its sigmoid
    above ``thresholds[0]``; for a multi-label model each channel's sigmoid above its own."""

    def __init__(self, model: torch.nn.Module, thresholds: list[float]) -> None:
        super().__init__()
        self.model, self.spec = model, model.spec
        self.register_buffer("thresholds", torch.tensor(thresholds).view(1, -1, 1, 1))
        self.multilabel = model.spec.task == "multilabel"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        if self.multilabel:
            return (torch.sigmoid(logits) > self.thresholds).to(torch.uint8)
        if logits.shape[1] == 1:
            return (torch.sigmoid(logits[:, 0]) > self.thresholds[:, 0]).to(torch.uint8)
        return logits.argmax(1).to(torch.uint8)


def label_thresholds(spec: Any, threshold: float | None = None) -> list[float]:
    """The thresholds a labels graph takes: a multi-label model's recorded ones (0.5 each
    where none were), else ``threshold`` (default 0.5) for a binary model's foreground."""
    if spec.task == "multilabel":
        return list((spec.meta or {}).get("thresholds") or [0.5] * spec.classes)
    return [0.5 if threshold is None else float(threshold)]


def _export(
    model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int, exporter: str
) -> str:
    """Run torch.onnx.export with dynamic axes; returns the exporter used."""
    if exporter == "auto":
        exporter = "torchscript"
    output = "labels" if isinstance(model, LabelsHead) else "logits"
    axes = {0: "batch", 1: "height", 2: "width"} if output == "labels" else _AXES
    if output == "labels" and model.multilabel:
        axes = _AXES
    kwargs: dict[str, Any] = {
        "input_names": ["image"],
        "output_names": [output],
        "opset_version": opset,
    }
    if exporter == "torchscript":
        kwargs.update(dynamo=False, dynamic_axes={"image": _AXES, output: axes})
    else:
        _require("onnxscript", "The dynamo ONNX exporter", "pip install onnxscript")
        dims = {axis: torch.export.Dim.AUTO for axis in _AXES}
        kwargs.update(dynamo=True, dynamic_shapes={"x": dims}, external_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices and tracer warnings
        torch.onnx.export(model, (sample,), str(path), **kwargs)
    return exporter


def _add_metadata(onnx: Any, path: Path, spec: Any, thresholds: list[float] | None) -> None:
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
    props["segkit.output"] = "labels" if thresholds is not None else "logits"
    if thresholds is not None and spec.task != "multilabel" and spec.classes == 1:
        props["segkit.threshold"] = thresholds[0]
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in props.items()})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def check_onnx(
    model: torch.nn.Module, path: str | Path, shape: tuple[int, int, int, int], seed: int = 0
) -> float:
    """Largest absolute difference of onnxruntime's logits from PyTorch's on a random input
    (a labels graph, :class:`LabelsHead`: the share of labels that differ).

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
    output = "labels" if isinstance(model, LabelsHead) else "logits"
    got = session.run([output], {"image": sample.numpy()})[0]
    with torch.inference_mode():
        expected = model(sample).numpy()
    if got.shape != expected.shape:
        raise RuntimeError(
            f"The ONNX model at {str(path)!r} returned shape {got.shape} for input {shape}, "
            f"but PyTorch returns {expected.shape}; the export is not usable at this size."
        )
    if output == "labels":
        return float((got != expected).mean())
    return float(abs(got - expected.astype("float32")).max())


def export_onnx(
    checkpoint_or_model: str | Path | torch.nn.Module,
    out_path: str | Path,
    *,
    opset: int = 17,
    size: int | None = None,
    check: bool = False,
    exporter: str = "auto",
    labels: bool = False,
    threshold: float | None = None,
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
        labels: end the graph in the labels (uint8, :class:`LabelsHead`), not the logits.
        threshold: with ``labels``, a binary model's foreground threshold (default 0.5); a
            multi-label model's are those training recorded.

    Returns:
        ``path``, ``exporter``, ``opset``, ``sample_shape``, ``seconds`` and, with ``check``,
        ``max_abs_diff`` (a labels graph: the share of labels that differ) and
        ``check_shape``.

    Raises:
        ImportError: onnx (or, for ``check``, onnxruntime) is not installed.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"Unknown exporter {exporter!r}; use one of {', '.join(EXPORTERS)}.")
    onnx = _require("onnx", "ONNX export")
    if check:
        _require("onnxruntime", "export_onnx(check=True) / segkit export --check")
    given = isinstance(checkpoint_or_model, torch.nn.Module)  # a given model goes back where it was
    model = _load(checkpoint_or_model, device="auto" if given else "cpu")
    train_size = model.spec.options.get("image_size")
    side = _sample_side(size or train_size, model.spec.divisor or 1)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = next(model.parameters()).device
    model.cpu().eval()
    start = time.perf_counter()
    try:
        sample = torch.randn(1, model.spec.in_channels, side, side)
        thresholds = label_thresholds(model.spec, threshold) if labels else None
        graph = LabelsHead(model, thresholds).eval() if labels else model
        used = _export(graph, sample, out_path, opset, exporter)
        _add_metadata(onnx, out_path, model.spec, thresholds)
        result: dict[str, Any] = {
            "path": str(out_path),
            "exporter": used,
            "opset": opset,
            "sample_shape": tuple(sample.shape),
        }
        if check:
            divisor = model.spec.divisor or 1
            shape = (2, model.spec.in_channels, side + divisor, side)
            result["max_abs_diff"] = check_onnx(graph, out_path, shape)
            result["check_shape"] = shape
    finally:
        model.to(device).train(was_training)
    result["seconds"] = time.perf_counter() - start
    return result


def quantize_onnx(
    model_path: str | Path,
    out_path: str | Path,
    inputs: Sequence[np.ndarray],
    *,
    per_channel: bool = True,
) -> Path:
    """Statically quantise an fp32 export (:func:`export_onnx`, logits) to int8 with
    onnxruntime: QDQ format, uint8 activations, int8 weights (``per_channel``: a scale per
    output channel), activation ranges by MinMax calibration over ``inputs`` (normalised
    ``N x C x H x W`` float32 batches, as the model is fed). The ``segkit.*`` metadata is
    kept, with ``segkit.precision`` = int8 and ``segkit.calibration`` = the input count.

    Raises:
        ImportError: onnx or onnxruntime is not installed.
        ValueError: no calibration inputs.
    """
    onnx = _require("onnx", "int8 quantisation")
    quant = _require("onnxruntime.quantization", "int8 quantisation")
    if not inputs:
        raise ValueError("int8 quantisation needs calibration inputs; none were given.")
    out_path = Path(out_path)

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.items, None)
            return None if x is None else {"image": np.ascontiguousarray(x, np.float32)}

    with tempfile.TemporaryDirectory(prefix="segkit-int8-") as tmp:
        ready = Path(tmp) / "ready.onnx"  # shapes inferred, graph optimised: what quantises
        quant.quant_pre_process(str(model_path), str(ready), skip_symbolic_shape=True)
        quantized = Path(tmp) / "int8.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant.quantize_static(
                str(ready),
                str(quantized),
                Reader(),
                quant_format=quant.QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                calibrate_method=quant.CalibrationMethod.MinMax,  # keeps each input's min/max only
            )
        proto = onnx.load(str(quantized))
        props = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
        props.update({"segkit.precision": '"int8"', "segkit.calibration": str(len(inputs))})
        onnx.helper.set_model_props(proto, props)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
        try:
            onnx.save(proto, str(partial))
            os.replace(partial, out_path)  # a reader never sees half a file
        finally:
            partial.unlink(missing_ok=True)
    return out_path
