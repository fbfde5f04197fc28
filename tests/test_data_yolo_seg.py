"""YOLO segmentation labels as semantic masks (``yolo_seg``): both layouts, foreign data.yaml
paths, images without labels and labels without images, the overlap rule and each bad
line's error on small sets written here; the real Roboflow export checked against an
independent drawing (Pillow) and trained through the CLI."""

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from segkit.cli import main
from segkit.data import build_dataset
from segkit.errors import DataError

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()
CROPWEED = DATA / "yolo_seg_cropweed"

W, H = 20, 16
BIG = "0.1 0.125 0.6 0.125 0.6 0.75 0.1 0.75"  # x 2..12, y 2..12
SMALL = "0.2 0.25 0.4 0.25 0.4 0.5 0.2 0.5"  # x 4..8, y 4..8, inside BIG


def _export(root, labels, layout="ultralytics", split="train", yaml="names: {0: a, 1: b}\n"):
    """Images (black) and label files (``name -> text``; None: no label file)."""
    root = Path(root)
    images, label_dir = (
        (root / "images" / split, root / "labels" / split)
        if layout == "ultralytics"
        else (root / split / "images", root / split / "labels")
    )
    images.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for name, text in labels.items():
        if name.startswith("orphan"):
            (label_dir / f"{name}.txt").write_text(text)
            continue
        cv2.imwrite(str(images / f"{name}.jpg"), np.zeros((H, W, 3), np.uint8))
        if text is not None:
            (label_dir / f"{name}.txt").write_text(text)
    if yaml is not None:
        (root / "data.yaml").write_text(yaml)
    return label_dir


def test_both_layouts_and_yaml_paths_from_another_machine(tmp_path):
    _export(tmp_path / "u", {"a": f"1 {BIG}\n"})
    ds = build_dataset("yolo_seg", tmp_path / "u", "train")
    assert ds.class_names == ["background", "a", "b"] and ds[0]["mask"].max() == 2
    assert ds.metadata().to_dict()["labels"]["class_ids"] == {"0": 1, "1": 2}
    yaml = "path: D:\\work\\export\\\ntrain: ../train/images\nval: ../valid/images\nnames: [a]\n"
    for split in ("train", "valid"):
        _export(tmp_path / "r", {"a": f"0 {BIG}\n"}, "roboflow", split, yaml)
    for split in ("train", "val", "valid"):
        ds = build_dataset("yolo_seg", tmp_path / "r", split)
        folder = "train" if split == "train" else "valid"
        assert ds.samples[0].image_path == tmp_path / "r" / folder / "images" / "a.jpg"
        assert ds[0]["mask"].sum() == 121  # 11 x 11: the outline included
    _export(tmp_path / "flat", {"a": f"0 {BIG}\n"}, split="", yaml="names: [a]\n")
    assert len(build_dataset("yolo_seg", tmp_path / "flat", None)) == 1


