"""VOC, Cityscapes and colour-coded masks: small sets written in each real layout, read back,
their bad inputs, and one epoch of train -> evaluate -> predict through the CLI each."""

import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.formats import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    colors_to_ids,
    label_ids_to_train_ids,
    read_class_table,
    train_ids_to_label_ids,
    voc_palette,
)
from segkit.data.formats.cityscapes import CITYSCAPES_LABELS
from segkit.data.formats.synth import SYNTH_TABLE, synth_cityscapes, synth_color_masks, synth_voc
from segkit.data.meta import DatasetMeta
from segkit.engine.checkpoint import load_checkpoint, save_checkpoint
from segkit.errors import ConfigError, DataError

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()  # absolute: tests link to these files from tmp_path
SIZE = (48, 32)  # width x height: not square, so predictions must come back in this size
TABLE = SYNTH_TABLE


def make_voc(root: Path) -> Path:
    return synth_voc(root, n=6)  # 6 masked (4 train, 2 val) + 3 unmasked images


def make_cityscapes(root: Path) -> Path:
    return synth_cityscapes(root, n=2)


def make_color_masks(root: Path, stray: tuple[int, int, int] | None = None) -> Path:
    synth_color_masks(root, n=6)
    if stray is not None:  # one pixel of a colour the table does not hold
        rgb = cv2.imread(str(root / "masks" / "f0.png"))
        rgb[0, 0] = stray[::-1]
        cv2.imwrite(str(root / "masks" / "f0.png"), rgb)
    return root


# --- Pascal VOC ----------------------------------------------------------------------------


def test_voc_reads_the_split_list_and_leaves_unmasked_images_alone(tmp_path):
    root = make_voc(tmp_path)
    train = build_dataset("voc", root, split="train")  # found under VOCdevkit/VOC2012
    val = build_dataset("voc", root, split="val")
    assert len(train) == 4 and len(val) == 2
    assert train.class_names == list(VOC_CLASSES) and train.ignore_index == 255
    item = train[0]
    assert item["image"].shape == (32, 48, 3)
    assert set(np.unique(item["mask"]).tolist()) <= {0, 8, 12, 15, 255}
    assert (item["mask"][:, 24] == 255).all()  # palette index, not the colour
    meta = train.metadata()
    assert meta.palette[15] == (192, 128, 128)  # VOC's colour of "person"
    everything = build_dataset("voc", root / "VOCdevkit" / "VOC2012", split=None)
    assert len(everything) == 6  # every masked image, none of the 3 unmasked ones


def test_voc_split_list_naming_a_missing_file_is_one_line(tmp_path):
    root = make_voc(tmp_path)
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("2007_000000\n2007_000007\n")  # 7: image, no mask
    with pytest.raises(DataError) as err:
        build_dataset("voc", root, split="train")
    msg = str(err.value)
    assert "train.txt" in msg and "2007_000007.png" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"No split list .*trainval\.txt.*Lists there: train, val"):
        build_dataset("voc", root, split="trainval")
    with pytest.raises(DataError, match="No Pascal VOC layout"):
        build_dataset("voc", lists.parent, split="train")


# --- Cityscapes ----------------------------------------------------------------------------


def test_cityscapes_label_ids_map_to_train_ids():
    ids = np.array([[7, 8, 11, 26], [33, 0, 9, 1]], np.uint8)  # road ... bicycle, unlabeled,
    train = label_ids_to_train_ids(ids)  # parking (no trainId), ego vehicle
    np.testing.assert_array_equal(train, [[0, 1, 2, 13], [18, 255, 255, 255]])
    np.testing.assert_array_equal(train_ids_to_label_ids([[0, 13, 18]]), [[7, 26, 33]])
    assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car"
    with pytest.raises(DataError, match=r"'x\.png' holds values 34, 200 that are not"):
        label_ids_to_train_ids(np.array([[34, 200, 7]], np.uint8), "x.png")


def test_cityscapes_layout(tmp_path):
    root = make_cityscapes(tmp_path)
    ds = build_dataset("cityscapes", root, split="train")
    assert [s.id for s in ds.samples][:2] == ["aachen_000000_000019", "aachen_000001_000019"]
    assert len(ds) == 4 and ds.ignore_index == 255 and ds.class_names == list(CITYSCAPES_CLASSES)
    assert set(np.unique(ds[0]["mask"]).tolist()) <= {0, 1, 2, 13, 255}
    assert ds.metadata().palette[0] == (128, 64, 128)
    assert len(build_dataset("cityscapes", root, split="val", cities=["bochum"])) == 2
    bad = root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    cv2.imwrite(str(bad), np.full((32, 48), 40, np.uint8))
    with pytest.raises(
        DataError, match="aachen_000000_000019_gtFine_labelIds.png' holds values 40"
    ):
        ds[0]
    with pytest.raises(DataError, match="No Cityscapes split folder"):
        build_dataset("cityscapes", root, split="test")


