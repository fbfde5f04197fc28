"""ONNX export: dynamic axes, agreement with PyTorch, metadata and clear errors."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import CheckpointError
from segkit.export import export_onnx
from segkit.models import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _unet(classes: int = 3):
    torch.manual_seed(0)
    names = [f"c{i}" for i in range(max(2, classes))]
    return build_model(arch="unet", base_channels=4, classes=classes, class_names=names)


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": x.numpy()})[0]


def test_unet_export_has_dynamic_axes_and_matches_pytorch(tmp_path):
    model = _unet(3).eval()
    result = export_onnx(model, tmp_path / "sub" / "unet.onnx", size=32, check=True)
    assert result["exporter"] == "torchscript" and result["sample_shape"] == (1, 3, 32, 32)
    assert result["max_abs_diff"] < 1e-4 and result["check_shape"] == (2, 3, 48, 32)
    graph = onnx.load(str(tmp_path / "sub" / "unet.onnx")).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == [
        "logits"
    ]
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    x = torch.randn(3, 3, 48, 80)  # another batch size and a non-square size
    with torch.inference_mode():
        expected = model(x).numpy()
    got = _run(tmp_path / "sub" / "unet.onnx", x)
    assert got.shape == (3, 3, 48, 80)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_metadata_describes_the_preprocessing(tmp_path):
    model = _unet(3)
    export_onnx(model, tmp_path / "m.onnx", size=32)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["segkit.class_names"] == ["c0", "c1", "c2"]
    assert props["segkit.mean"] == list(model.spec.mean) and props["segkit.divisor"] == 16
    assert props["segkit.task"] == "multiclass"


def test_smp_unet_resnet18_export(tmp_path):
    torch.manual_seed(0)
    model = build_model(arch="smp.Unet", encoder="resnet18", encoder_weights=None, classes=1)
    result = export_onnx(model, tmp_path / "r18.onnx", size=64, check=True)
    assert result["max_abs_diff"] < 1e-3
    assert _run(tmp_path / "r18.onnx", torch.randn(1, 3, 96, 64)).shape == (1, 1, 96, 64)


def test_export_from_checkpoint_uses_training_size(tmp_path):
    model = _unet(1)
    state = {
        "model": model.state_dict(),
        "model_spec": model.spec.to_dict(),
        "config": {"data": {"image_size": 40}},  # rounded up to the divisor 16
    }
    ckpt = save_checkpoint(tmp_path / "best.pt", state)
    result = export_onnx(ckpt, tmp_path / "m.onnx", check=True)
    assert result["sample_shape"] == (1, 3, 48, 48) and result["max_abs_diff"] < 1e-4


def test_training_mode_is_restored(tmp_path):
    model = _unet(1).train()
    export_onnx(model, tmp_path / "m.onnx", size=16)
    assert model.training


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt"):
        export_onnx(tmp_path / "absent.pt", tmp_path / "m.onnx")


def test_missing_onnx_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` raise ImportError
    with pytest.raises(ImportError, match=r"segkit\[onnx\]"):
        export_onnx(_unet(1), tmp_path / "m.onnx", size=16)


def test_check_without_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime.*segkit\[onnx\]"):
        export_onnx(_unet(1), tmp_path / "m.onnx", size=16, check=True)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None, reason="has onnxscript")
def test_dynamo_exporter_without_onnxscript_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match="pip install onnxscript"):
        export_onnx(_unet(1), tmp_path / "m.onnx", size=16, exporter="dynamo")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exporter"):
        export_onnx(_unet(1), tmp_path / "m.onnx", exporter="tflite")
    with pytest.raises(TypeError, match="spec"):
        export_onnx(torch.nn.Conv2d(3, 1, 1), tmp_path / "m.onnx")


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_a_labels_graph_gives_the_predictors_labels(kind, tmp_path):
    """``labels=True``: the graph ends in uint8 labels, those the Predictor takes."""
    from segkit.inference import PredictOptions, Predictor

    torch.manual_seed(0)
    spec = {"classes": 1} if kind == "binary" else {"classes": 3}
    if kind == "multilabel":
        spec["task"] = "multilabel"
    model = build_model(arch="unet", base_channels=4, **spec).eval()
    path = tmp_path / "labels.onnx"
    result = export_onnx(
        model, path, labels=True, threshold=0.4 if kind == "binary" else None, check=True
    )
    assert result["max_abs_diff"] == 0.0  # no label differs on the check sample
    proto = onnx.load(str(path))
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["segkit.output"] == "labels"
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    opts = PredictOptions(size=None, threshold=0.4 if kind == "binary" else None)
    predictor = Predictor(model, opts, "cpu")
    want = predictor.labels(image)  # at the model's size: no resize either side
    mean, std = np.array(model.spec.mean), np.array(model.spec.std)
    x = ((image / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["labels"], {"image": x})[0][0]
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert (got != want).mean() <= 0.001


def test_cli_export_labels(tmp_path, capsys):
    from segkit.cli import main

    model = _unet(3)
    ckpt = save_checkpoint(
        tmp_path / "m.pt", {"model": model.state_dict(), "model_spec": model.spec.to_dict()}
    )
    out = tmp_path / "m.onnx"
    assert main(
        ["export", "--checkpoint", str(ckpt), "--onnx", str(out), "--labels", "--check"]
    ) in (0, None)
    assert "labels differing from PyTorch's: 0%" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "labels"
