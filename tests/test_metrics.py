"""Metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score, precision_score, recall_score

from segkit.data.helen import HELEN_GROUPS
from segkit.errors import DataError
from segkit.metrics import (
    ConfusionMatrix,
    MultiLabelConfusion,
    SoftDiceAccumulator,
    format_f1_lines,
    group_f1,
    metric_names,
    results_table,
    score_folders,
    soft_dice,
)

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()  # absolute: tests link to these files from tmp_path
HELEN_NAMES = ["bg", "face", "lb", "rb", "le", "re", "nose", "ulip", "imouth", "llip", "hair"]


def sklearn_scores(y_true, y_pred, labels):
    kw = dict(labels=labels, average=None, zero_division=np.nan)
    # jaccard_score has no NaN option: mark classes absent from truth and prediction
    absent = ~np.isin(labels, np.concatenate([y_true, y_pred]))
    iou = jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "f1": f1_score(y_true, y_pred, **kw),
        "iou": np.where(absent, np.nan, iou),
        "precision": precision_score(y_true, y_pred, **kw),
        "recall": recall_score(y_true, y_pred, **kw),
    }


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_on_random_label_maps(seed):
    rng = np.random.default_rng(seed)
    c = 7  # class 6 never occurs; class 5 only in predictions
    target = rng.integers(0, 5, size=(3, 16, 24))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 6, target.shape))
    cm = ConfusionMatrix(c)
    cm.update(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))  # torch path
    cm.update(pred[2], target[2].astype(np.uint8))  # numpy path
    labels = list(range(c))
    np.testing.assert_array_equal(
        cm.matrix.numpy(), confusion_matrix(target.ravel(), pred.ravel(), labels=labels)
    )
    result = cm.compute()
    ref = sklearn_scores(target.ravel(), pred.ravel(), labels)
    for metric, values in ref.items():
        got = np.array([result[f"{metric}_{i}"] for i in labels])
        np.testing.assert_allclose(got, values, rtol=1e-12, equal_nan=True)
    assert math.isnan(result["f1_6"]) and result["f1_5"] == 0.0
    assert result["mean_f1"] == pytest.approx(np.nanmean(ref["f1"]))
    assert result["miou"] == pytest.approx(np.nanmean(ref["iou"]))
    assert result["accuracy"] == pytest.approx((pred == target).mean())
    assert cm.matrix.dtype == torch.int64 and cm.matrix.device.type == "cpu"


def test_ignore_index_matches_sklearn_on_kept_pixels():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 4, size=(20, 20))
    target[rng.random(target.shape) < 0.3] = 255
    pred = rng.integers(0, 4, size=(20, 20))
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    keep = target != 255
    ref = confusion_matrix(target[keep], pred[keep], labels=range(4))
    np.testing.assert_array_equal(cm.matrix.numpy(), ref)


def test_group_f1_hand_computed_counts_left_right_confusion_as_correct():
    # truth: two left-eye (4), two right-eye (5), two background pixels
    gt = np.array([4, 4, 5, 5, 0, 0])
    pred = np.array([5, 4, 4, 0, 0, 5])
    cm = ConfusionMatrix(6)
    cm.update(pred, gt)
    result = cm.compute(groups={"eyes": [4, 5]})
    # G = {0,1,2,3}, P = {0,1,2,5}: |G∩P| = 3 -> 2·3 / (4 + 4)
    assert result["f1_eyes"] == pytest.approx(0.75)
    assert result["f1_4"] == pytest.approx(2 * 1 / (2 + 2))  # TP 1, |G4| 2, |P4| 2
    assert result["f1_5"] == pytest.approx(2 * 0 / (2 + 2))
    assert group_f1(cm.matrix.numpy(), [4, 5]) == pytest.approx(0.75)


def test_helen_groups_and_report_lines():
    assert HELEN_GROUPS == {
        "eyes": [4, 5],
        "brows": [2, 3],
        "mouth": [7, 8, 9],
        "overall": [2, 3, 4, 5, 6, 7, 8, 9],
    }
    gt = np.arange(11).repeat(4)
    pred = gt.copy()
    pred[[8, 12]] = [3, 2]  # one lb pixel called rb and one rb pixel called lb
    cm = ConfusionMatrix(11, class_names=HELEN_NAMES)
    cm.update(pred, gt)
    result = cm.compute(HELEN_GROUPS)
    assert result["f1_brows"] == 1.0 and result["f1_overall"] == 1.0
    assert result["f1_lb"] == pytest.approx(0.75)
    lines = format_f1_lines(result).splitlines()
    assert lines[0] == "f1_bg=1.0000"
    assert lines[2] == "f1_lb=0.7500"
    assert [line.split("=")[0] for line in lines[-4:]] == [
        "f1_eyes",
        "f1_brows",
        "f1_mouth",
        "f1_overall",
    ]
    assert len(lines) == 11 + 4
    table = results_table(result, HELEN_NAMES, HELEN_GROUPS)
    assert list(table.index) == HELEN_NAMES + list(HELEN_GROUPS)
    assert table.loc["lb", "f1"] == pytest.approx(0.75)
    assert table.loc["overall", "kind"] == "group" and math.isnan(table.loc["overall", "iou"])


def test_merge_reset_from_matrix():
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(np.array([0, 1]), np.array([0, 2]))
    b.update(np.array([2, 2]), np.array([2, 2]))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix.numpy(), [[1, 0, 0], [0, 0, 0], [0, 1, 2]])
    copy = ConfusionMatrix.from_matrix(a.matrix.clone())
    np.testing.assert_equal(copy.compute(), a.compute())
    a.reset()
    assert a.matrix.sum() == 0
    with pytest.raises(ValueError, match="empty"):
        a.compute()
    with pytest.raises(ValueError, match="4-class"):
        a.merge(ConfusionMatrix(4))


def test_bad_inputs_are_explained():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        cm.update(np.zeros((2, 3), int), np.zeros((3, 2), int))
    with pytest.raises(ValueError, match=r"prediction holds label values \[3, 9\]"):
        cm.update(torch.tensor([0, 3, 9]), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"target holds label values \[-1\]"):
        cm.update(np.array([0, 1]), np.array([-1, 1]))
    with pytest.raises(TypeError, match="integer labels"):
        cm.update(torch.rand(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    assert cm.matrix.sum() == 0  # nothing counted by failed updates
    cm.update(np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="Group 'eyes'"):
        cm.compute(groups={"eyes": [4, 5]})
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def write_labels(folder: Path, maps: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in maps.items():
        Image.fromarray(arr.astype(np.uint8)).save(folder / f"{name}.png")


def test_score_folders_matches_sklearn(tmp_path):
    rng = np.random.default_rng(5)
    gts = {f"label_{i}": rng.integers(0, 4, (8, 12)) for i in range(3)}
    preds = {k: np.where(rng.random(v.shape) < 0.5, v, 3 - v) for k, v in gts.items()}
    write_labels(tmp_path / "gt", gts)
    write_labels(tmp_path / "pred", preds)
    result = score_folders(tmp_path / "gt", tmp_path / "pred", ["a", "b", "c", "d"], {"bc": [1, 2]})
    y_true = np.concatenate([gts[k].ravel() for k in sorted(gts)])
    y_pred = np.concatenate([preds[k].ravel() for k in sorted(gts)])
    ref = f1_score(y_true, y_pred, labels=range(4), average=None)
    np.testing.assert_allclose([result[f"f1_{n}"] for n in "abcd"], ref)
    in_group = np.isin(y_true, [1, 2]), np.isin(y_pred, [1, 2])
    assert result["f1_bc"] == pytest.approx(f1_score(*in_group))
    assert result["num_images"] == 3


def test_score_folders_errors(tmp_path):
    write_labels(tmp_path / "gt", {"a": np.zeros((4, 4)), "b": np.zeros((4, 4))})
    write_labels(tmp_path / "pred", {"a": np.zeros((4, 4)), "c": np.zeros((4, 4))})
    with pytest.raises(
        DataError, match=r"have no prediction \['b\.png'\].*no ground truth \['c\.png'\]"
    ):
        score_folders(tmp_path / "gt", tmp_path / "pred", 2)
    (tmp_path / "pred" / "c.png").unlink()
    write_labels(tmp_path / "pred", {"b": np.zeros((5, 4))})
    with pytest.raises(DataError, match=r"b\.png.*4x5.*4x4"):
        score_folders(tmp_path / "gt", tmp_path / "pred", 2)
    write_labels(tmp_path / "pred", {"b": np.full((4, 4), 7)})
    with pytest.raises(DataError, match=r"b\.png.*label values \[7\]"):
        score_folders(tmp_path / "gt", tmp_path / "pred", 2)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 1
    Image.fromarray(rgb).save(tmp_path / "pred" / "b.png")
    with pytest.raises(DataError, match=r"b\.png.*colour"):
        score_folders(tmp_path / "gt", tmp_path / "pred", 2)
    with pytest.raises(DataError, match="does not exist"):
        score_folders(tmp_path / "missing", tmp_path / "pred", 2)


def test_score_folders_pairs_predictions_named_after_the_images(tmp_path):
    gt = {"label_1": np.array([[0, 1], [1, 1]]), "label_2": np.array([[1, 0], [0, 0]])}
    write_labels(tmp_path / "gt", gt)  # Helen's split layout: labels/label_N.png
    write_labels(tmp_path / "pred", {"image_1": gt["label_1"], "image_2": 1 - gt["label_2"]})
    result = score_folders(tmp_path / "gt", tmp_path / "pred", 2)
    assert result["num_images"] == 2
    assert result["f1_1"] == pytest.approx(2 * 3 / (4 + 6))  # 3 hits, |G| = 4, |P| = 6
    write_labels(tmp_path / "off", {"x_label": gt["label_1"], "y_label": gt["label_2"]})
    write_labels(tmp_path / "offpred", {"x_image": gt["label_1"], "y_image": gt["label_2"]})
    assert score_folders(tmp_path / "off", tmp_path / "offpred", 2)["f1_0"] == 1.0
    write_labels(tmp_path / "pred", {"label_1": gt["label_1"]})  # image_1 and label_1 both there
    with pytest.raises(DataError, match=r"two files for sample '1'.*image_1\.png and label_1\.png"):
        score_folders(tmp_path / "gt", tmp_path / "pred", 2)


def test_score_folders_reads_palette_pngs(tmp_path):
    arr = np.array([[0, 1], [2, 1]], np.uint8)
    for sub in ("gt", "pred"):
        (tmp_path / sub).mkdir()
        im = Image.fromarray(arr, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        im.save(tmp_path / sub / "x.png")
    result = score_folders(tmp_path / "gt", tmp_path / "pred", 3)
    assert result["f1_0"] == result["f1_1"] == result["f1_2"] == 1.0


def test_soft_dice_hand_computed():
    probs = torch.tensor([[[0.8, 0.6], [0.1, 0.5]], [[0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    scores = soft_dice(probs, target)
    assert scores[0].item() == pytest.approx(3.8 / 4.26)  # (2·1.4 + 1) / (1.26 + 2 + 1)
    assert scores[1].item() == pytest.approx(1.0)  # empty predicted empty
    acc = SoftDiceAccumulator()
    acc.update(probs[:1], target[:1])
    acc.update(probs[1:].numpy(), target[1:].numpy())
    out = acc.compute()
    assert out["soft_dice"] == pytest.approx((3.8 / 4.26 + 1) / 2)
    assert out["soft_dice_global"] == pytest.approx(3.8 / 4.26)
    assert soft_dice(probs, target, squared=False)[0].item() == pytest.approx(3.8 / 5.0)
    with pytest.raises(ValueError, match="shape"):
        soft_dice(probs, target[:, :1])
    with pytest.raises(ValueError, match="empty"):
        SoftDiceAccumulator().compute()


@pytest.mark.realdata
@pytest.mark.skipif(
    not (DATA / "helen256").is_dir(), reason=f"real Helen sample not found at {DATA / 'helen256'}"
)
def test_real_helen_labels_left_right_swap(tmp_path):
    labels = sorted((DATA / "helen256" / "train" / "labels").glob("*.png"))[:3]
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    swap = np.arange(256)
    swap[[2, 3, 4, 5]] = [3, 2, 5, 4]
    for path in labels:
        shutil.copy(path, tmp_path / "gt" / path.name)
        arr = np.asarray(Image.open(path))
        Image.fromarray(swap[arr].astype(np.uint8)).save(tmp_path / "pred" / path.name)
    result = score_folders(tmp_path / "gt", tmp_path / "pred", HELEN_NAMES, HELEN_GROUPS)
    assert result["f1_eyes"] == result["f1_brows"] == result["f1_overall"] == 1.0
    assert result["f1_le"] < 0.5 and result["f1_face"] == 1.0


def test_score_folders_reads_masks_as_training_does(tmp_path):
    from segkit.data.io import write_mask

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    # an all-car GIF as Pillow writes it: palette index 0 is white
    Image.fromarray(np.full((4, 6), 255, np.uint8)).convert("P").save(gt / "a.gif")
    write_mask(gt / "b.png", np.array([[0, 255, 255]] * 4, np.uint8))  # Carvana-style 0/255
    write_mask(pred / "a.png", np.ones((4, 6), np.uint8))
    write_mask(pred / "b.png", np.array([[0, 1, 1]] * 4, np.uint8))
    result = score_folders(gt, pred, ["bg", "car"])
    assert result["f1_car"] == 1.0 and result["accuracy"] == 1.0


def test_metric_names_are_the_keys_compute_returns():
    from segkit.engine.evaluation import Evaluator

    rng = np.random.default_rng(0)
    # binary: the validation's confusion matrix plus the soft Dice, from one-channel logits
    evaluator = Evaluator(["background", "car"])
    evaluator.update(torch.randn(2, 1, 8, 8), torch.from_numpy(rng.integers(0, 2, (2, 8, 8))))
    assert metric_names(["background", "car"], task="binary") == list(evaluator.compute())
    # multi-class with groups, in compute()'s order
    names, groups = ["bg", "le", "re", "nose"], {"eyes": [1, 2], "all": [1, 2, 3]}
    cm = ConfusionMatrix(4, class_names=names)
    cm.update(rng.integers(0, 4, (16, 16)), rng.integers(0, 4, (16, 16)))
    assert metric_names(names, groups) == list(cm.compute(groups))
    assert metric_names(names) == list(cm.compute())
    # multi-label: per class, no groups
    ml = MultiLabelConfusion(3, ["sky", "tree", "car"])
    ml.update(rng.integers(0, 2, (2, 3, 8, 8)), rng.integers(0, 2, (2, 3, 8, 8)))
    assert metric_names(["sky", "tree", "car"], task="multilabel") == list(ml.compute())


def test_metric_names_refuse_what_compute_refuses():
    with pytest.raises(ValueError, match="multi-label"):
        metric_names(["a", "b"], {"ab": [0, 1]}, task="multilabel")
    with pytest.raises(ValueError, match="0..1"):
        metric_names(["a", "b"], {"ab": [0, 2]})
    with pytest.raises(ValueError, match="also a class name"):
        metric_names(["a", "b"], {"a": [0, 1]})
    with pytest.raises(ValueError, match="2 class names"):
        metric_names(["a", "b", "c"], task="binary")
    with pytest.raises(ValueError, match="task must be one of"):
        metric_names(["a", "b"], task="semantic")


def test_score_folders_passes_over_the_pictures_predict_writes_beside_the_labels(tmp_path):
    """``predict --overlay --color`` writes ``<name>_overlay.png`` and ``<name>_color.png``
    beside ``<name>.png``; scoring that folder reads the label maps only."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    labels = np.array([[0, 1], [2, 1]], np.uint8)
    for folder in (gt, pred):
        Image.fromarray(labels).save(folder / "a.png")
    for picture in ("a_overlay.png", "a_color.png"):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(pred / picture)
    result = score_folders(gt, pred, 3)
    assert result["num_images"] == 1 and result["accuracy"] == 1.0