# --- colour-coded masks --------------------------------------------------------------------


def test_class_table_csv_and_yaml(tmp_path):
    root = make_color_masks(tmp_path / "set")
    assert read_class_table(root / "class_dict.csv") == (
        ["Sky", "Road", "Car"],
        [(128, 128, 128), (128, 64, 128), (64, 0, 128)],
    )
    yaml = tmp_path / "t.yaml"
    yaml.write_text("Sky: [128, 128, 128]\nRoad: [128, 64, 128]\nCar: [64, 0, 128]\n")
    assert read_class_table(yaml) == read_class_table(root / "class_dict.csv")
    (tmp_path / "bad.csv").write_text("name,r,g,b\nSky,1,2,3\nRoad,1,2,3\n")
    with pytest.raises(DataError, match=r"repeats the colour \(1, 2, 3\)"):
        read_class_table(tmp_path / "bad.csv")
    (tmp_path / "bad.csv").write_text("class,red\nSky,1\n")
    with pytest.raises(DataError, match="name,r,g,b"):
        read_class_table(tmp_path / "bad.csv")


def test_class_table_json_of_hex_colours(tmp_path):
    """Dubai's aerial set names its colours as {"Water": "#50E3C2", ...}; Supervisely's
    classes.json as a list of {title, color}; #RGB and any case read too."""
    root = make_color_masks(tmp_path / "set")
    names, colors = read_class_table(root / "class_dict.csv")
    hexes = {n: "#{:02x}{:02X}{:02x}".format(*c) for n, c in zip(names, colors)}
    (root / "classes.json").write_text(json.dumps(hexes))
    assert read_class_table(root / "classes.json") == (names, colors)
    listed = {"classes": [{"title": n, "color": h, "shape": "polygon"} for n, h in hexes.items()]}
    (tmp_path / "supervisely.json").write_text(json.dumps(listed))
    assert read_class_table(tmp_path / "supervisely.json") == (names, colors)
    (tmp_path / "short.json").write_text('{"Water": "#5e3", "Land": "F5A623"}')
    assert read_class_table(tmp_path / "short.json") == (
        ["Water", "Land"],
        [(0x55, 0xEE, 0x33), (0xF5, 0xA6, 0x23)],
    )
    (tmp_path / "t.yaml").write_text("Water: '#50E3C2'\nLand: [245, 166, 35]\n")
    assert read_class_table(tmp_path / "t.yaml")[1] == [(0x50, 0xE3, 0xC2), (245, 166, 35)]
    (tmp_path / "t.yaml").write_text("Water: #50E3C2\nLand: [245, 166, 35]\n")  # a comment
    with pytest.raises(DataError, match=r"class 'Water': no colour given\. In YAML an unquoted"):
        read_class_table(tmp_path / "t.yaml")
    # the data set reads its masks through the JSON table as through the CSV
    by_json = build_dataset("color_masks", root, None, class_table="classes.json")
    by_csv = build_dataset("color_masks", root, None)
    np.testing.assert_array_equal(by_json.read(0)[1], by_csv.read(0)[1])
    assert by_json.metadata().palette == tuple(colors)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"Water": "#50E3CZ", "Land": "#F5A623"}', "class 'Water': colour '#50E3CZ' is not a hex"),
        ('{"Water": "#50E3C", "Land": "#F5A623"}', "class 'Water': colour '#50E3C' is not a hex"),
        ('{"Water": [80, 227], "Land": "#F5A623"}', "class 'Water': colour [80, 227] is not three"),
        ('{"Water": "#50E3C2",}', "is not valid JSON (line 1"),
    ],
)
def test_a_bad_json_class_table_is_one_line(tmp_path, text, message):
    (tmp_path / "classes.json").write_text(text)
    with pytest.raises(DataError, match=re.escape(message)) as failure:
        read_class_table(tmp_path / "classes.json")
    assert "\n" not in str(failure.value) and str(tmp_path / "classes.json") in str(failure.value)


def test_colors_to_ids_against_a_loop():
    rng = np.random.default_rng(3)
    colors = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (10, 20, 30)]
    ids = rng.integers(0, 4, (7, 9))
    rgb = np.array(colors, np.uint8)[ids]
    np.testing.assert_array_equal(colors_to_ids(rgb, colors, list("abcd")), ids)
    rgb[2, 3] = (9, 21, 30)
    out = colors_to_ids(rgb, colors, list("abcd"), unknown_to=255)
    assert out[2, 3] == 255 and (out[rgb.sum(-1) != 60] == ids[rgb.sum(-1) != 60]).all()


