"""int8: ``segkit export --int8`` (static quantisation calibrated on training images) and
prediction with ``--precision int8``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.api import train
from segkit.api.quantization import calibration_inputs, export_int8
from segkit.cli import main
from segkit.config import load_config
from segkit.data import synth_helen
from segkit.errors import ConfigError, DataError
from segkit.inference import PredictOptions, Predictor
from segkit.inference.runtimes import onnx_cache_path

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = 64


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory) -> Path:
    """A small U-Net trained for 3 epochs on 8 synthetic 64 px faces (2 held out)."""
    tmp = tmp_path_factory.mktemp("int8")
    synth_helen(tmp / "faces", n=8, seed=0, size=SIZE)
    overrides = [
        "data.dataset=helen",
        f"data.root={tmp / 'faces'}",
        f"data.image_size={SIZE}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.val_fraction=0.25",
        "model.arch=unet",
        "model.encoder=null",
        "model.base_channels=8",
        "loss.name=ce",
        "optim.lr=0.01",
        "train.epochs=3",
        "train.progress=false",
        "train.preview=0",
        f"train.out_dir={tmp / 'run'}",
    ]
    train(load_config(None, overrides))
    return tmp


@pytest.fixture
def checkpoint(faces_run, tmp_path) -> Path:
    """A copy of the run's checkpoint (its int8 model goes beside the copy)."""
    return Path(shutil.copy(faces_run / "run" / "last.pt", tmp_path / "last.pt"))


def _faces(faces_run) -> list[np.ndarray]:
    paths = sorted((faces_run / "faces" / "train" / "images").glob("*.jpg"))
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def test_int8_model_predicts_labels_close_to_fp32s(faces_run, checkpoint):
    result = export_int8(checkpoint, calib=4)
    path = Path(result["path"])
    assert path == onnx_cache_path(checkpoint, "int8") and path.is_file()
    assert result["calibration"] == 4
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["segkit.precision"] == '"int8"' and props["segkit.calibration"] == "4"
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ
    int8 = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 8  # the convolutions' weights
    predictor = Predictor(checkpoint, PredictOptions(precision="int8"), "cpu")
    assert predictor.recipe.runtime == "onnxruntime" and predictor.recipe.precision == "int8"
    assert predictor.runtime.path == path
    ref = Predictor(checkpoint, PredictOptions(runtime="torch", precision="fp32"), "cpu")
    differ, largest = [], 0.0
    for image in _faces(faces_run):
        differ.append((predictor.labels(image) != ref.labels(image)).mean())
        gap = np.abs(predictor.probabilities(image) - ref.probabilities(image)).max()
        largest = max(largest, float(gap))
    assert np.mean(differ) <= 0.015 and largest <= 0.08, (differ, largest)  # measured 0.5%, 0.024


def test_calibration_inputs_are_what_prediction_feeds_the_model(checkpoint, tmp_path):
    """Calibration sees, bit for bit, the batches Predictor.predict gives the model."""
    from segkit.api.data import build_datasets
    from segkit.api.evaluation import _evaluation_config, _scoring_transform
    from segkit.engine import load_checkpoint

    predictor = Predictor(checkpoint, PredictOptions(runtime="torch", precision="fp32"), "cpu")
    cfg = _evaluation_config(load_checkpoint(checkpoint), None)
    dataset, _ = build_datasets(cfg)
    dataset.transform = _scoring_transform(cfg, dataset, predictor.recipe)
    inputs = calibration_inputs(predictor, dataset, len(dataset))
    assert len(inputs) == len(dataset) == 6
    seen: list[np.ndarray] = []
    model = predictor.runtime

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.numpy().copy())
        return model(x)

    recording.spec = model.spec
    predictor.runtime = recording
    predictor.predict([s.image_path for s in dataset.samples], tmp_path / "pred")
    assert len(seen) == 1 and seen[0].shape == (6, 3, SIZE, SIZE)  # one batch of all six
    for got, want in zip(inputs, seen[0]):
        assert got.shape == (1, 3, SIZE, SIZE) and got.dtype == np.float32
        np.testing.assert_array_equal(got[0], want)


def test_cli_export_int8_then_predict(checkpoint, faces_run, tmp_path, capsys):
    copy = tmp_path / "deploy" / "model.int8.onnx"
    argv = ["export", "--checkpoint", str(checkpoint), "--int8", "--calib", "3", "--onnx"]
    assert main([*argv, str(copy)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {onnx_cache_path(checkpoint, 'int8')} (int8, calibrated on 3 " in out
    assert copy.read_bytes() == onnx_cache_path(checkpoint, "int8").read_bytes()
    photos = faces_run / "faces" / "train" / "images"
    for precision in ("int8", "fp32"):
        runtime = ["--runtime", "torch"] if precision == "fp32" else []
        argv = ["predict", "--checkpoint", str(checkpoint), str(photos), "--out"]
        argv += [str(tmp_path / precision), "--precision", precision, *runtime]
        assert main(argv) == 0
    pairs = [(p, tmp_path / "fp32" / p.name) for p in sorted((tmp_path / "int8").glob("*.png"))]
    assert len(pairs) == 8
    differ = [(cv2.imread(str(a), 0) != cv2.imread(str(b), 0)).mean() for a, b in pairs]
    assert np.mean(differ) <= 0.02


@pytest.mark.parametrize(
    ("calib", "error", "words"),
    [
        (0, ConfigError, "calib=0: the number of training images"),
        (2.5, ConfigError, "positive whole number"),
        (7, DataError, "holds 6 images; calibrate on at most 6"),
    ],
)
def test_bad_calibration_counts_are_one_clear_line(checkpoint, calib, error, words):
    with pytest.raises(error) as err:
        export_int8(checkpoint, calib=calib)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert not onnx_cache_path(checkpoint, "int8").exists()


def test_cli_errors_are_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    cases = [
        (["--int8", "--calib", "0"], "--calib 0"),
        (["--calib", "4"], "--calib is for --int8"),
        (["--int8", "--labels"], "not --labels"),
        ([], "needs --onnx OUT, --hub DIR or --int8"),
    ]
    for extra, words in cases:
        assert main(["export", "--checkpoint", str(checkpoint), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.zeros((SIZE, SIZE, 3), np.uint8))
    predict = ["predict", "--checkpoint", str(checkpoint), str(photo), "--out", str(tmp_path)]
    assert main([*predict, "--precision", "int8"]) == 2  # none made yet
    err = capsys.readouterr().err
    assert "no int8 model" in err and f"segkit export --checkpoint {checkpoint} --int8" in err
    assert main([*predict, "--precision", "int8", "--runtime", "torch"]) == 2
    assert "--runtime onnxruntime" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert main(["export", "--checkpoint", str(checkpoint), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "'onnxruntime' package" in err and "segkit[onnx]" in err
