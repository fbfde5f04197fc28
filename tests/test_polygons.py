"""Predictions as polygons (``--polygons labelme / coco / coco-rle``): read back by segkit's own
``labelme`` and ``coco`` readers, they give the predicted masks again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.cli import main
from segkit.data.formats.coco import CocoDataset, build_index, class_planes, semantic_mask
from segkit.data.formats.labelme import LabelmeDataset, labelme_mask
from segkit.data.io import read_mask
from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import ConfigError, DataError
from segkit.inference import PredictOptions, Predictor
from segkit.inference.polygons import (
    CocoCollector,
    coco_annotations,
    labelme_document,
    labelme_shapes,
    mask_regions,
)
from segkit.models import ModelSpec, SegmentationModel, build_model

pytest.importorskip("pycocotools")

NAMES = ["background", "a", "b", "c"]
REAL = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _scene() -> np.ndarray:
    """Several classes: a ring (a hole) holding an object of another class, an object of the
    same class inside that, a one-pixel object, a one-pixel-wide line, objects at the border."""
    m = np.zeros((90, 120), np.uint8)
    cv2.circle(m, (60, 45), 35, 2, -1)
    cv2.circle(m, (60, 45), 20, 0, -1)  # the hole
    cv2.circle(m, (60, 45), 12, 3, -1)  # another class inside it
    cv2.circle(m, (60, 45), 4, 2, -1)  # the ring's class again, inside that
    cv2.rectangle(m, (5, 5), (5, 40), 1, -1)  # one pixel wide
    cv2.rectangle(m, (100, 60), (119, 89), 1, -1)  # at the border
    cv2.ellipse(m, (15, 75), (10, 6), 30, 0, 360, 3, -1)
    m[0, 119] = 2  # one pixel, in the corner
    m[50, 10] = 3
    return m


def _labelme_back(labels: np.ndarray, names=NAMES, **kw) -> np.ndarray:
    doc = labelme_document(labelme_shapes(labels, names, 0, **kw), "x.png", *labels.shape[-2:])
    doc = json.loads(json.dumps(doc))  # as a file holds it
    ids = {n: i for i, n in enumerate(names)}
    return labelme_mask(doc, ids, labels.shape[-2:], Path("x.json"))[0]


def _coco_back(labels: np.ndarray, rle: bool, names=NAMES, background=0, **kw):
    collector = CocoCollector(Path("out/annotations.json"), names, background)
    collector.add(Path("out/x.png"), labels.shape[-2:], coco_annotations(labels, names,
                  background, rle, **kw))  # fmt: skip
    document = json.loads(json.dumps(collector.document()))
    return document, build_index(document, "out/annotations.json")


def test_every_corner_kept_gives_each_pixel_back_holes_and_tiny_objects_included():
    m = _scene()
    assert np.array_equal(_labelme_back(m, epsilon=0), m)
    for rle in (False, True):
        _, index = _coco_back(m, rle, epsilon=0)
        assert np.array_equal(semantic_mask(index.images[0]), m)


def test_simplified_outlines_stay_close_and_coco_objects_with_holes_are_rle():
    m = cv2.resize(_scene(), None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
    back = _labelme_back(m)  # default epsilon 0.5 (objects of a few pixels lose more)
    for c in (1, 2, 3):
        assert _iou(back == c, m == c) >= 0.98
    document, index = _coco_back(m, rle=False)
    for c in (1, 2, 3):
        assert _iou(semantic_mask(index.images[0]) == c, m == c) >= 0.98
    ring = [a for a in document["annotations"] if a["category_id"] == 2 and a["area"] > 500]
    assert len(ring) == 1 and isinstance(ring[0]["segmentation"], dict)  # a hole: RLE
    assert all(isinstance(a["segmentation"], list) for a in document["annotations"]
               if a["category_id"] == 1)  # fmt: skip
    # area and bbox as pycocotools computes them; the background is not written
    assert sorted(c["id"] for c in document["categories"]) == [1, 2, 3]
    ring_pixels = 0
    objects = cv2.connectedComponentsWithStats((m == 2).astype(np.uint8), connectivity=8)
    ring_pixels = int(objects[2][1:, cv2.CC_STAT_AREA].max())
    assert ring[0]["area"] == ring_pixels
    x, y, w, h = ring[0]["bbox"]
    assert (x, y, w, h) == (75, 30, 213, 213)


def test_labelme_holes_are_background_shapes_after_the_shape_they_cut():
    m = _scene()
    shapes = labelme_shapes(m, NAMES, 0)
    labels = [s["label"] for s in shapes]
    assert labels.index("b") < labels.index("_background_") < labels.index("c")
    assert all(s["shape_type"] == "polygon" and len(s["points"]) >= 3 for s in shapes)
    assert "background" not in labels


def test_small_objects_and_holes_are_left_out_below_the_minimum_area():
    m = np.zeros((40, 40), np.uint8)
    cv2.rectangle(m, (5, 5), (30, 30), 1, -1)
    m[15:17, 15:17] = 0  # a hole of 4 pixels
    m[36, 36] = 1
    assert len(mask_regions(m == 1)) == 2
    regions = mask_regions(m == 1, min_area=5)
    assert len(regions) == 1 and regions[0].holes == ()
    back = _labelme_back(m, names=["background", "a"], min_area=5)
    expected = m.copy()
    expected[15:17, 15:17], expected[36, 36] = 1, 0
    assert np.array_equal(back, expected)


def test_a_multilabel_model_writes_each_class_mask_overlaps_kept():
    masks = np.zeros((2, 50, 60), np.uint8)
    cv2.circle(masks[0], (25, 25), 15, 1, -1)
    cv2.circle(masks[1], (35, 25), 15, 1, -1)
    masks[1, 24:27, 34:37] = 0  # a hole
    document, index = _coco_back(masks, rle=False, names=["cat", "dog"], background=None,
                                 epsilon=0)  # fmt: skip
    assert [c["name"] for c in document["categories"]] == ["cat", "dog"]
    planes = class_planes(index.images[0], len(index.classes))[1:]
    assert np.array_equal(planes, masks)


def test_a_model_without_background_writes_every_class_one_id_higher():
    m = np.zeros((30, 30), np.uint8)
    m[10:20, 10:20] = 1
    names = ["road", "car"]
    document, index = _coco_back(m, rle=False, names=names, background=None, epsilon=0)
    assert [(c["id"], c["name"]) for c in document["categories"]] == [(1, "road"), (2, "car")]
    assert np.array_equal(semantic_mask(index.images[0]), m + 1)


def _checkpoint(tmp_path: Path, classes: int = 3) -> Path:
    torch.manual_seed(0)
    model = build_model(arch="unet", base_channels=4, classes=classes)
    model.spec.class_names = NAMES[:classes]
    state = {"model": model.state_dict(), "model_spec": model.spec.to_dict(), "config": {}}
    return save_checkpoint(tmp_path / "best.pt", state)


def _photos(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"im{i}.png"), cv2.resize(small, (72, 48)))
    return folder


@pytest.mark.parametrize("kind", ["labelme", "coco", "coco-rle"])
def test_predict_writes_polygons_that_segkit_reads_back_as_the_label_pngs(tmp_path, kind, capsys):
    ckpt, photos, out = _checkpoint(tmp_path), _photos(tmp_path / "photos"), tmp_path / "out"
    args = ["predict", "--checkpoint", str(ckpt), str(photos), "--out", str(out), "--ids"]
    assert main([*args, "--polygons", kind, "--device", "cpu"]) == 0
    if kind == "labelme":
        data = LabelmeDataset(out)
        document = json.loads((out / "im0.json").read_text())
        assert document["imagePath"] == "../photos/im0.png" and document["imageData"] is None
        assert document["version"].startswith("5.")
    else:
        data = CocoDataset(out)
        document = json.loads((out / "annotations.json").read_text())
        assert [c["name"] for c in document["categories"]] == ["a", "b"]
        from pycocotools.coco import COCO  # pycocotools' own reading agrees with segkit's

        coco = COCO(str(out / "annotations.json"))
        for ann in coco.loadAnns(coco.getAnnIds()):
            drawn = coco.annToMask(ann)
            assert drawn.sum() == ann["area"]
    assert list(data.class_names) == NAMES[:3]
    for i in range(len(data)):
        item = data[i]
        predicted = read_mask(out / f"{data.samples[i].id}.png")
        mask = np.asarray(item["mask"])
        for c in np.unique(predicted):
            if c:
                assert _iou(mask == c, predicted == c) >= 0.98
    # existing outputs are refused unless --overwrite
    capsys.readouterr()
    assert main([*args, "--polygons", kind, "--device", "cpu"]) != 0
    assert "already exists and prediction would replace it" in capsys.readouterr().err
    assert main([*args, "--polygons", kind, "--device", "cpu", "--overwrite"]) == 0


def test_polygon_options_are_checked_and_the_api_returns_shapes(tmp_path):
    with pytest.raises(ConfigError, match="Unknown polygons='shp'"):
        PredictOptions(polygons="shp")
    with pytest.raises(ConfigError, match="polygon_epsilon=-1"):
        PredictOptions(polygon_epsilon=-1)
    predictor = Predictor(_checkpoint(tmp_path), PredictOptions(polygons="coco"), device="cpu")
    image = cv2.resize(np.random.default_rng(0).integers(0, 256, (6, 6, 3), np.uint8), (72, 48))
    labels = predictor.labels(image)
    annotations = predictor.polygons(image)
    assert {a["category_id"] for a in annotations} == set(np.unique(labels)) - {0}
    shapes = predictor.polygons(image, "labelme")
    assert {s["label"] for s in shapes} - {"_background_"} == {
        NAMES[c] for c in np.unique(labels) if c
    }
    with pytest.raises(DataError):
        predictor.polygons(image[..., 0])


class _Brightness(torch.nn.Module):
    """Classes by smoothed brightness (1: dark, 2: bright, 0: between): real-photo shapes,
    holes and small objects included, from a model that needs no training."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(40.0))  # a device to find the model on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = F.avg_pool2d(x.mean(1, keepdim=True), 9, stride=1, padding=4, count_include_pad=False)
        return torch.cat([torch.zeros_like(b), self.gain * (0.3 - b), self.gain * (b - 0.75)], 1)