def test_color_masks_read_and_unknown_colour(tmp_path):
    root = make_color_masks(tmp_path / "set", stray=(120, 60, 130))
    ds = build_dataset("color_masks", root, split=None)
    assert ds.class_names == ["Sky", "Road", "Car"] and ds.metadata().palette[2] == (64, 0, 128)
    assert set(np.unique(ds[1]["mask"]).tolist()) <= {0, 1, 2}
    with pytest.raises(DataError) as err:
        ds[0]
    msg = str(err.value)
    assert "f0.png" in msg and "(120, 60, 130)" in msg and "nearest class: 'Road'" in msg
    assert "\n" not in msg
    lenient = build_dataset("color_masks", root, split=None, unknown="ignore")
    assert lenient.ignore_index == 255 and lenient[0]["mask"][0, 0] == 255


def test_color_masks_camvid_kaggle_layout(tmp_path):
    root = make_color_masks(tmp_path / "set")
    (root / "images").rename(root / "train")
    (root / "train_labels").mkdir()
    for mask in (root / "masks").iterdir():
        mask.rename(root / "train_labels" / f"{mask.stem}_L.png")
    ds = build_dataset(
        "color_masks", root, "train", images="{split}", masks="{split}_labels", mask_suffix="_L"
    )
    assert len(ds) == 6 and ds.samples[0].id == "f0"


# --- one epoch of each through the CLI -----------------------------------------------------


