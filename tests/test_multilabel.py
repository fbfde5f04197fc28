"""Multi-label masks (classes that overlap): both layouts read back, bad inputs, the losses
and per-class metrics against references, and train -> evaluate -> predict through the CLI."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.cli import main
from segkit.data import build_dataset, build_transforms
from segkit.data.formats import read_stack
from segkit.data.formats.synth import SIZE, SYNTH_MULTILABEL_CLASSES, synth_multilabel
from segkit.data.meta import DatasetMeta
from segkit.engine import load_checkpoint
from segkit.engine.evaluation import Evaluator
from segkit.errors import ConfigError, DataError
from segkit.losses import build_loss
from segkit.metrics import MultiLabelConfusion

CLASSES = sorted(SYNTH_MULTILABEL_CLASSES)  # class folders are read in sorted order


def make_set(root: Path, n: int = 6) -> Path:
    return synth_multilabel(root, n=n)


def _stack(root: Path, stem: str) -> np.ndarray:
    return np.stack([cv2.imread(str(root / "masks" / c / f"{stem}.png"), 0) for c in CLASSES])


# --- reading --------------------------------------------------------------------------------


def test_class_folders_read_as_c_x_h_x_w_with_overlap(tmp_path):
    root = make_set(tmp_path)
    ds = build_dataset("multilabel", root, None)
    assert ds.class_names == CLASSES and ds.task == "multilabel" and len(ds) == 6
    item = ds[0]
    assert item["image"].shape == (SIZE[1], SIZE[0], 3)
    assert item["mask"].shape == (2, SIZE[1], SIZE[0]) and item["mask"].dtype == np.uint8
    np.testing.assert_array_equal(item["mask"], _stack(root, "s0") // 255)
    assert any((ds[i]["mask"].sum(0) == 2).any() for i in range(len(ds)))  # classes overlap
    meta = ds.metadata()
    assert meta.multilabel and meta.classes == tuple(CLASSES) and meta.flip_pairs == ()
    assert DatasetMeta.from_dict(meta.to_dict()).multilabel


def test_the_mask_goes_through_albumentations_as_channels(tmp_path):
    ds = build_dataset("multilabel", make_set(tmp_path), None)
    ds.transform = build_transforms(None, 32, train=False)
    item = ds[1]
    assert tuple(item["image"].shape) == (3, 32, 32)
    assert tuple(item["mask"].shape) == (2, 32, 32) and item["mask"].dtype == torch.uint8
    assert set(item["mask"].unique().tolist()) <= {0, 1}


def test_stacks_npy_and_tiff_read_like_the_class_folders(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    root = make_set(tmp_path / "folders", n=3)
    want = build_dataset("multilabel", root, None)
    for kind in ("npy", "npy_hwc", "tif"):
        dst = tmp_path / kind
        shutil.copytree(root / "images", dst / "images")
        (dst / "masks").mkdir()
        for i in range(3):
            planes = _stack(root, f"s{i}")  # 0/255, C x H x W
            if kind == "npy":
                np.save(dst / "masks" / f"s{i}.npy", planes // 255)
            elif kind == "npy_hwc":
                np.save(dst / "masks" / f"s{i}.npy", planes.transpose(1, 2, 0))
            else:
                tifffile.imwrite(dst / "masks" / f"s{i}.tif", planes)  # one page per class
        ds = build_dataset("multilabel", dst, None, classes=CLASSES)
        assert ds.layout == "stack" and ds.class_names == CLASSES
        for i in range(3):
            np.testing.assert_array_equal(ds[i]["mask"], want[i]["mask"])


# --- bad inputs -----------------------------------------------------------------------------


def test_a_class_folder_missing_a_mask_names_the_file_and_the_fix(tmp_path):
    root = make_set(tmp_path)
    (root / "masks" / "blue_disc" / "s3.png").unlink()
    with pytest.raises(DataError) as err:
        build_dataset("multilabel", root, None)
    msg = str(err.value)
    assert "blue_disc" in msg and "s3.png" in msg and "all-0 PNG" in msg and "\n" not in msg


def test_a_mask_with_other_values_than_0_1_255_names_the_file(tmp_path):
    root = make_set(tmp_path)
    path = root / "masks" / "red_disc" / "s2.png"
    mask = cv2.imread(str(path), 0)
    mask[0, :3] = 128  # an anti-aliased edge
    cv2.imwrite(str(path), mask)
    ds = build_dataset("multilabel", root, None)
    with pytest.raises(DataError, match=r"s2\.png.*holds values 128.*0 \(absent\) and 1 or 255"):
        ds[2]


def test_stack_errors(tmp_path):
    root = tmp_path / "s"
    (root / "masks").mkdir(parents=True)
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    np.save(root / "masks" / "a.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match="do not name their classes"):
        build_dataset("multilabel", root, None)
    ds = build_dataset("multilabel", root, None, classes=["a", "b"])
    with pytest.raises(DataError, match=r"a\.npy' has shape \(3, 8, 8\).*2 classes"):
        ds[0]
    with pytest.raises(DataError, match="at least 2 classes"):
        build_dataset("multilabel", root, None, classes=["a"])
    with pytest.raises(ConfigError, match="3 value.*for 2 classes"):
        build_dataset("multilabel", root, None, classes=["a", "b"], thresholds=[0.5, 0.5, 0.5])
    with pytest.raises(DataError, match="no such folder"):
        build_dataset("multilabel", make_set(tmp_path / "f", n=2), None, classes=["green_disc"])
    with pytest.raises(DataError, match=r"Cannot read mask stack"):
        (root / "masks" / "a.npy").write_bytes(b"not numpy")
        read_stack(root / "masks" / "a.npy", 2)


# --- losses and metrics ---------------------------------------------------------------------


def test_multilabel_losses_score_each_channel_as_binary():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.6).long()
    bce = build_loss("bce", mode="multilabel")(logits, target)
    torch.testing.assert_close(bce, F.binary_cross_entropy_with_logits(logits, target.float()))
    for name in ("dice", "soft_dice"):
        per_class = [
            build_loss(name, mode="binary")(logits[:, c : c + 1], target[:, c]) for c in range(3)
        ]
        got = build_loss(name, mode="multilabel")(logits, target)
        torch.testing.assert_close(got, torch.stack(per_class).mean())
    total = build_loss("bce + dice", mode="multilabel")(logits, target)
    torch.testing.assert_close(total, bce + build_loss("dice")(logits, target))  # inferred mode


def test_a_loss_that_cannot_do_multilabel_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Loss 'ce' cannot train a multi-label model.*bce"):
        build_loss("ce + dice", mode="multilabel")
    logits, target = torch.randn(1, 2, 4, 4), torch.ones(1, 2, 4, 4, dtype=torch.long)
    with pytest.raises(ConfigError, match="cannot score a multi-label target"):
        build_loss("ce")(logits, target)
    with pytest.raises(ConfigError, match="ignore_index=255 does not apply"):
        build_loss("bce", mode="multilabel", ignore_index=255)


def test_per_class_f1_and_iou_match_scikit_learn():
    from sklearn.metrics import f1_score, jaccard_score

    rng = np.random.default_rng(0)
    target = (rng.random((3, 4, 10, 12)) > 0.5).astype(np.int64)
    pred = np.where(rng.random(target.shape) > 0.3, target, 1 - target)
    cm = MultiLabelConfusion(4, ["a", "b", "c", "d"])
    for i in range(3):  # accumulated over batches
        cm.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    got = cm.compute()
    flat_t = target.transpose(0, 2, 3, 1).reshape(-1, 4)
    flat_p = pred.transpose(0, 2, 3, 1).reshape(-1, 4)
    f1 = f1_score(flat_t, flat_p, average=None)
    iou = jaccard_score(flat_t, flat_p, average=None)
    for c, name in enumerate("abcd"):
        assert got[f"f1_{name}"] == pytest.approx(f1[c])
        assert got[f"iou_{name}"] == pytest.approx(iou[c])
    assert got["mean_f1"] == pytest.approx(f1.mean()) and got["miou"] == pytest.approx(iou.mean())


def test_evaluator_uses_per_class_thresholds():
    probs = torch.tensor([0.3, 0.7]).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    logits, masks = torch.logit(probs), torch.ones(1, 2, 2, 2, dtype=torch.long)
    for thresholds, want in (([0.5, 0.5], (0.0, 1.0)), ([0.2, 0.8], (1.0, 0.0))):
        ev = Evaluator(["x", "y"], thresholds=thresholds)
        ev.update(logits, masks)
        result = ev.compute()
        assert (result["recall_x"], result["recall_y"]) == want


# --- through the CLI ------------------------------------------------------------------------


def _config(tmp_path: Path, root: Path, loss: str = "bce + dice") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n  dataset: multilabel\n  root: {root}\n  train_split: .\n  val_fraction: 0.34\n"
        "  image_size: 32\n  batch_size: 2\n  num_workers: 0\n"
        "  options: {thresholds: [0.2, 0.8]}\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        f"loss:\n  name: {loss}\ntrain:\n  epochs: 1\n  out_dir: {tmp_path / 'run'}\n"
        "  progress: false\n"
    )
    return cfg


def test_train_evaluate_predict_through_the_cli(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["synth", "multilabel", str(root), "--n", "6"]) == 0
    assert main(["train", str(_config(tmp_path, root))]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    spec = load_checkpoint(ckpt)["model_spec"]
    assert spec["task"] == "multilabel" and spec["classes"] == 2
    assert spec["meta"]["multilabel"] and spec["meta"]["thresholds"] == [0.2, 0.8]

    report = tmp_path / "metrics.json"
    argv = ["evaluate", "--checkpoint", str(ckpt), "--split", "val", "--json", str(report)]
    assert main(argv) == 0
    result = json.loads(report.read_text())
    assert {f"f1_{c}" for c in CLASSES} | {f"iou_{c}" for c in CLASSES} <= set(result)
    assert "mean_f1" in result and "miou" in result
    assert "f1_red_disc=" in capsys.readouterr().out
    assert main([*argv[:-2], "--threshold", "0.5,0.5,0.5"]) == 2  # one line, exit code 2
    assert "3 value(s) for 2 classes" in capsys.readouterr().err

    images = sorted((root / "images").glob("*.png"))[:2]
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(ckpt), *map(str, images), "--out", str(out)]
    assert main([*argv, "--overlay", "--threshold", "0.3,0.6"]) == 0
    for image in images:
        for c in CLASSES:
            mask = cv2.imread(str(out / f"{image.stem}_{c}.png"), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (SIZE[1], SIZE[0])  # the input's own size
            assert set(np.unique(mask).tolist()) <= {0, 255}
        assert (out / f"{image.stem}_overlay.png").is_file()
        assert not (out / f"{image.stem}.png").exists()


def test_ce_for_a_multilabel_set_stops_training_with_one_line(tmp_path, capsys):
    root = make_set(tmp_path / "data", n=4)
    assert main(["train", str(_config(tmp_path, root, loss="ce"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "Loss 'ce' cannot train a multi-label model" in err and "\n" not in err


def test_stack_class_names_must_be_file_names(tmp_path):
    root = tmp_path / "s"
    (root / "masks").mkdir(parents=True)
    (root / "images").mkdir()
    cv2.imwrite(str(root / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    np.save(root / "masks" / "a.npy", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DataError, match="can be file names"):
        build_dataset("multilabel", root, None, classes=["cell", "cell/nucleus"])
    with pytest.raises(DataError, match="unique names"):
        build_dataset("multilabel", root, None, classes=["cell", "cell"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A multi-label checkpoint trained for one epoch on 6 synthetic images."""
    from segkit.api import train
    from segkit.config import load_config

    tmp = tmp_path_factory.mktemp("ml")
    root = make_set(tmp / "data")
    train(load_config(_config(tmp, root)))
    return tmp / "run" / "best.pt", root


