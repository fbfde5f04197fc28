"""The evaluation report (``evaluate --report``): the per-image table against the data-set
figures and an independent computation, the page's files, boundary metrics by hand, and the
page in headless Chromium (where installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import confusion_matrix

from segkit.api import evaluate, train
from segkit.boundary import boundary_scores, inner_band
from segkit.config import load_config
from segkit.data import synth_carvana, synth_helen
from segkit.data.io import read_mask
from segkit.errors import ConfigError
from segkit.inference import predict
from segkit.inference.report import group_counts, image_score, pixel_counts


def _run(tmp, dataset: str, extra: list[str]) -> str:
    cfg = load_config(
        None,
        [
            f"data.dataset={dataset}",
            f"data.root={tmp / 'data'}",
            "data.image_size=64",
            "data.batch_size=2",
            "data.num_workers=0",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            "train.epochs=1",
            "train.progress=false",
            "train.preview=0",
            f"train.out_dir={tmp / 'run'}",
            *extra,
        ],
    )
    train(cfg)
    return str(tmp / "run" / "last.pt")


@pytest.fixture(scope="module")
def helen_ckpt(tmp_path_factory):
    """A tiny U-Net trained one epoch on 64 px synthetic faces (3 test faces)."""
    tmp = tmp_path_factory.mktemp("helen")
    synth_helen(tmp / "data", n=4, seed=0, size=64)
    synth_helen(tmp / "data", n=3, seed=1, size=64, split="test")
    return _run(tmp, "helen", ["data.val_fraction=0.25", "loss.name=ce"])


@pytest.fixture(scope="module")
def carvana_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("carvana")
    synth_carvana(tmp / "data", cars=2, views=2, size=(64, 64))
    return _run(tmp, "carvana", ["data.val_fraction=0.5", "data.test_split=val"])


def _sums_reproduce(table: pd.DataFrame, result: dict, names: list[str], groups: list[str]):
    """The per-image counts summed give every confusion-matrix figure exactly."""
    ious, f1s = [], []
    for name in [*names, *groups]:
        tp, fp, fn = (int(table[f"{k}_{name}"].sum()) for k in ("tp", "fp", "fn"))
        f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else float("nan")
        assert f1 == pytest.approx(result[f"f1_{name}"], abs=0, nan_ok=True), name
        if name in names:
            iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
            assert iou == pytest.approx(result[f"iou_{name}"], abs=0, nan_ok=True), name
            ious.append(iou)
            f1s.append(f1)
    tps = sum(int(table[f"tp_{n}"].sum()) for n in names)
    assert tps / int(table["pixels"].sum()) == result["accuracy"]
    assert float(np.nanmean(ious)) == pytest.approx(result["miou"], abs=1e-15)


@pytest.mark.parametrize("tile", [None, 64])
def test_per_image_table_sums_to_evaluate_and_the_page_has_its_files(helen_ckpt, tmp_path, tile):
    report = tmp_path / "report"
    result = evaluate(
        helen_ckpt, split="test", num_workers=0, tile=tile, report=report, report_n=2,
        json_out=tmp_path / "m.json",
    )  # fmt: skip
    table = pd.read_csv(report / "per_image.csv")
    assert len(table) == 3 and table["id"].str.startswith("image_").all()
    assert all(p.endswith(".jpg") or p.endswith(".png") for p in table["path"])
    names = [c[len("iou_") :] for c in table.columns if c.startswith("iou_")]
    groups = [c[len("tp_") :] for c in table.columns if c.startswith("tp_")][len(names) :]
    assert "overall" in groups and table["pixels"].eq(64 * 64).all()
    _sums_reproduce(table, result, names, groups)
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["confusion"]["classes"] == names
    m = np.asarray(saved["confusion"]["matrix"])
    assert m.shape == (len(names), len(names)) and int(m.sum()) == 3 * 64 * 64
    page = (report / "index.html").read_text()
    sources = re.findall(r"src='([^']+)'", page)
    assert len([s for s in sources if s.startswith("images/")]) == 2 * 2 * 4  # worst+best x 4
    assert "curves.png" in sources and "per_image.csv" in page
    for src in sources:
        assert (report / src).is_file(), src
    assert "64x64" in page or "windows of 64 px" in page  # the size pictures were scored at


def test_per_image_counts_match_sklearn_on_predict_labels(helen_ckpt, tmp_path):
    """In windows evaluate labels what predict labels: each image's counts are sklearn's
    confusion matrix of predict's label PNG against the truth mask."""
    report = tmp_path / "report"
    evaluate(helen_ckpt, split="test", num_workers=0, tile=64, report=report)
    table = pd.read_csv(report / "per_image.csv")
    names = [c[len("iou_") :] for c in table.columns if c.startswith("iou_")]
    predict(helen_ckpt, list(table["path"]), tmp_path / "pred", tile=64, ids=True)
    for _, row in table.iterrows():
        stem = row["path"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        pred = read_mask(tmp_path / "pred" / f"{stem}.png").ravel()
        labels = Path(row["path"]).parent.parent / "labels"  # Helen's split layout
        truth = read_mask(labels / f"{stem.replace('image_', 'label_')}.png").ravel()
        cm = confusion_matrix(truth, pred, labels=list(range(len(names))))
        tp, fp, fn, pixels = pixel_counts(cm)
        for c, name in enumerate(names):
            assert (row[f"tp_{name}"], row[f"fp_{name}"], row[f"fn_{name}"]) == (
                tp[c], fp[c], fn[c],
            ), name  # fmt: skip
            iou = tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else float("nan")
            assert row[f"iou_{name}"] == pytest.approx(iou, nan_ok=True)
        assert row["pixels"] == pixels


def test_binary_report_has_dice_and_boundaries(carvana_ckpt, tmp_path):
    report = tmp_path / "report"
    result = evaluate(carvana_ckpt, num_workers=0, report=report, boundary=2)
    table = pd.read_csv(report / "per_image.csv")
    assert {"dice", "biou_car", "bf_car", "hd95_car"} <= set(table.columns)
    assert table["dice"].equals(table["f1_car"])
    assert result["boundary_biou_car"] == pytest.approx(table["biou_car"].mean())
    _sums_reproduce(table, result, ["background", "car"], [])
    assert "Boundaries (tolerance 2 px" in (report / "index.html").read_text()
    with pytest.raises(ConfigError, match="--report"):
        evaluate(carvana_ckpt, num_workers=0, boundary=2)


def test_boundary_scores_by_hand():
    truth = np.zeros((7, 7), bool)
    truth[2:5, 2:5] = True  # a 3x3 square: its contour is 8 pixels, the centre is inside
    pred = np.roll(truth, 1, axis=1)  # moved right by one pixel
    assert inner_band(truth, 1).sum() == 8 and not inner_band(truth, 1)[3, 3]
    same = boundary_scores(truth, truth, 1)
    assert same == {"biou": 1.0, "bf": 1.0, "hd95": 0.0}
    moved = boundary_scores(truth, pred, 1)
    # contours share 4 of their 8 pixels (top and bottom middle and right): 4 / 12; every
    # contour pixel is within 1 px of the other contour; distances 0 (x4) and 1 (x4)
    assert moved == pytest.approx({"biou": 4 / 12, "bf": 1.0, "hd95": 1.0})
    strict = boundary_scores(truth, pred, 0.5)  # only the 4 shared pixels match: P = R = 1/2
    assert strict == pytest.approx({"biou": 4 / 12, "bf": 0.5, "hd95": 1.0})
    edge = np.zeros((4, 4), bool)
    edge[:, :2] = True  # the image border counts as outside: every pixel is in the band
    assert inner_band(edge, 1)[edge].all()
    empty = np.zeros((7, 7), bool)
    assert boundary_scores(truth, empty, 1)["biou"] == 0.0
    assert np.isnan(boundary_scores(empty, empty, 1)["bf"])


def test_image_score_and_group_counts():
    tp, fp, fn = np.array([90, 5, 0]), np.array([1, 5, 0]), np.array([1, 5, 0])
    assert image_score(tp, fp, fn, background=0) == pytest.approx(5 / 15)  # bg left out
    assert image_score(tp, fp, fn, background=None) == pytest.approx((90 / 92 + 5 / 15) / 2)
    assert image_score(np.array([9, 0]), np.array([0, 0]), np.array([0, 0]), 0) == 1.0
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 4, 6]])
    assert group_counts(m, [1, 2]) == (14, 1, 2)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no Chromium installed")
def test_every_image_on_the_page_loads_in_chromium(helen_ckpt, tmp_path):
    report = tmp_path / "report"
    evaluate(helen_ckpt, split="test", num_workers=0, report=report, report_n=2)
    page = report / "index.html"
    # a copy of the page with a script that marks each picture's natural width once loaded
    probe = report / "probe.html"
    script = (
        "<script>window.addEventListener('load',()=>{for(const i of document.images)"
        "{i.setAttribute('data-w',i.complete?i.naturalWidth:0)}})</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    widths = re.findall(r"<img [^>]*data-w=\"(\d+)\"", dom)
    assert len(widths) == len(re.findall(r"<img ", page.read_text())) >= 17
    assert all(int(w) > 0 for w in widths), widths
