"""The Predictor: a model loaded once, predicting arrays, files and folders; options checked once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.cli import main
from segkit.data.io import read_mask
from segkit.engine import checkpoint as checkpoint_module
from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import ConfigError, DataError
from segkit.inference import (
    TTA,
    PredictOptions,
    Predictor,
    parse_tta,
    predict,
    predict_proba,
)
from segkit.models import ModelSpec, SegmentationModel, build_model
from segkit.models.windows import Windows, blend_image


def _model(classes: int = 3) -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(arch="unet", base_channels=4, classes=classes)


def _pointwise(classes: int = 3) -> SegmentationModel:
    """Each output pixel depends on its own input pixel only (any size, any window)."""
    torch.manual_seed(0)
    spec = ModelSpec(arch="unet", encoder=None, classes=classes, divisor=16, task="multiclass")
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return SegmentationModel(torch.nn.Conv2d(3, classes, 1), spec).eval()


def _image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def _write(folder: Path, n: int = 2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"im{i}.png"  # lossless: the file holds exactly the array
        cv2.imwrite(str(path), cv2.cvtColor(_image(seed=i), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def test_arrays_give_probabilities_and_labels_at_their_own_size():
    predictor = Predictor(_model(3), PredictOptions(size=32))
    image = _image(40, 56)
    probs = predictor.probabilities(image)
    assert probs.shape == (3, 40, 56) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    labels = predictor.labels(image)
    assert labels.shape == (40, 56) and labels.dtype == np.uint8
    assert (labels == probs.argmax(0)).mean() > 0.99  # bilinear back: same arg-max but ties
    binary = Predictor(_model(1), PredictOptions(size=32)).probabilities(image)
    assert binary.shape == (1, 40, 56) and 0 <= binary.min() <= binary.max() <= 1


def test_an_array_predicts_what_its_file_predicts(tmp_path):
    paths = _write(tmp_path / "in", 2)
    predictor = Predictor(_model(3), PredictOptions(size=32))
    predictor.predict(tmp_path / "in", tmp_path / "out")
    for i, path in enumerate(paths):
        from_file = read_mask(tmp_path / "out" / f"{path.stem}.png")
        np.testing.assert_array_equal(predictor.labels(_image(seed=i)), from_file)


def test_the_checkpoint_is_loaded_once_for_files_folders_and_arrays(tmp_path, monkeypatch):
    model = _model(3)
    ckpt = save_checkpoint(
        tmp_path / "best.pt",
        {"model": model.state_dict(), "model_spec": model.spec.to_dict(), "config": {}},
    )
    loads = []
    original = checkpoint_module.model_from_checkpoint
    monkeypatch.setattr(
        checkpoint_module,
        "model_from_checkpoint",
        lambda *a, **k: loads.append(a) or original(*a, **k),
    )
    paths = _write(tmp_path / "in", 2)
    predictor = Predictor(ckpt, PredictOptions(size=32))
    folder = predictor.predict(tmp_path / "in", tmp_path / "a")
    files = predictor.predict(paths, tmp_path / "b")
    predictor.labels(_image())
    assert len(loads) == 1
    assert folder["count"] == files["count"] == 2
    for path in paths:
        np.testing.assert_array_equal(
            read_mask(tmp_path / "a" / f"{path.stem}.png"),
            read_mask(tmp_path / "b" / f"{path.stem}.png"),
        )


def test_windows_and_tta_apply_to_arrays_too():
    model = _pointwise(3)
    image = _image(40, 56)
    opts = PredictOptions(tile=32, overlap=0.5, tta="flip")
    got = Predictor(model, opts).probabilities(image)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    with torch.inference_mode():
        windows = Windows(32, 0.5, batch_size=8)
        expected = blend_image(lambda b: predict_proba(model, b, "flip"), x, windows)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)


def test_the_model_keeps_its_mode_and_a_caller_model_its_device(tmp_path):
    model = _model(1).train()
    Predictor(model, PredictOptions(size=32)).labels(_image())
    assert model.training
    _write(tmp_path / "in", 1)
    predict(model, tmp_path / "in", tmp_path / "out", device="cpu", size=32)
    assert model.training and next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("flip", TTA(flip=True)),
        ("scales=0.5,1,1.5", TTA(scales=(0.5, 1.0, 1.5))),
        ("flip+scales=0.75,1.25", TTA(True, (0.75, 1.25))),
        ("none", None),
        (None, None),
    ],
)
def test_tta_values(value, expected):
    assert parse_tta(value) == expected


BAD_TTA = "Unknown test-time augmentation tta='rotate'; use 'flip', 'scales=0.75,1,1.25'"


def test_a_bad_tta_gives_one_message_and_one_type_wherever_it_comes_in(tmp_path):
    from segkit.api import evaluate

    model = _model(3)
    calls = [
        lambda: PredictOptions(tta="rotate"),
        lambda: predict(model, tmp_path, tmp_path / "out", tta="rotate"),
        lambda: predict_proba(model, torch.zeros(1, 3, 16, 16), tta="rotate"),
        lambda: evaluate(tmp_path / "missing.pt", tta="rotate"),  # before the checkpoint
    ]
    for call in calls:
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value).startswith(BAD_TTA)
    for value in ("scales=0,1", "scales=a", "flip+flip", 3):
        with pytest.raises(ConfigError, match="Unknown test-time augmentation"):
            parse_tta(value)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_the_command_names_tta_as_a_flag(tmp_path, capsys, command):
    extra = ["in", "--out", str(tmp_path / "out")] if command == "predict" else []
    code = main([command, "--checkpoint", str(tmp_path / "x.pt"), "--tta", "rotate", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Unknown test-time augmentation --tta 'rotate'; use 'flip'" in err


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 0, "batch_size=0: must be a positive whole number"),
        ("writers", 0, "writers=0: must be a positive whole number"),
        ("tile", -5, "tile=-5: must be a positive whole number"),
        ("num_workers", -1, "num_workers=-1: must be a whole number >= 0"),
        ("overlap", 1.0, "overlap=1.0: the fraction of a window"),
        ("resize_back", "cubic", "Unknown resize_back='cubic'; use 'bilinear'"),
    ],
)
def test_each_option_is_checked_when_the_options_are_made(field, value, message):
    with pytest.raises(ConfigError, match=message):
        PredictOptions(**{field: value})


def test_an_unknown_option_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="Unknown prediction option 'overlapp'.*overlap"):
        predict(_model(1), tmp_path, tmp_path / "out", overlapp=0.5)


def test_a_window_smaller_than_the_divisor_is_refused_when_the_predictor_is_made():
    with pytest.raises(ConfigError, match="Tile size 8 is smaller than the model's divisor 16"):
        Predictor(_model(1), PredictOptions(tile=8))


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((20, 20), np.uint8), r"H x W x 3 RGB array, got \(20, 20\)"),
        (np.zeros((20, 20, 3), np.float32), "uint8 pixels.*got float32"),
        ([[0, 1]], "H x W x 3 RGB array, got list"),
    ],
)
def test_a_bad_array_is_refused_naming_its_shape_or_type(image, message):
    with pytest.raises(DataError, match=message):
        Predictor(_model(1)).labels(image)
