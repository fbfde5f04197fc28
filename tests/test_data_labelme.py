"""labelme JSONs as semantic masks (``labelme``): versions 3.x-5.x, every shape type,
``imageData``, ``__ignore__``, ``_background_`` and the class list's three sources on small
files written here; the real example checked against an independent drawing (Pillow) and
trained through the CLI."""

import base64
import json
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
LABELME = DATA / "labelme_instance"

W, H = 20, 16
SQUARE = [[2, 2], [12, 2], [12, 12], [2, 12]]


def _shape(label, points, kind="polygon", **extra):
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, **extra}


def _write(folder, name, shapes, image=True, **fields):
    """A labelme file (5.x fields unless overridden) and, when ``image``, its JPEG."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        cv2.imwrite(str(folder / f"{name}.jpg"), np.zeros((H, W, 3), np.uint8))
    data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg",
            "imageData": None, "imageHeight": H, "imageWidth": W, **fields}  # fmt: skip
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_shape_types_versions_and_special_labels(tmp_path):
    old = {"label": "cat", "points": SQUARE, "line_color": None, "fill_color": None}  # 3.x
    _write(tmp_path, "old", [old], version=None, imageHeight=None, imageWidth=None)
    _write(tmp_path, "shapes", [
        _shape("dog", [[1, 1], [6, 5]], "rectangle"),
        _shape("cat", [[15, 8], [15, 11]], "circle"),
        _shape("dog", [[4, 12], [18, 12], [18, 15], [4, 15]], group_id=1),
        _shape("dog", [[2, 14], [3, 14]], "line"),
        _shape("dog", [[9, 9]], "point"),
        _shape("__ignore__", [[17, 1], [19, 1], [19, 3]]),
        _shape("_background_", [[5, 13], [7, 13], [7, 15]]),  # painted after: background
    ])  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = build_dataset("labelme", tmp_path, None)
        old_mask, mask = ds[0]["mask"], ds[1]["mask"]
    assert ds.class_names == ["background", "cat", "dog"] and ds.ignore_index == 255
    assert [s.id for s in ds.samples] == ["old", "shapes"]
    assert (old_mask[2:13, 2:13] == 1).all() and old_mask.sum() == 121  # outline included
    assert (mask[1:6, 1:7] == 2).all() and mask[6, 7] == 0  # rectangle corners 1,1 - 6,5
    assert mask[8, 15] == 1 and mask[8, 11] == 0  # circle of radius 3 around (15, 8)
    assert mask[2, 18] == 255 and mask[14, 10] == 2 and mask[14, 6] == 0
    notes = [str(w.message) for w in caught if "skipped" in str(w.message)]
    assert len(notes) == 1 and "2 point/line shape(s) skipped" in notes[0]


def test_image_data_alone_and_a_windows_image_path(tmp_path):
    photo = np.full((H, W, 3), 90, np.uint8)
    data = base64.b64encode(cv2.imencode(".png", photo)[1].tobytes()).decode()
    _write(tmp_path, "embedded", [_shape("a", SQUARE)], image=False, imageData=data,
           imagePath="C:\\Users\\me\\gone.jpg")  # fmt: skip
    (tmp_path / "pics").mkdir()
    cv2.imwrite(str(tmp_path / "pics" / "b.jpg"), np.zeros((H, W, 3), np.uint8))
    _write(tmp_path, "windows", [_shape("a", SQUARE)], image=False, imagePath="pics\\b.jpg")
    ds = build_dataset("labelme", tmp_path, None)
    assert (ds[0]["image"] == 90).all() and ds[0]["mask"].sum() == 121
    assert ds.samples[1].image_path == tmp_path / "pics" / "b.jpg"


def test_class_list_from_option_labels_txt_or_the_files(tmp_path):
    _write(
        tmp_path / "train",
        "a",
        [_shape("zebra", SQUARE), _shape("ant", [[14, 2], [18, 2], [18, 6]])],
    )
    assert build_dataset("labelme", tmp_path, "train").class_names == ["background", "ant", "zebra"]
    (tmp_path / "labels.txt").write_text("__ignore__\n_background_\nzebra\nant\nbee\n")
    ds = build_dataset("labelme", tmp_path, "train")  # the root's labels.txt serves every split
    assert ds.class_names == ["background", "zebra", "ant", "bee"]
    assert ds.metadata().to_dict()["labels"]["rule"].startswith("class list from labels.txt")
    ds = build_dataset("labelme", tmp_path, "train", classes=["ant", "zebra", "cat"])
    assert ds.class_names == ["background", "ant", "zebra", "cat"] and ds[0]["mask"].max() == 2


@pytest.mark.parametrize(
    "shape, expected",
    [
        (_shape("a", [[1, 1], [5, 1]]), r"shape 1 \('a'\): a polygon of 2 point\(s\), fewer "
         r"than 3; fix the shape in labelme"),
        (_shape("a", [[1, 1], [40, 1], [5, 5]]), r"shape 1 \('a'\): point \(40, 1\) lies "
         r"outside the 20x16 image"),
        (_shape("a", [[1, 1]], "rectangle"), r"shape 1 \('a'\): a rectangle needs 2 points, "
         r"it has 1"),
        (_shape("horse", SQUARE), r"shape 1 has the label 'horse', which is not a class \(a\). "
         r"Add it to labels.txt"),
        (_shape("a", SQUARE, "cube"), r"shape_type 'cube' is not one segkit reads"),
    ],
)  # fmt: skip
def test_bad_shapes_are_one_line_naming_file_shape_and_fix(tmp_path, shape, expected):
    (tmp_path / "labels.txt").write_text("a\n")
    path = _write(tmp_path, "x", [shape])
    with pytest.raises(DataError, match=expected) as err:
        build_dataset("labelme", tmp_path, None)[0]
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_bad_files_are_one_line_each(tmp_path):
    _write(tmp_path, "a", [_shape("a", SQUARE)], image=False)
    with pytest.raises(DataError, match=r"a.json': its image 'a.jpg' is not beside it and the "
                       r"file embeds no imageData"):  # fmt: skip
        build_dataset("labelme", tmp_path, None)
    _write(tmp_path, "a", [_shape("a", SQUARE)], imageHeight=10)
    with pytest.raises(DataError, match=r"imageHeight x imageWidth 10x20 but its image is 16x20"):
        build_dataset("labelme", tmp_path, None)[0]
    (tmp_path / "other.json").write_text('{"images": []}')
    with pytest.raises(DataError, match=r"other.json' is not a labelme file \(no 'shapes' list\)"):
        build_dataset("labelme", tmp_path, None)
    (tmp_path / "other.json").write_text("{")
    with pytest.raises(DataError, match=r"other.json' is not JSON"):
        build_dataset("labelme", tmp_path, None)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no labelme files here")
    with pytest.raises(DataError, match=r"No labelme .json files in"):
        build_dataset("labelme", tmp_path, "empty")


def _pillow_drawing(path: Path, ids: dict[str, int]) -> np.ndarray:
    """The shapes drawn by Pillow (as labelme's own shape_to_mask does), in file order."""
    data = json.loads(path.read_text())
    image = Image.new("L", (data["imageWidth"], data["imageHeight"]), 0)
    draw = ImageDraw.Draw(image)
    for shape in data["shapes"]:
        value = 255 if shape["label"] == "__ignore__" else ids[shape["label"]]
        draw.polygon([tuple(p) for p in shape["points"]], fill=value)
    return np.array(image)


@pytest.mark.realdata
@pytest.mark.skipif(not LABELME.is_dir(), reason=f"no labelme sample at {LABELME}")
def test_real_labelme_example_matches_an_independent_drawing():
    ds = build_dataset("labelme", LABELME, None)
    assert len(ds) == 3 and len(ds.class_names) == 21  # labels.txt: 20 VOC classes
    ids = {name: i for i, name in enumerate(ds.class_names)}
    for i, sample in enumerate(ds.samples):
        mask, expected = ds[i]["mask"], _pillow_drawing(sample.mask_path, ids)
        assert mask.shape == expected.shape == ds[i]["image"].shape[:2]
        assert set(np.unique(mask)) == set(np.unique(expected))
        assert (mask == expected).mean() > 0.995  # the two rasterisers differ on edges only
        for value in np.unique(expected):
            iou = ((mask == value) & (expected == value)).sum() / (
                (mask == value) | (expected == value)
            ).sum()
            assert iou > 0.98, (sample.id, value, iou)


@pytest.mark.realdata
@pytest.mark.skipif(not LABELME.is_dir(), reason=f"no labelme sample at {LABELME}")
def test_real_labelme_example_trains_evaluates_and_predicts(tmp_path):
    cfg = tmp_path / "labelme.yaml"
    cfg.write_text(
        f"data:\n  dataset: labelme\n  root: {LABELME}\n  train_split: null\n"
        "  val_fraction: 0.34\n  image_size: 64\n  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 8\n"
        "loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    image = LABELME / "2011_000003.jpg"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(tmp_path / "p")]) == 0
    )
    label = cv2.imread(str(tmp_path / "p" / "2011_000003.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (338, 500) and label.max() <= 20


def test_labelme_5_mask_shapes_are_pasted_over_their_box(tmp_path):
    patch = np.full((4, 4), 255, np.uint8)
    patch[0, 0] = 0
    png = base64.b64encode(cv2.imencode(".png", patch)[1].tobytes()).decode()
    _write(tmp_path, "m", [_shape("a", [[3, 4], [6, 7]], "mask", mask=png)])
    mask = build_dataset("labelme", tmp_path, None)[0]["mask"]
    assert mask.sum() == 15 and mask[4, 3] == 0 and (mask[5:8, 3:7] == 1).all()