def _brightness_model() -> SegmentationModel:
    spec = ModelSpec(arch="unet", encoder=None, classes=3, divisor=1, task="multiclass")
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    spec.class_names = ["background", "dark", "bright"]
    return SegmentationModel(_Brightness(), spec).eval()


@pytest.mark.realdata
@pytest.mark.parametrize("sample", ["carvana_real5/train", "labelme_instance"])
@pytest.mark.parametrize("kind", ["labelme", "coco"])
def test_real_photos_polygons_give_the_predicted_masks_again(tmp_path, sample, kind, capsys):
    photos = REAL / sample
    if not photos.is_dir():
        pytest.skip(f"{photos} is absent")
    images = sorted(p for p in photos.iterdir() if p.suffix == ".jpg")[:3]
    out = tmp_path / "out"
    options = PredictOptions(polygons=kind, batch_size=1)
    Predictor(_brightness_model(), options, device="cpu").predict(images, out)
    data = LabelmeDataset(out) if kind == "labelme" else CocoDataset(out)
    worst = 1.0
    for i in range(len(data)):
        predicted = read_mask(out / f"{data.samples[i].id}.png")
        mask = np.asarray(data[i]["mask"])
        for c in (1, 2):
            if (predicted == c).any():
                iou = _iou(mask == c, predicted == c)
                worst = min(worst, iou)
                assert iou >= 0.98, (data.samples[i].id, c, iou)
    with capsys.disabled():
        print(f"\n{sample} {kind}: lowest IoU per class per image {worst:.4f}")


class _Overlapping(_Brightness):
    """Two overlapping classes (sigmoid): dark (below 0.45), dim (below 0.6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = F.avg_pool2d(x.mean(1, keepdim=True), 5, stride=1, padding=2, count_include_pad=False)
        return torch.cat([self.gain * (0.45 - b), self.gain * (0.6 - b)], 1)


def test_a_multilabel_model_predicts_each_class_mask_as_polygons(tmp_path):
    spec = ModelSpec(arch="unet", encoder=None, classes=2, divisor=1, task="multilabel")
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    spec.class_names = ["dark", "dim"]
    model = SegmentationModel(_Overlapping(), spec).eval()
    photos, out = _photos(tmp_path / "photos"), tmp_path / "out"
    options = PredictOptions(polygons="coco", polygon_epsilon=0)
    Predictor(model, options, device="cpu").predict([photos], out)
    data = CocoDataset(out, mode="multilabel")
    assert list(data.class_names) == ["dark", "dim"]
    for i in range(len(data)):
        planes = np.asarray(data[i]["mask"])
        stem = data.samples[i].id
        predicted = np.stack([read_mask(out / f"{stem}_{n}.png") > 0 for n in spec.class_names])
        assert predicted.any() and np.array_equal(planes.astype(bool), predicted)