def test_images_without_labels_are_background_and_orphan_labels_are_noted(tmp_path):
    _export(tmp_path, {"a": f"0 {BIG}\n", "b": None, "c": "\n", "orphan1": f"0 {BIG}\n"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("yolo_seg", tmp_path, "train")
    notes = [str(w.message) for w in caught]
    assert len(notes) == 1
    assert "1 image(s) in" in notes[0] and "read as background (b)" in notes[0]
    assert "1 label file(s) in" in notes[0] and "skipped (orphan1.txt)" in notes[0]
    assert [s.id for s in ds.samples] == ["a", "b", "c"]
    assert not ds[1]["mask"].any() and not ds[2]["mask"].any()


def test_smaller_objects_are_painted_over_larger_ones(tmp_path):
    for n, text in enumerate((f"0 {SMALL}\n1 {BIG}\n", f"1 {BIG}\n0 {SMALL}\n")):
        _export(tmp_path / str(n), {"a": text})
        mask = build_dataset("yolo_seg", tmp_path / str(n), "train")[0]["mask"]
        assert mask[6, 6] == 1 and mask[10, 10] == 2


@pytest.mark.parametrize(
    "line, expected",
    [
        ("2 " + BIG, r"line 2: class 2, but data.yaml names 2 class\(es\) \(0..1\)"),
        ("0 0.5 0.5 0.2 0.2", r"line 2: a polygon of 2 point\(s\), fewer than 3; fix or delete "
         r"the line \(re-export the segmentation format, not detection\)"),
        ("0 0.1 0.1 1.5 0.1 0.5 0.5", r"line 2 \(normalised x 20, y 16\): point \(30, 1.6\) "
         r"lies outside the 20x16 image"),
        ("0 0.1 0.1 0.5", r"line 2: 3 coordinates, not x, y pairs"),
        ("x 0.1 0.1 0.5 0.1 0.5 0.5", r"line 2 class: 'x' is not a number"),
    ],
)  # fmt: skip
def test_bad_lines_are_one_line_naming_file_line_and_fix(tmp_path, line, expected):
    labels = _export(tmp_path, {"a": f"0 {BIG}\n{line}\n"})
    ds = build_dataset("yolo_seg", tmp_path, "train")
    with pytest.raises(DataError, match=expected) as err:
        ds[0]
    assert str(err.value).startswith(str(labels / "a.txt")) and "\n" not in str(err.value)


def test_bad_exports_are_one_line_each(tmp_path):
    _export(tmp_path, {"a": f"0 {BIG}\n"}, yaml=None)
    with pytest.raises(
        DataError, match=r"data.yaml' to name the classes: give data.options.classes"
    ):
        build_dataset("yolo_seg", tmp_path, "train")
    assert build_dataset("yolo_seg", tmp_path, "train", classes=["a"]).class_names[1] == "a"
    (tmp_path / "data.yaml").write_text("nc: 2\nnames: [a]\n")
    with pytest.raises(DataError, match=r"nc is 2 but names lists 1; make them agree"):
        build_dataset("yolo_seg", tmp_path, "train")
    (tmp_path / "data.yaml").write_text("names: [a]\n")
    with pytest.raises(DataError, match=r"No images for split 'test' under .*looked for .*"
                       r"images/test; .*test/images"):  # fmt: skip
        build_dataset("yolo_seg", tmp_path, "test")


def _pillow_drawing(label_file: Path, shape: tuple[int, int]) -> np.ndarray:
    """The label file's polygons drawn by Pillow, largest (shoelace area) first."""
    h, w = shape
    objects = []
    if label_file.is_file():
        for line in label_file.read_text().splitlines():
            if line.split():
                values = line.split()
                p = np.array(values[1:], float).reshape(-1, 2) * [w, h]
                area = 0.5 * abs(p[:, 0] @ np.roll(p[:, 1], 1) - p[:, 1] @ np.roll(p[:, 0], 1))
                objects.append((area, int(values[0]) + 1, p))
    image = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(image)
    for _, value, p in sorted(objects, key=lambda o: -o[0]):
        draw.polygon([tuple(q) for q in p], fill=value)
    return np.array(image)


@pytest.mark.realdata
@pytest.mark.skipif(not CROPWEED.is_dir(), reason=f"no YOLO sample at {CROPWEED}")
def test_real_roboflow_export_matches_an_independent_drawing():
    sizes = {}
    for split in ("train", "val", "test"):  # data.yaml: val: valid, paths from another machine
        ds = build_dataset("yolo_seg", CROPWEED, split)
        sizes[split] = len(ds)
        assert ds.class_names == ["background", "crop"]
        for i, sample in enumerate(ds.samples):
            mask = ds[i]["mask"]
            expected = _pillow_drawing(sample.mask_path, mask.shape)
            assert (mask == expected).mean() > 0.995  # the rasterisers differ on edges only
            both, either = (
                ((mask == 1) & (expected == 1)).sum(),
                ((mask == 1) | (expected == 1)).sum(),
            )
            assert both / either > 0.97, (split, sample.id, both / either)
    assert sizes == {"train": 24, "val": 11, "test": 12}


@pytest.mark.realdata
@pytest.mark.skipif(not CROPWEED.is_dir(), reason=f"no YOLO sample at {CROPWEED}")
def test_real_roboflow_export_trains_evaluates_and_predicts(tmp_path):
    cfg = tmp_path / "yolo.yaml"
    cfg.write_text(
        f"data:\n  dataset: yolo_seg\n  root: {CROPWEED}\n  train_split: train\n"
        "  val_split: val\n  test_split: test\n  image_size: 64\n  batch_size: 4\n"
        "  num_workers: 0\nmodel:\n  arch: unet\n  encoder: null\n  base_channels: 8\n"
        "loss:\n  name: bce + dice\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt)]) == 0  # the test split
    images = CROPWEED / "test" / "images"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(images), "--out", str(tmp_path / "p")]) == 0
    )
    labels = sorted((tmp_path / "p").glob("*.png"))
    assert len(labels) == 12
    assert cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED).shape == (432, 432)