def _train_evaluate_predict(tmp_path: Path, data: str, images: list[Path], split: str) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n{data}  image_size: 32\n  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        "loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", split]) == 0
    out = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(ckpt), *map(str, images), "--out", str(out)]
    assert main([*argv, "--color", "--overlay"]) == 0
    for image in images:
        label = cv2.imread(str(out / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == (SIZE[1], SIZE[0])  # the data set's own size
        color = cv2.imread(str(out / f"{image.stem}_color.png"))[..., ::-1]
        assert color.shape == (SIZE[1], SIZE[0], 3)
    return out


def _palette_of(out: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    label = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    return label, cv2.imread(str(out / f"{stem}_color.png"))[..., ::-1]


def test_voc_through_the_cli(tmp_path):
    root = make_voc(tmp_path / "voc")
    images = sorted((root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[-2:]
    data = f"  dataset: voc\n  root: {root}\n  train_split: train\n  val_split: val\n"
    out = _train_evaluate_predict(tmp_path, data, images, "val")
    label, color = _palette_of(out, images[0].stem)
    np.testing.assert_array_equal(color, np.array(voc_palette(21), np.uint8)[label])


def test_cityscapes_through_the_cli(tmp_path):
    root = make_cityscapes(tmp_path / "cs")
    images = sorted((root / "leftImg8bit" / "val").glob("*/*.png"))[:2]
    data = f"  dataset: cityscapes\n  root: {root}\n  train_split: train\n  val_split: val\n"
    out = _train_evaluate_predict(tmp_path, data, images, "val")
    ckpt = tmp_path / "run" / "best.pt"
    argv = ["predict", "--checkpoint", str(ckpt), *map(str, images)]
    assert main([*argv, "--out", str(tmp_path / "ids"), "--ids"]) == 0
    assert main([*argv, "--out", str(tmp_path / "tiled"), "--tile", "32"]) == 0
    old = load_checkpoint(ckpt)  # a checkpoint from before predictions had their own encoding
    del old["model_spec"]["meta"]["output_ids"]
    save_checkpoint(tmp_path / "old.pt", old)
    argv[2] = str(tmp_path / "old.pt")
    assert main([*argv, "--out", str(tmp_path / "old")]) == 0
    label_ids = {label for label, _, train, _ in CITYSCAPES_LABELS if train != 255}
    for image in images:
        label, color = _palette_of(out, image.stem)
        train = cv2.imread(str(tmp_path / "ids" / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(label).tolist()) <= label_ids  # labelIds, as gtFine holds
        assert int(train.max()) < len(CITYSCAPES_CLASSES)  # --ids: trainIds
        np.testing.assert_array_equal(label, train_ids_to_label_ids(train))
        np.testing.assert_array_equal(color, np.array(CITYSCAPES_PALETTE, np.uint8)[train])
        plain = cv2.imread(str(tmp_path / "old" / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(plain, train)  # an old checkpoint writes class ids
        tiled = cv2.imread(str(tmp_path / "tiled" / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(tiled).tolist()) <= label_ids  # windows: labelIds too


def test_cityscapes_declares_its_output_ids(tmp_path):
    root = make_cityscapes(tmp_path)
    meta = build_dataset("cityscapes", root, split="train").metadata()
    assert meta.output_ids[:2] == (7, 8) and meta.output_ids[-1] == 33  # road, ..., bicycle
    assert DatasetMeta.from_dict(meta.to_dict()).output_ids == meta.output_ids
    for train, label in enumerate(meta.output_ids):
        assert label_ids_to_train_ids(np.array([label], np.uint8))[0] == train
    for f in (tmp_path / "gtFine" / "train").glob("*/*_labelIds.png"):
        mask = label_ids_to_train_ids(cv2.imread(str(f), cv2.IMREAD_UNCHANGED))
        cv2.imwrite(str(f).replace("_labelIds", "_labelTrainIds"), mask)
    trained = build_dataset("cityscapes", root, "train", label_type="labelTrainIds")
    assert trained.metadata().output_ids is None  # its own files hold trainIds


def test_bad_output_ids_are_one_line():
    with pytest.raises(ConfigError, match="output_ids .* one label value 0..255 per class"):
        DatasetMeta(classes=("a", "b"), output_ids=(0, 300))
    with pytest.raises(ConfigError, match="output_ids"):
        DatasetMeta(classes=("a", "b"), output_ids=(0,))


def test_color_masks_through_the_cli(tmp_path):
    root = make_color_masks(tmp_path / "cm")
    images = sorted((root / "images").glob("*.jpg"))[:2]
    data = (
        f"  dataset: color_masks\n  root: {root}\n  train_split: .\n  val_fraction: 0.34\n"
        "  options:\n    class_table: class_dict.csv\n"
    )
    out = _train_evaluate_predict(tmp_path, data, images, "val")
    label, color = _palette_of(out, images[0].stem)
    np.testing.assert_array_equal(color, np.array([c for _, c in TABLE], np.uint8)[label])


# --- the real Cityscapes sample (skipped when absent) --------------------------------------

CITYSCAPES = DATA / "cityscapes_train8"


@pytest.mark.realdata
@pytest.mark.skipif(not CITYSCAPES.is_dir(), reason=f"no Cityscapes sample at {CITYSCAPES}")
def test_real_cityscapes_matches_its_label_train_ids():
    """Our mapping of labelIds against the release's own labelTrainIds files. Those were drawn
    again from the polygons, so about 0.5% of pixels (object borders) differ; whole classes
    mapped wrongly would differ by far more."""
    from segkit.data.io import read_mask

    ds = build_dataset("cityscapes", CITYSCAPES, split="train")
    assert len(ds) == 8
    for i in (0, len(ds) - 1):
        image, mask, sample = ds.read(i)
        assert image.shape == (1024, 2048, 3) and mask.shape == (1024, 2048)
        theirs = read_mask(str(sample.mask_path).replace("_labelIds", "_labelTrainIds"))
        assert (mask == theirs).mean() > 0.99
        assert {0, 2, 10, 255} <= set(np.unique(mask).tolist())  # road, building, sky, ignored
    trained_ids = build_dataset("cityscapes", CITYSCAPES, "train", label_type="labelTrainIds")
    assert trained_ids.read(0)[1].max() == 255


@pytest.mark.realdata
@pytest.mark.skipif(not CITYSCAPES.is_dir(), reason=f"no Cityscapes sample at {CITYSCAPES}")
def test_real_cityscapes_color_pngs_read_as_color_masks(tmp_path):
    """The release's RGBA ``_gtFine_color.png`` files through a 19-class colour table: the
    colours of labels without a trainId are unknown and, asked to, left out (255)."""
    from segkit.data.formats.cityscapes import CITYSCAPES_PALETTE
    from segkit.data.io import read_mask

    (tmp_path / "images").mkdir(), (tmp_path / "masks").mkdir()
    rows = ["name,r,g,b"] + [
        f"{n},{r},{g},{b}" for n, (r, g, b) in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
    ]
    (tmp_path / "class_dict.csv").write_text("\n".join(rows) + "\n")
    gt = CITYSCAPES / "gtFine" / "train" / "aachen"
    stem = "aachen_000000_000019"
    leftimg = CITYSCAPES / "leftImg8bit" / "train" / "aachen" / f"{stem}_leftImg8bit.png"
    (tmp_path / "images" / f"{stem}.png").symlink_to(leftimg)
    (tmp_path / "masks" / f"{stem}.png").symlink_to(gt / f"{stem}_gtFine_color.png")
    with pytest.raises(DataError, match=r"000019.png' holds colour \(0, 0, 0\).*nearest class"):
        build_dataset("color_masks", tmp_path, None)[0]
    ds = build_dataset("color_masks", tmp_path, None, unknown="ignore")
    mask = ds.read(0)[1]
    theirs = read_mask(gt / f"{stem}_gtFine_labelTrainIds.png")
    known = theirs != 255
    # polegroup shares pole's colour, so compare where the release has a trainId
    assert (mask[known] == theirs[known]).mean() > 0.99