def test_predictor_arrays_tiles_and_tta(trained, tmp_path):
    from segkit.api import evaluate
    from segkit.inference import PredictOptions, Predictor

    ckpt, root = trained
    image = cv2.imread(str(root / "images" / "s0.png"))[..., ::-1].copy()
    predictor = Predictor(ckpt, PredictOptions(threshold=(0.0, 0.999999)), device="cpu")
    masks = predictor.labels(image)
    assert masks.shape == (2, SIZE[1], SIZE[0]) and masks[0].all() and not masks[1].any()
    probs = predictor.probabilities(image)
    assert probs.shape == (2, SIZE[1], SIZE[0]) and probs.min() >= 0.0 and probs.max() <= 1.0
    tiled = Predictor(ckpt, PredictOptions(tile=32, overlay=True), device="cpu")
    assert tiled.labels(image).shape == (2, SIZE[1], SIZE[0])
    written = tiled.predict([root / "images" / "s0.png"], tmp_path / "tiled")  # masks in bands
    assert sorted(Path(p).name for p in written["outputs"]) == [f"s0_{c}.png" for c in CLASSES]
    for c, mask in zip(CLASSES, tiled.labels(image)):
        on_disk = cv2.imread(str(tmp_path / "tiled" / f"s0_{c}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(on_disk, mask * 255)
    assert (tmp_path / "tiled" / "s0_overlay.png").is_file()
    result = evaluate(ckpt, split="val", tta="flip", threshold=0.5, device="cpu")
    assert set(result) >= {f"f1_{c}" for c in CLASSES}


def test_threshold_errors(trained, tmp_path, capsys):
    from segkit.inference import PredictOptions, Predictor

    ckpt, root = trained
    with pytest.raises(ConfigError, match=r"threshold=0\.5,x: give a probability"):
        PredictOptions(threshold="0.5,x")
    with pytest.raises(ConfigError, match="3 value.*for 2 classes"):
        Predictor(ckpt, PredictOptions(threshold=(0.1, 0.2, 0.3)), device="cpu")
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(ckpt), str(root / "images"), "--out", str(out)]
    assert main([*argv, "--rle", str(tmp_path / "sub.csv")]) != 0
    assert "RLE CSV" in capsys.readouterr().err


def test_per_class_thresholds_are_refused_for_a_binary_model(tmp_path):
    from segkit.inference import PredictOptions, Predictor
    from segkit.inference.scoring import refuse_threshold
    from segkit.models import build_model

    model = build_model(arch="unet", encoder=None, classes=1, base_channels=4)
    with pytest.raises(ConfigError, match="one threshold per class is for multi-label"):
        Predictor(model, PredictOptions(threshold=(0.4, 0.6)))
    with pytest.raises(ConfigError, match="applies to multi-label models"):
        refuse_threshold(model.spec, 0.4)  # evaluate --threshold


def test_inference_model_gives_back_the_multilabel_logits(trained):
    from segkit.engine import model_from_checkpoint
    from segkit.inference import InferenceModel

    model = model_from_checkpoint(trained[0], device="cpu").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(InferenceModel(model)(x), model(x), atol=1e-3, rtol=1e-3)


def test_validation_during_training_uses_the_recorded_thresholds(trained):
    import pandas as pd

    from segkit.api import evaluate

    ckpt, _ = trained
    last = pd.read_csv(ckpt.parent / "history.csv").iloc[-1]
    result = evaluate(ckpt, split="val", device="cpu")  # thresholds [0.2, 0.8] from the spec
    for c in CLASSES:
        assert result[f"f1_{c}"] == pytest.approx(last[f"val_f1_{c}"], nan_ok=True)
        assert result[f"iou_{c}"] == pytest.approx(last[f"val_iou_{c}"], nan_ok=True)


def test_export_records_the_task_and_thresholds(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from segkit.export import export_onnx

    export_onnx(trained[0], tmp_path / "m.onnx", check=True)
    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["segkit.task"] == "multilabel" and props["segkit.classes"] == 2
    assert props["segkit.thresholds"] == [0.2, 0.8]


def test_tiled_scoring_equals_whole_image_scoring_when_one_window_covers_the_image(trained):
    from segkit.api import evaluate
    from segkit.engine import model_from_checkpoint
    from segkit.engine.evaluation import run_evaluation
    from segkit.inference import PredictOptions, Predictor
    from segkit.inference.inputs import normalize
    from segkit.inference.scoring import Scorer

    ckpt, root = trained
    model = model_from_checkpoint(ckpt, device="cpu")
    stems = sorted(p.stem for p in (root / "images").glob("*.png"))
    images = np.stack([cv2.imread(str(root / "images" / f"{s}.png"))[..., ::-1] for s in stems])
    images = torch.from_numpy(images.copy())
    masks = torch.from_numpy(np.stack([_stack(root, s) // 255 for s in stems]).astype(np.int64))
    x = normalize(images, model.spec.mean, model.spec.std)  # native size: 48 x 32

    def evaluator() -> Evaluator:
        return Evaluator(CLASSES, multilabel=True, thresholds=[0.2, 0.8])

    cpu = torch.device("cpu")
    whole = run_evaluation(model, [{"image": x, "mask": masks}], evaluator(), cpu)
    pairs = [{"image": i[None], "mask": m[None]} for i, m in zip(images, masks)]
    predictor = Predictor(model, PredictOptions(tile=64), "cpu")
    tiled = Scorer(predictor, evaluator()).score(pairs)
    assert tiled == pytest.approx(whole, abs=1e-12, nan_ok=True)
    # and through evaluate: multi-label models take --tile too
    assert set(evaluate(ckpt, split="val", device="cpu", tile=32)) >= {f"f1_{c}" for c in CLASSES}
