"""Prediction runtimes (torch fp32 / bf16, onnxruntime) behind one call, on every path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from segkit.cli import main
from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import ConfigError
from segkit.inference import PredictOptions, Predictor
from segkit.inference.runtimes import (
    OnnxRuntime,
    TorchBF16,
    auto_runtime,
    onnx_cache_path,
    resolve_precision,
    resolve_runtime,
)
from segkit.models import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _model(**spec):
    torch.manual_seed(0)
    spec = {"arch": "unet", "base_channels": 4, "classes": 3, **spec}
    return build_model(**spec).eval()


def _image(height=48, width=64, channels=3, seed=0):
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, channels), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    return image.reshape(height, width, channels)


def _checkpoint(path, model):
    return save_checkpoint(path, {"model": model.state_dict(), "model_spec": model.spec.to_dict()})


PATHS = {  # name: (model spec, options, image channels)
    "whole": ({}, {"size": 32}, 3),
    "tiling": ({}, {"tile": 32, "batch_size": 3}, 3),
    "tta": ({}, {"size": 32, "tta": "flip+scales=0.75,1"}, 3),
    "binary": ({"classes": 1}, {"tile": 32}, 3),
    "multilabel": ({"task": "multilabel"}, {"tile": 32}, 3),
    "bands": ({"in_channels": 4}, {"size": 32}, 4),
    "crop_scale": ({"options": {"crop": {"size": 32, "scale": 0.5}}}, {}, 3),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_onnxruntime_gives_fp32s_probabilities_and_labels_on_every_path(path, tmp_path):
    spec, options, channels = PATHS[path]
    ckpt = _checkpoint(tmp_path / "m.pt", _model(**spec))
    image = _image(channels=channels)
    if channels != 3:
        image = image.astype(np.float32)
    ref = Predictor(ckpt, PredictOptions(runtime="torch", precision="fp32", **options), "cpu")
    ort = Predictor(ckpt, PredictOptions(runtime="onnxruntime", **options), "cpu")
    assert ort.recipe.runtime == "onnxruntime" and ort.recipe.precision == "fp32"
    assert ref.runtime is ref.model  # fp32 torch: the model itself, today's exact bytes
    np.testing.assert_allclose(ort.probabilities(image), ref.probabilities(image), atol=1e-4)
    differ = (ort.labels(image) != ref.labels(image)).mean()
    assert differ <= 0.001


@pytest.mark.parametrize("path", ["whole", "tiling", "multilabel"])
def test_bf16_runs_channels_last_with_labels_near_fp32s(path):
    spec, options, _ = PATHS[path]
    model = _model(**spec)
    image = _image()
    ref = Predictor(model, PredictOptions(precision="fp32", **options), "cpu").labels(image)
    predictor = Predictor(model, PredictOptions(precision="bf16", **options), "cpu")
    assert isinstance(predictor.runtime, TorchBF16) and predictor.recipe.precision == "bf16"
    got = predictor.labels(image)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert (got != ref).mean() <= 0.05  # a random tiny model: many near-ties


def test_auto_precision_is_the_measured_default():
    cpu = torch.device("cpu")
    assert resolve_precision("torch", "auto", cpu) == "fp32"  # bf16 missed 0.1% on Helen
    assert resolve_precision("onnxruntime", "auto", cpu) == "fp32"
    assert PredictOptions().runtime == "auto" and PredictOptions().precision == "auto"


@pytest.mark.default_runtime
def test_auto_runtime_is_onnxruntime_for_a_checkpoint_on_the_cpu(tmp_path):
    cpu = torch.device("cpu")
    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    assert resolve_runtime("auto", "auto", cpu, ckpt) == ("onnxruntime", "fp32")
    assert resolve_runtime("auto", "fp32", cpu, ckpt) == ("onnxruntime", "fp32")
    assert resolve_runtime("auto", "bf16", cpu, ckpt) == ("torch", "bf16")  # bf16 is torch's
    assert resolve_runtime("auto", "int8", cpu, ckpt) == ("onnxruntime", "int8")
    assert resolve_runtime("auto", "auto", cpu, None) == ("torch", "fp32")  # a model in memory
    assert auto_runtime("auto", torch.device("cuda"), ckpt) == "torch"  # not measured: torch
    predictor = Predictor(ckpt, PredictOptions(size=32), "cpu")
    assert isinstance(predictor.runtime, OnnxRuntime) and predictor.recipe.runtime == "onnxruntime"
    assert predictor.runtime.path == onnx_cache_path(ckpt)
    ref = Predictor(ckpt, PredictOptions(runtime="torch", precision="fp32", size=32), "cpu")
    assert ref.runtime is ref.model
    image = _image()
    assert (predictor.labels(image) != ref.labels(image)).mean() <= 0.001
    in_memory = Predictor(_model(), PredictOptions(size=32), "cpu")
    assert in_memory.runtime is in_memory.model and in_memory.recipe.runtime == "torch"


@pytest.mark.default_runtime
def test_auto_falls_back_to_torch_with_one_warning(tmp_path, monkeypatch):
    import segkit.export
    import segkit.inference.runtimes as runtimes

    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    monkeypatch.setattr(runtimes, "onnxruntime_installed", lambda: False)
    with pytest.warns(UserWarning, match=r"onnxruntime.*not installed.*segkit\[onnx\]") as seen:
        predictor = Predictor(ckpt, PredictOptions(size=32), "cpu")
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    assert predictor.recipe.runtime == "torch" and predictor.runtime is predictor.model
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported: an operator onnx has no name for")

    monkeypatch.setattr(segkit.export, "export_onnx", broken)
    with pytest.warns(UserWarning, match="did not export to onnxruntime .*Unsupported"):
        predictor = Predictor(ckpt, PredictOptions(size=32), "cpu")
    assert predictor.recipe.runtime == "torch" and predictor.recipe.precision == "fp32"
    assert predictor.runtime is predictor.model
    assert not list(tmp_path.glob("*.onnx*"))  # no half-written export left behind
    with pytest.raises(RuntimeError, match="Unsupported"):  # asked for by name: no fallback
        Predictor(ckpt, PredictOptions(runtime="onnxruntime", size=32), "cpu")


def test_the_tests_pin_torch_unless_they_are_about_the_default(tmp_path):
    """conftest's fixture: a test not marked default_runtime predicts on torch."""
    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    assert Predictor(ckpt, PredictOptions(size=32), "cpu").recipe.runtime == "torch"


