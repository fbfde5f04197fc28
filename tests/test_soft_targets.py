"""Soft (area-coverage) binary targets: preparation, data set, transforms, losses, metrics,
and the resolution ceiling, against hand-computed values."""

import math
import os
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.config import load_config
from segkit.data import CarvanaDataset, build_transforms, prepare_carvana, synth_carvana
from segkit.data.io import map_255_to_1, read_mask
from segkit.data.soft import decode_coverage, encode_coverage, shrink_coverage, shrink_labels
from segkit.engine.evaluation import Evaluator
from segkit.errors import ConfigError, DataError
from segkit.inference.ceiling import low_res_target, mean_row, resolution_ceiling
from segkit.losses import build_loss

REPO = Path(__file__).resolve().parents[1]
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
CARVANA_REAL = DATA / "carvana_real5"


def stripes(width: int = 8, height: int = 8, car: int = 5) -> np.ndarray:
    """An ``height x width`` 0/1 mask whose first ``car`` columns are car."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, :car] = 1
    return mask


# ------------------------------------------------------------------ coverage and ceiling


def test_coverage_and_labels_of_a_mask_shrunk_by_four():
    cover = shrink_coverage(stripes(), 2)  # 4x4 blocks: columns 0-3 all car, 4-7 a quarter
    np.testing.assert_allclose(cover, [[1.0, 0.25], [1.0, 0.25]])
    assert cover.dtype == np.float32
    # pixel centres: small column j samples source column floor((j + 0.5) * 4) = 2, 6
    np.testing.assert_array_equal(shrink_labels(stripes(), 2), [[1, 0], [1, 0]])
    np.testing.assert_array_equal(encode_coverage(cover), [[255, 64], [255, 64]])
    assert decode_coverage(np.array([64], np.uint8))[0] == pytest.approx(64 / 255)


def test_shrinking_refuses_a_mask_that_is_not_binary():
    with pytest.raises(ValueError, match="binary 0/1 mask"):
        shrink_coverage(np.full((4, 4), 255, np.uint8), 2)


def test_the_soft_way_is_exactly_better_on_a_hand_computed_mask():
    # back to 8 columns bilinearly: binary [1, 0] gives 1, 1, .875, .625, .375, .125, 0, 0, so
    # 4 of the 5 car columns (Dice 2*4 / (4 + 5)); soft [1, .251] gives .906, .719, .532 in
    # columns 2-4 and .345 in column 5: exactly the 5 car columns
    ceiling = resolution_ceiling(stripes(), 2)
    assert ceiling["binary"] == pytest.approx(8 / 9)
    assert ceiling["soft"] == 1.0
    assert mean_row([ceiling, {"binary": 1.0, "soft": 1.0}])["binary"] == pytest.approx(17 / 18)
    with pytest.raises(ValueError, match="way must be one of"):
        low_res_target(stripes(), 2, "fuzzy")


def test_the_ceiling_of_a_mask_at_its_own_size_is_one_each_way():
    mask = (np.random.default_rng(0).random((16, 16)) > 0.5).astype(np.uint8)
    assert resolution_ceiling(mask, 16) == {"binary": 1.0, "soft": 1.0}


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(not CARVANA_REAL.is_dir(), reason=f"no real Carvana at {CARVANA_REAL}")
def test_the_ceiling_script_on_the_real_carvana_pairs(capsys):
    script = REPO / "examples" / "carvana_single_class" / "ceiling.py"
    argv = sys.argv
    sys.argv = [str(script), "--data", str(CARVANA_REAL), "--size", "128"]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    mean = capsys.readouterr().out.splitlines()[-1].split()
    assert mean[0] == "mean"
    assert float(mean[1]) == pytest.approx(0.99172, abs=1e-5)  # binary, as in the README
    assert float(mean[2]) == pytest.approx(0.99734, abs=1e-5)  # soft


def test_the_ceiling_script_says_what_is_wrong_with_the_folder(tmp_path, capsys):
    script = REPO / "examples" / "carvana_single_class" / "ceiling.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--data", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ preparation, data set


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    root = tmp_path_factory.mktemp("carvana") / "carvana"
    synth_carvana(root, cars=2, views=2, seed=0, size=(96, 64))
    return root


def test_prepare_soft_writes_coverage_beside_the_unchanged_binary_pairs(kaggle, tmp_path):
    plain, soft = tmp_path / "plain", tmp_path / "soft"
    prepare_carvana(kaggle, plain, size=16, workers=1)
    index = prepare_carvana(kaggle, soft, size=16, workers=1, soft=True)
    assert "soft_mask" not in (plain / "index.csv").read_text().splitlines()[0]
    assert list(index["soft_mask"]) == [f"soft_masks/{i}.png" for i in index["id"]]
    for sid in index["id"]:  # the binary pairs are byte for byte what a plain prepare writes
        for part in ("images", "masks"):
            assert (plain / part / f"{sid}.png").read_bytes() == (
                soft / part / f"{sid}.png"
            ).read_bytes()
        full = map_255_to_1(read_mask(kaggle / "train_masks" / f"{sid}_mask.gif"))
        np.testing.assert_array_equal(
            read_mask(soft / "soft_masks" / f"{sid}.png"),
            encode_coverage(cv2.resize(full.astype(np.float32), (16, 16), interpolation=3)),
        )
    # a plain re-run keeps the coverage of the pairs it leaves as they are
    again = prepare_carvana(kaggle, soft, size=16, workers=1)
    assert again.attrs["skipped"] == 4 and list(again["soft_mask"]) == list(index["soft_mask"])
    # a soft run over a plain folder adds the coverage masks
    added = prepare_carvana(kaggle, plain, size=16, workers=1, soft=True)
    assert added.attrs["written"] == 4 and (plain / "soft_masks").is_dir()


def test_the_dataset_gives_float_coverage_targets(kaggle, tmp_path):
    prepare_carvana(kaggle, tmp_path / "p", size=16, workers=1, soft=True)
    ds = CarvanaDataset(tmp_path / "p")
    binary = ds[0]["mask"]
    assert binary.dtype == np.int64 and set(np.unique(binary)) <= {0, 1}
    ds.use_soft_targets()
    item = ds[0]
    stored = read_mask(tmp_path / "p" / "soft_masks" / f"{item['id']}.png")
    assert item["mask"].dtype == np.float32
    np.testing.assert_allclose(item["mask"], stored / 255.0, rtol=1e-6)
    assert ((item["mask"] > 0) & (item["mask"] < 1)).any()


def test_kaggle_masks_become_coverage_through_the_area_resize(kaggle):
    ds = CarvanaDataset(kaggle)
    ds.use_soft_targets()
    full = ds.read(0)[1]
    assert full.dtype == np.float32 and set(np.unique(full)) <= {0.0, 1.0}
    ds.transform = build_transforms(None, 16, train=False, soft=True)
    mask = ds[0]["mask"]
    assert mask.dtype == torch.float32
    expected = cv2.resize(full, (16, 16), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(mask.numpy(), expected, atol=1e-6)


def test_a_folder_prepared_without_soft_says_how_to_add_it(kaggle, tmp_path):
    prepare_carvana(kaggle, tmp_path / "p", size=16, workers=1)
    ds = CarvanaDataset(tmp_path / "p")
    with pytest.raises(DataError, match="prepared without --soft.*--soft"):
        ds.use_soft_targets()


def test_soft_targets_refuse_a_multiclass_data_set_and_an_ignore_label(tmp_path):
    from segkit.data import HelenDataset, synth_helen

    synth_helen(tmp_path / "h", n=2, seed=0, size=32)
    with pytest.raises(ConfigError, match="needs a binary data set.*11 classes"):
        HelenDataset(tmp_path / "h", "train").use_soft_targets()


def test_soft_targets_refuse_an_ignore_label(kaggle):
    ds = CarvanaDataset(kaggle)
    ds.ignore_index = 255
    with pytest.raises(ConfigError, match="unset loss.ignore_index"):
        ds.use_soft_targets()


def test_prepare_helen_refuses_soft(tmp_path, capsys):
    from segkit.cli import main

    assert main(["prepare", "helen", str(tmp_path), str(tmp_path / "out"), "--soft"]) == 2
    err = capsys.readouterr().err  # Helen's step takes no --soft: it says which options it takes
    assert "data set 'helen' has no prepare option --soft; its prepare options: --overwrite." in err
    assert "--soft applies to carvana only" in err


def test_soft_flips_keep_the_float_mask():
    image = np.zeros((8, 8, 3), np.uint8)
    mask = shrink_coverage(stripes(), 8) * 0.5  # 0.5 in the 5 left columns
    flip = build_transforms(None, 8, train=False, soft=True)  # resize only: unchanged
    np.testing.assert_array_equal(flip(image=image, mask=mask)["mask"].numpy(), mask)
    from segkit.config import AugmentConfig

    out = build_transforms(AugmentConfig(hflip=1.0), 8, train=True, soft=True)(
        image=image, mask=mask
    )["mask"]
    np.testing.assert_array_equal(out.numpy(), mask[:, ::-1])


def test_binary_transforms_keep_nearest_labels():
    mask = stripes()
    out = build_transforms(None, 2, train=False)(image=np.zeros((8, 8, 3), np.uint8), mask=mask)
    np.testing.assert_array_equal(out["mask"].numpy(), [[1, 0], [1, 0]])


# ------------------------------------------------------------------------ losses, metrics


def test_bce_and_soft_dice_of_soft_targets_by_hand():
    logits = torch.full((1, 1, 1, 2), math.log(3.0))  # p = 0.75 everywhere
    target = torch.tensor([[[0.75, 0.25]]])
    bce = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25) + 0.25 * math.log(0.75)
            + 0.75 * math.log(0.25)) / 2  # fmt: skip
    assert float(build_loss("bce")(logits, target)) == pytest.approx(bce, rel=1e-6)
    assert float(build_loss("ce")(logits, target)) == pytest.approx(bce, rel=1e-6)
    # 2*(.75*.75 + .75*.25) / (2*.75^2 + .75^2 + .25^2) = 1.5 / 1.75
    dice = build_loss("soft_dice", smooth=0.0)(logits, target)
    assert float(dice) == pytest.approx(1 - 1.5 / 1.75, rel=1e-6)
    total = build_loss("bce + soft_dice", smooth=0.0)(logits, target)
    assert float(total) == pytest.approx(bce + 1 - 1.5 / 1.75, rel=1e-6)


def test_soft_class_weights_interpolate_between_the_two_classes():
    logits, target = torch.zeros(1, 1, 1, 1), torch.tensor([[[0.25]]])
    loss = build_loss("bce", class_weights=[1.0, 3.0])(logits, target)
    assert float(loss) == pytest.approx(math.log(2.0))  # one pixel: its weight cancels
    two = torch.tensor([[[0.25, 0.0]]])
    logits2 = torch.tensor([[[[0.0, 100.0]]]])  # second pixel: BCE 100 at weight 1
    weight = 0.75 * 1.0 + 0.25 * 3.0
    expected = (weight * math.log(2.0) + 100.0) / (weight + 1.0)
    got = build_loss("bce", class_weights=[1.0, 3.0])(logits2, two)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_and_bce_are_best_at_the_target():
    target = torch.tensor([[[0.2, 0.9, 0.5, 0.0]]])
    logit = torch.logit(target.clamp(1e-4, 1 - 1e-4)).unsqueeze(1).requires_grad_(True)
    for name in ("bce", "soft_dice"):
        loss = build_loss(name, smooth=0.0)
        (grad,) = torch.autograd.grad(loss(logit, target), logit)
        assert grad.abs().max() < 1e-3, name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("dice", "Loss 'dice' takes integer labels"),
        ("focal", "Loss 'focal'"),
        ("bce + dice", "term\\(s\\) dice"),
    ],  # fmt: skip
)
def test_losses_without_soft_targets_say_which_to_use(name, message):
    with pytest.raises(TypeError, match=message + ".*soft_dice, bce"):
        build_loss(name)(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), 0.5))


def test_soft_targets_out_of_range_multiclass_or_ignored_are_refused():
    logits = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        build_loss("bce")(logits, torch.full((1, 2, 2), 255.0))
    with pytest.raises(ValueError, match="outside 0..1"):
        build_loss("bce")(logits, torch.full((1, 2, 2), float("nan")))
    with pytest.raises(TypeError, match="binary tasks"):
        build_loss("ce")(torch.zeros(1, 3, 2, 2), torch.full((1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="unset ignore_index"):
        build_loss("bce", ignore_index=255)(logits, torch.full((1, 2, 2), 0.5))


def test_integer_targets_score_as_before():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    labels = torch.tensor([[[1, 0], [0, 1]]])
    as_float = build_loss("bce")(logits, labels.float())
    assert float(build_loss("bce")(logits, labels)) == pytest.approx(float(as_float))


def test_the_evaluator_thresholds_soft_targets_at_one_half():
    ev = Evaluator()
    logits = torch.tensor([[[[1.0, 1.0, -1.0, -1.0]]]])  # predicted 1, 1, 0, 0
    ev.update(logits, torch.tensor([[[0.6, 0.4, 0.51, 0.2]]]))  # as labels: 1, 0, 1, 0
    np.testing.assert_array_equal(ev.cm.matrix.numpy(), [[1, 1], [1, 1]])
    probs = torch.sigmoid(logits[0, 0, 0])
    t = torch.tensor([0.6, 0.4, 0.51, 0.2])
    expected = (2 * (probs * t).sum() + 1) / ((probs**2).sum() + (t**2).sum() + 1)
    assert ev.compute()["soft_dice"] == pytest.approx(float(expected), rel=1e-6)


# ------------------------------------------------------------------------------ training


def test_a_config_with_soft_targets_and_plain_dice_is_refused(kaggle, tmp_path):
    from segkit.api import build_experiment

    cfg = load_config(
        REPO / "examples" / "carvana_single_class" / "config.yaml",
        [
            f"data.root={kaggle}",
            "data.prepare_size=null",
            "data.soft_targets=true",
            "loss.name=dice",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            f"train.out_dir={tmp_path / 'run'}",
            "data.val_fraction=0.5",
        ],  # fmt: skip
    )
    with pytest.raises(ConfigError, match="loss.name 'dice' takes integer labels"):
        build_experiment(cfg)


@pytest.mark.slow
def test_training_on_soft_targets_prepares_them_and_trains(kaggle, tmp_path):
    from segkit.api import train

    cfg = load_config(
        REPO / "examples" / "carvana_single_class" / "config.yaml",
        [
            f"data.root={kaggle}",
            "data.prepare_size=16",
            "data.image_size=16",
            f"data.prepared_root={tmp_path / 'prepared'}",
            "data.soft_targets=true",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            "data.batch_size=2",
            "data.num_workers=0",
            "train.epochs=1",
            "train.progress=false",
            "data.val_fraction=0.5",
            f"train.out_dir={tmp_path / 'run'}",
        ],  # fmt: skip
    )
    result = train(cfg)
    assert (tmp_path / "prepared" / "soft_masks").is_dir()
    assert (tmp_path / "run" / "best.pt").is_file() and math.isfinite(result["best_value"])
