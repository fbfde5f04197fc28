"""Training on random crops at native resolution (data.crop): transforms, checks, windows,
validation and prediction at each image's own size."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.config import AugmentConfig, CropConfig, all_keys, load_config
from segkit.data import LabelAwareHorizontalFlip, build_transforms, check_crop, crop_steps
from segkit.errors import ConfigError

UNIT = {"mean": (0, 0, 0), "std": (1, 1, 1)}


def _pair(h=40, w=60):
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:20, 30:40] = 1
    return image, mask


def test_crop_config_keys_and_overrides():
    assert {"data.crop", "data.crop.size", "data.crop.scale", "data.crop.jitter"} <= set(all_keys())
    assert load_config().data.crop is None  # default: today's resize
    cfg = load_config(None, ["data.crop.size=128", "data.crop.jitter=[0.5, 2]"])
    assert cfg.data.crop == CropConfig(size=128, jitter=[0.5, 2.0])
    assert load_config(None, ["data.crop={size: 64, scale: 0.5}"]).data.crop.scale == 0.5
    assert load_config(None, ["data.crop.size=64", "data.crop=null"]).data.crop is None


def test_unknown_crop_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="data.crop.scale"):
        load_config(None, ["data.crop.scael=0.5"])


@pytest.mark.parametrize(
    ("crop", "words"),
    [
        (CropConfig(size=0), "data.crop.size"),
        (CropConfig(scale=0.0), "data.crop.scale"),
        (CropConfig(scale=float("nan")), "data.crop.scale"),
        (CropConfig(jitter=[1.25, 0.75]), r"low <= high.*\[0.75, 1.25\]"),
        (CropConfig(jitter=[0.5]), "data.crop.jitter is"),
        (CropConfig(jitter=[-1.0, 1.0]), "data.crop.jitter is"),
        (CropConfig(foreground=1.5), "data.crop.foreground"),
        (CropConfig(overlap=1.0), "data.crop.overlap"),
    ],
)
def test_bad_crop_values_name_the_key(crop, words):
    with pytest.raises(ConfigError, match=words):
        check_crop(crop)
    with pytest.raises(ConfigError, match=words):  # also where the pipeline is built
        build_transforms(None, 32, train=False, crop=crop)


def test_training_crops_have_the_crop_size_at_native_resolution():
    image, mask = _pair(40, 60)
    pipe = build_transforms(None, 256, train=True, crop=CropConfig(size=32), **UNIT)
    for _ in range(5):
        out = pipe(image=image, mask=mask)
        assert out["image"].shape == (3, 32, 32) and out["mask"].shape == (32, 32)
        # native scale: the crop is a window of the image, pixel for pixel
        crop = (out["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hits = [
            (y, x)
            for y in range(40 - 31)
            for x in range(60 - 31)
            if np.array_equal(image[y : y + 32, x : x + 32], crop)
        ]
        assert len(hits) == 1
        y, x = hits[0]
        np.testing.assert_array_equal(out["mask"].numpy(), mask[y : y + 32, x : x + 32])


def test_scale_resizes_before_cropping_and_jitter_varies_it():
    image, mask = _pair(40, 60)
    steps = crop_steps(CropConfig(size=16, scale=0.5))
    scale = steps[0]
    out = scale(image=image, mask=mask)
    assert out["image"].shape[:2] == (20, 30)  # scale 0.5 of 40 x 60, by area averaging
    np.testing.assert_array_equal(
        out["image"], cv2.resize(image, (30, 20), interpolation=cv2.INTER_AREA)
    )
    assert crop_steps(CropConfig(size=16))[0].__class__.__name__ == "PadIfNeeded"  # factor 1
    jittered = crop_steps(CropConfig(size=16, scale=0.5, jitter=[0.5, 2.0]))[0]
    shapes = {jittered(image=image)["image"].shape[0] for _ in range(20)}
    assert min(shapes) >= 10 and max(shapes) <= 40 and len(shapes) > 3


def test_small_images_are_padded_masks_with_the_ignore_index_or_background():
    image, mask = _pair(20, 24)
    crop = CropConfig(size=32)
    out = build_transforms(None, 256, True, **UNIT, ignore_index=255, crop=crop)(
        image=image, mask=mask
    )
    values = set(np.unique(out["mask"].numpy()))
    assert out["mask"].shape == (32, 32) and 255 in values
    assert (out["mask"].numpy() == 255).sum() == 32 * 32 - 20 * 24
    out = build_transforms(None, 256, True, **UNIT, crop=crop)(image=image, mask=mask)
    assert set(np.unique(out["mask"].numpy())) <= {0, 1}
    assert out["mask"].numpy().sum() == mask.sum()  # the whole image is inside the crop


def test_foreground_crops_hold_a_labelled_pixel():
    image = np.zeros((200, 200, 3), np.uint8)
    mask = np.zeros((200, 200), np.uint8)
    mask[190:195, 5:10] = 1
    pipe = build_transforms(None, 64, True, **UNIT, crop=CropConfig(size=32, foreground=1.0))
    assert all(pipe(image=image, mask=mask)["mask"].sum() > 0 for _ in range(10))


def test_label_aware_flip_and_augmentations_are_kept_with_crops():
    pipe = build_transforms(
        AugmentConfig(hflip=1.0), 64, True, flip_pairs=[(2, 3)], crop=CropConfig(size=16)
    )
    assert any(isinstance(t, LabelAwareHorizontalFlip) for t in pipe.transforms)


def test_evaluation_sees_whole_images_at_native_size():
    image, mask = _pair(40, 60)
    out = build_transforms(None, 256, False, **UNIT, crop=CropConfig(size=16, scale=0.5))(
        image=image, mask=mask
    )
    assert out["image"].shape == (3, 40, 60)
    np.testing.assert_array_equal(out["mask"].numpy(), mask)


def _tiny_model():
    from segkit.models import build_model

    torch.manual_seed(0)
    return build_model(arch="unet", encoder=None, classes=1, base_channels=4).eval()


def test_scaled_windows_equal_the_model_when_one_window_covers_the_image():
    import torch.nn.functional as F

    from segkit.models import crop, pad_to_divisor
    from segkit.models.windows import ScaledWindows, Windows, probs_to_logits

    model = _tiny_model()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(ScaledWindows(model, Windows(tile=64))(x), model(x))
        # at scale 0.5 a 32 px window covers 64 image px: the image is shrunk by area
        # averaging, run (padded to the divisor and cropped back), and its probabilities
        # enlarged back
        padded, size = pad_to_divisor(F.interpolate(x, (16, 24), mode="area"), model.spec.divisor)
        half = torch.sigmoid(crop(model(padded), size))
        back = F.interpolate(half, size=(32, 48), mode="bilinear", align_corners=False)
        scaled = ScaledWindows(model, Windows(tile=32, scale=0.5))(x)
        torch.testing.assert_close(scaled, probs_to_logits(back, sigmoid=True))
        out = ScaledWindows(model, Windows(tile=16, scale=0.5))(torch.randn(1, 3, 70, 90))
    assert out.shape == (1, 1, 70, 90)  # at the input's size, whatever the scale


def test_crop_size_must_fit_the_model_divisor():
    from segkit.api import check_crop_size
    from segkit.models import ModelSpec

    with pytest.raises(ConfigError, match=r"data.crop.size=100 .* 32.* 96 or 128"):
        check_crop_size(100, ModelSpec(divisor=32))
    check_crop_size(96, ModelSpec(divisor=32))


def test_crops_refuse_prepared_squares(tmp_path):
    from segkit.api import build_experiment
    from segkit.data import synth_carvana

    synth_carvana(tmp_path / "raw", cars=2, views=1, seed=0, size=(96, 64))
    cfg = load_config(
        None,
        [
            "data.dataset=carvana",
            f"data.root={tmp_path / 'raw'}",
            "data.val_fraction=0.5",
            "data.prepare_size=32",
            f"data.prepared_root={tmp_path / 'prepared'}",
            "data.crop.size=32",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
        ],
    )
    with pytest.raises(ConfigError, match="Unset data.prepare_size"):
        build_experiment(cfg)
    assert not (tmp_path / "prepared").exists()  # refused before anything was prepared


def test_preview_of_large_whole_images_is_shrunk_to_one_size():
    from segkit.engine.evaluation import PREVIEW_SIDE, Evaluator

    ev = Evaluator(preview=3)
    for h, w in ((1024, 1536), (1000, 1400)):
        logits = torch.randn(1, 1, h, w)
        ev.update(logits, torch.zeros(1, h, w, dtype=torch.long))
        ev.keep_images(torch.rand(1, 3, h, w))
    batch = ev.preview_batch()
    assert batch["image"].shape == (2, 3, PREVIEW_SIDE * 2 // 3, PREVIEW_SIDE)
    assert batch["mask"].shape == batch["pred"].shape == (2, PREVIEW_SIDE * 2 // 3, PREVIEW_SIDE)


def test_read_resized_by_a_scale_keeps_the_aspect(tmp_path):
    from segkit.data.io import read_resized

    image, _ = _pair(40, 60)
    for name in ("a.png", "a.jpg"):
        path = tmp_path / name
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        out, original = read_resized(path, None, scale=0.5)
        assert out.shape == (20, 30, 3) and original == (40, 60)


def _cli(*argv):
    from segkit.cli import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def crop_run(tmp_path_factory):
    from segkit.data import synth_carvana

    base = tmp_path_factory.mktemp("crops")
    root = base / "raw"
    synth_carvana(root, cars=2, views=2, seed=0, size=(150, 100))  # sides no divisor divides
    cfg = base / "config.yaml"
    cfg.write_text(
        f"data:\n  dataset: carvana\n  root: {root}\n  val_fraction: 0.5\n  batch_size: 2\n"
        "  num_workers: 0\n  crop: {size: 32, scale: 0.5, jitter: [0.8, 1.2]}\n"
        "model: {arch: unet, encoder: null, base_channels: 4}\nloss: {name: soft_dice}\n"
        "train: {epochs: 1, out_dir: run, progress: false, monitor: val_soft_dice}\n"
    )
    assert _cli("train", cfg) == 0
    return base, root


def test_crop_trained_checkpoint_records_the_crop(crop_run):
    from segkit.engine import load_checkpoint

    ckpt = load_checkpoint(crop_run[0] / "run" / "best.pt")
    assert ckpt["model_spec"]["options"]["crop"] == {"size": 32, "scale": 0.5, "overlap": 0.25}
    assert ckpt["config"]["data"]["crop"]["size"] == 32


def test_crop_trained_model_evaluates_and_predicts_at_full_size(crop_run, tmp_path, capsys):
    base, root = crop_run
    best = base / "run" / "best.pt"
    assert (
        _cli("evaluate", "--checkpoint", best, "--split", "val", "--json", tmp_path / "m.json") == 0
    )
    assert "soft_dice" in capsys.readouterr().out
    out = tmp_path / "pred"
    assert _cli("predict", "--checkpoint", best, root / "train", "--out", out) == 0
    labels = sorted(Path(out).glob("*.png"))
    assert len(labels) == 4
    assert all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (100, 150) for p in labels)


def test_prediction_of_a_crop_trained_model_runs_windows_at_the_training_scale(crop_run):
    from segkit.inference import Predictor

    predictor = Predictor(crop_run[0] / "run" / "best.pt", device="cpu")
    recipe = predictor.recipe
    assert recipe.windows.tile == 32 and recipe.scale == 0.5 and recipe.size is None
    image, _ = _pair(100, 150)
    assert predictor.labels(image).shape == (100, 150)
    from segkit.inference import PredictOptions

    squashed = Predictor(crop_run[0] / "run" / "best.pt", PredictOptions(size=64), device="cpu")
    recipe = squashed.recipe
    assert recipe.windows is None and recipe.scale == 1.0 and recipe.size == 64


def test_validation_during_training_scores_what_evaluate_scores(crop_run, tmp_path):
    import json

    import pandas as pd

    base, _ = crop_run
    history = pd.read_csv(base / "run" / "history.csv").iloc[-1]
    report = tmp_path / "val.json"
    assert _cli("evaluate", "--checkpoint", base / "run" / "best.pt", "--split", "val",
                "--json", report) == 0  # fmt: skip
    scores = json.loads(report.read_text())
    # both: whole images at their own size, windows at the crop scale
    assert scores["f1_car"] == pytest.approx(history["val_f1_car"], abs=1e-6)
    assert scores["soft_dice"] == pytest.approx(history["val_soft_dice"], abs=1e-6)