def test_the_onnx_cache_is_keyed_by_the_checkpoints_content(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    first = Predictor(ckpt, PredictOptions(runtime="onnxruntime", size=32), "cpu")
    cached = onnx_cache_path(ckpt)
    assert first.runtime.path == cached and cached.is_file() and cached.parent == tmp_path
    stamp = cached.stat().st_mtime_ns
    again = Predictor(ckpt, PredictOptions(runtime="onnxruntime", size=32), "cpu")
    assert again.runtime.path == cached and cached.stat().st_mtime_ns == stamp  # reused
    changed = _model()
    with torch.no_grad():
        next(changed.parameters()).add_(0.1)
    _checkpoint(ckpt, changed)
    assert onnx_cache_path(ckpt) != cached
    third = Predictor(ckpt, PredictOptions(runtime="onnxruntime", size=32), "cpu")
    assert third.runtime.path == onnx_cache_path(ckpt) and third.runtime.path.is_file()
    image = _image()
    ref = Predictor(changed, PredictOptions(precision="fp32", size=32), "cpu")
    np.testing.assert_allclose(third.probabilities(image), ref.probabilities(image), atol=1e-4)


def test_a_given_model_exports_into_a_folder_that_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    predictor = Predictor(_model(), PredictOptions(runtime="onnxruntime", size=32), "cpu")
    assert predictor.labels(_image()).shape == (48, 64)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"runtime": "tensorrt"}, "runtime='tensorrt'"),
        ({"precision": "fp16"}, "precision='fp16'"),
    ],
)
def test_bad_values_are_one_clear_line(options, words):
    with pytest.raises(ConfigError) as err:
        PredictOptions(**options)
    assert words in str(err.value).replace('"', "'") and "\n" not in str(err.value)


def test_bf16_on_onnxruntime_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="torch runtime"):
        Predictor(_model(), PredictOptions(runtime="onnxruntime", precision="bf16"), "cpu")


@pytest.mark.default_runtime
def test_cli_predict_takes_runtime_and_precision(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    photo = tmp_path / "in" / "a.png"
    photo.parent.mkdir()
    cv2.imwrite(str(photo), _image())
    for runtime in ("torch", "onnxruntime", "default"):
        out = tmp_path / runtime
        argv = ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(out)]
        given = [] if runtime == "default" else ["--runtime", runtime, "--precision", "fp32"]
        assert main([*argv, *given, "--device", "cpu"]) == 0
    a = cv2.imread(str(tmp_path / "torch" / "a.png"), 0)
    b = cv2.imread(str(tmp_path / "onnxruntime" / "a.png"), 0)
    assert (a != b).mean() <= 0.001
    default = cv2.imread(str(tmp_path / "default" / "a.png"), 0)
    assert np.array_equal(default, b)  # the default is onnxruntime fp32 here
    assert list(tmp_path.glob("m.*.onnx")) == [onnx_cache_path(ckpt)]  # exported once
    assert capsys.readouterr().err == ""  # no note when onnxruntime runs
    code = main(
        ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(tmp_path / "x")]
        + ["--runtime", "nope"]
    )
    assert code not in (0, None)
    assert "runtime" in capsys.readouterr().err


def test_a_hub_folder_caches_its_onnx_beside_it(tmp_path):
    from segkit.hub import export_hub

    ckpt = _checkpoint(tmp_path / "m.pt", _model())
    hub = export_hub(ckpt, tmp_path / "hub")
    predictor = Predictor(hub, PredictOptions(runtime="onnxruntime", size=32), "cpu")
    assert predictor.runtime.path == onnx_cache_path(hub) and predictor.runtime.path.is_file()
    assert predictor.runtime.path.parent == tmp_path  # beside the folder, not in it
    ref = Predictor(ckpt, PredictOptions(runtime="torch", precision="fp32", size=32), "cpu")
    image = _image()
    np.testing.assert_allclose(predictor.probabilities(image), ref.probabilities(image), atol=1e-4)
