"""The values label files hold, kept on the way out: binary masks stored as 0/255 are
predicted as 0/255 (0/1 masks as 0/1, as before), and ``segkit score`` reads a checkpoint's
own label values (Cityscapes' labelIds) and says which ``label_type`` the files need."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.cli import main
from segkit.data import build_dataset, synth_carvana
from segkit.data.checks import foreground_value
from segkit.data.io import read_mask, write_mask


def _binary_folder(root: Path, foreground: int = 255, n: int = 4, size: int = 32) -> Path:
    """Images with a bright square on noise, masks of the square as 0/``foreground``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(2, size // 2, 2)
        mask[top : top + size // 3, left : left + size // 3] = foreground
        image[mask > 0] = 220
        cv2.imwrite(str(root / "images" / f"img{i}.png"), image)
        write_mask(root / "masks" / f"img{i}.png", mask)
    return root


# --- binary masks: the foreground value they hold ------------------------------------------


def test_foreground_value_is_255_only_for_0_255_binary_masks(tmp_path):
    assert foreground_value(build_dataset("folder", _binary_folder(tmp_path / "a"), None)) == 255
    assert (
        foreground_value(build_dataset("folder", _binary_folder(tmp_path / "b", 1), None)) is None
    )
    mixed = _binary_folder(tmp_path / "c")
    write_mask(mixed / "masks" / "img1.png", (read_mask(mixed / "masks" / "img1.png") > 0) * 1)
    assert foreground_value(build_dataset("folder", mixed, None)) is None  # 0/1 and 0/255
    empty = _binary_folder(tmp_path / "d", 0)
    assert foreground_value(build_dataset("folder", empty, None)) is None
    three = build_dataset("folder", _binary_folder(tmp_path / "e"), None, classes=3)
    three.samples = []  # not binary: never asked (and no samples to read)
    assert foreground_value(three) is None
    ignored = build_dataset("folder", _binary_folder(tmp_path / "f"), None).read_as(
        in_channels=3, ignore_index=255
    )
    assert foreground_value(ignored) is None  # 255 left out: no object value to write


@pytest.mark.parametrize(("mask_format", "value"), [("gif", None), ("csv", None), ("png", 255)])
def test_carvana_gifs_and_rle_are_0_1_its_png_masks_0_255(tmp_path, mask_format, value):
    """Kaggle's GIFs (and the RLE CSV) hold 0/1: their predictions stay 0/1, as before."""
    root = synth_carvana(tmp_path, cars=2, views=2, size=(48, 32), mask_format=mask_format)
    assert foreground_value(build_dataset("carvana", root, "train")) == value


def _train(tmp_path: Path, root: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n  dataset: folder\n  root: {root}\n  train_split: .\n  val_fraction: 0.5\n"
        "  image_size: 32\n  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        "train:\n  epochs: 1\n  out_dir: run\n  progress: false\n  hooks: {plot: false}\n"
    )
    assert main(["train", str(cfg)]) == 0
    return tmp_path / "run" / "best.pt"


def _predict(ckpt: Path, images: list[Path], out: Path, *extra: str) -> list[np.ndarray]:
    argv = ["predict", "--checkpoint", str(ckpt), *map(str, images), "--out", str(out)]
    assert main([*argv, *extra]) == 0
    return [cv2.imread(str(out / f"{p.stem}.png"), cv2.IMREAD_UNCHANGED) for p in images]


@pytest.mark.slow
def test_0_255_masks_are_predicted_as_0_255_and_score_back(tmp_path, capsys):
    root = _binary_folder(tmp_path / "data")
    ckpt = _train(tmp_path, root)
    state = torch.load(ckpt, weights_only=True)
    assert state["model_spec"]["meta"]["output_ids"] == [0, 255]  # recorded by training
    images = sorted((root / "images").glob("*.png"))
    own = _predict(ckpt, images, tmp_path / "own")
    ids = _predict(ckpt, images, tmp_path / "ids", "--ids")
    for written, labels in zip(own, ids):
        assert set(np.unique(labels)) <= {0, 1} and labels.any()
        np.testing.assert_array_equal(written, labels * np.uint8(255))
    # score reads 0/255 predictions as training read the 0/255 masks: as with class ids
    scores = []
    for pred in ("own", "ids"):
        out = tmp_path / f"{pred}.json"
        argv = ["score", str(root / "masks"), str(tmp_path / pred), "--classes", str(ckpt)]
        assert main([*argv, "--json", str(out)]) == 0
        scores.append(out.read_text())
    assert scores[0] == scores[1]
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    # a checkpoint from before the record: class ids 0/1, as segkit wrote them then
    state["model_spec"]["meta"].pop("output_ids")
    torch.save(state, tmp_path / "old.pt")
    old = _predict(tmp_path / "old.pt", images, tmp_path / "old")
    for written, labels in zip(old, ids):
        np.testing.assert_array_equal(written, labels)


# --- segkit score: a checkpoint's own label values (Cityscapes' labelIds) -------------------


def _cityscapes_checkpoint(path: Path, label_type: str | None) -> Path:
    """A spec-only checkpoint of a Cityscapes model trained on ``label_type`` files (None:
    recorded before segkit recorded the label type)."""
    from segkit.data.formats.cityscapes import LABEL_RECORDS, CityscapesDataset
    from segkit.engine.checkpoint import save_checkpoint
    from segkit.models import ModelSpec

    meta = CityscapesDataset.meta.replace(labels=LABEL_RECORDS.get(label_type))
    if label_type == "labelTrainIds":
        meta = meta.replace(output_ids=None)
    spec = ModelSpec(arch="unet", encoder=None, classes=19, class_names=list(meta.classes))
    spec.meta = meta.to_dict()
    return save_checkpoint(path, {"model": {}, "model_spec": spec.to_dict()})


@pytest.fixture
def cityscapes_labels(tmp_path):
    """Ground truth as labelIds and as trainIds (with 255, as every real frame's ego vehicle),
    and a prediction right on two thirds of the scored pixels, written as each."""
    from segkit.data.formats.cityscapes import label_ids_to_train_ids, train_ids_to_label_ids

    rng = np.random.default_rng(0)
    label_ids = rng.integers(0, 34, (24, 24)).astype(np.uint8)
    train_ids = label_ids_to_train_ids(label_ids)
    pred = np.where(train_ids == 255, 0, train_ids).astype(np.uint8)
    wrong = rng.random(pred.shape) < 1 / 3
    pred[wrong] = (pred[wrong] + 1) % 19
    folders = {}
    for name, labels in (
        ("gt_labelIds", label_ids),
        ("gt_trainIds", train_ids),
        ("pred_labelIds", train_ids_to_label_ids(pred)),
        ("pred_trainIds", pred),
    ):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        cv2.imwrite(str(folders[name] / "frame.png"), labels)
    scored = train_ids != 255
    return folders, float((pred == train_ids)[scored].mean())


def _score(capsys, gt: Path, pred: Path, *extra: str) -> tuple[int, str, float | None]:
    out = gt.parent / "s.json"
    out.unlink(missing_ok=True)
    code = main(["score", str(gt), str(pred), *extra, "--json", str(out)])
    err = capsys.readouterr().err.strip()
    import json

    accuracy = json.loads(out.read_text())["accuracy"] if code == 0 else None
    return code, err, accuracy


def test_score_reads_a_label_ids_model_in_label_ids_and_class_ids_with_ids(
    tmp_path, capsys, cityscapes_labels
):
    folders, accuracy = cityscapes_labels
    ckpt = str(_cityscapes_checkpoint(tmp_path / "m.pt", "labelIds"))
    # what predict writes against gtFine's labelIds: read back as training read them
    code, err, got = _score(
        capsys, folders["gt_labelIds"], folders["pred_labelIds"], "--classes", ckpt
    )
    assert code == 0, err
    assert got == pytest.approx(accuracy)
    # predict --ids against the labelTrainIds files: the same figures
    code, err, got = _score(
        capsys, folders["gt_trainIds"], folders["pred_trainIds"], "--classes", ckpt, "--ids"
    )
    assert code == 0, err
    assert got == pytest.approx(accuracy)


@pytest.mark.parametrize(
    ("label_type", "gt", "pred", "extra", "found", "hint"),
    [
        (  # a labelIds model's predictions on trainIds files (255: no labelId)
            "labelIds",
            "gt_trainIds",
            "pred_labelIds",
            (),
            "holds values [255] that are none of the model's label values (0..33; its classes",
            "The model (trained on label_type labelIds files) writes labelIds (label_type "
            "labelIds files); if both folders hold trainIds (label_type labelTrainIds files), as "
            "`segkit predict --ids` writes them, pass --ids.",
        ),
        (  # predictions written with --ids by a checkpoint from before the label type record
            None,
            "gt_labelIds",
            "pred_trainIds",
            (),
            "holds values [0, 1, 2, 3, 4, 5, 6, 9, 10, 14] that are none of the model's label",
            "The model writes labelIds (label_type labelIds files); if both folders hold trainIds",
        ),
        (  # --ids on labelIds files
            "labelIds",
            "gt_labelIds",
            "pred_trainIds",
            ("--ids",),
            "outside 0..18 (19 classes, ignore index 255). With --ids both folders are read as "
            "trainIds (label_type labelTrainIds files); labelIds (label_type labelIds files), as "
            "`segkit predict` writes them for this model, score without --ids.",
            "",
        ),
        (  # the reverse: a trainIds model on labelIds files
            "labelTrainIds",
            "gt_labelIds",
            "pred_trainIds",
            (),
            "outside 0..18 (19 classes, ignore index 255).",
            "The model (trained on label_type labelTrainIds files) reads trainIds (label_type "
            "labelTrainIds files); ground truth in labelIds (label_type labelIds files) scores "
            "with --classes naming a checkpoint trained on such files.",
        ),
    ],
)
def test_score_names_the_label_type_the_files_need(
    tmp_path, capsys, cityscapes_labels, label_type, gt, pred, extra, found, hint
):
    folders, _ = cityscapes_labels
    ckpt = str(_cityscapes_checkpoint(tmp_path / "m.pt", label_type))
    code, err, _ = _score(capsys, folders[gt], folders[pred], "--classes", ckpt, *extra)
    assert code == 2 and len(err.splitlines()) == 1
    assert found in err and hint in err, err
    assert str(folders[gt if "Ground" in err else pred] / "frame.png") in err


def test_score_classes_cityscapes_on_label_ids_names_the_label_type(capsys, cityscapes_labels):
    folders, _ = cityscapes_labels
    code, err, _ = _score(
        capsys, folders["gt_labelIds"], folders["pred_trainIds"], "--classes", "cityscapes"
    )
    assert code == 2
    assert "--classes cityscapes reads trainIds (label_type labelTrainIds files); ground" in err
    assert (
        _score(capsys, folders["gt_trainIds"], folders["pred_trainIds"], "--classes", "cityscapes")[
            0
        ]
        == 0
    )
