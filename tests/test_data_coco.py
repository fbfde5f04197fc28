"""COCO instance annotations as semantic masks (``coco``): every layout and quirk on small
JSONs written here, each bad input's one-line error, and the real CVAT export checked
against pycocotools' own ``COCO.annToMask`` and trained through the CLI."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.formats.coco import CATEGORY_RULE
from segkit.errors import DataError

mask_api = pytest.importorskip("pycocotools.mask")

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()
INTERIOR = DATA / "coco_cvat_interior"

W, H = 20, 16
SQUARE = [2, 2, 12, 2, 12, 12, 2, 12]  # 10x10 square
SMALL = [4, 4, 8, 4, 8, 8, 4, 8]  # 4x4 square inside it


def _write(root, anns, cats=None, images=None, json_path="annotations/instances_default.json",
           image_dir="images"):  # fmt: skip
    """A COCO export: images (``W x H`` black JPEG unless given) and the JSON."""
    images = images or [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}]
    for im in images:
        path = Path(root) / image_dir / im["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((int(im["height"]), int(im["width"]), 3), np.uint8))
    cats = cats or [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = Path(root) / json_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _ann(aid, cat, seg, image=1, crowd=0):
    return {"id": aid, "image_id": image, "category_id": cat, "segmentation": seg, "iscrowd": crowd}


def _reference(seg, h=H, w=W):
    """pycocotools' own drawing of a segmentation (annToMask's code path)."""
    if isinstance(seg, list):
        return mask_api.decode(mask_api.merge(mask_api.frPyObjects(seg, h, w)))
    if isinstance(seg["counts"], list):
        seg = mask_api.frPyObjects(seg, h, w)
    return mask_api.decode(seg)


def test_category_ids_map_to_contiguous_classes_by_the_stated_rule(tmp_path):
    cats = [
        {"id": 0, "name": "parts", "supercategory": "none"},  # Roboflow's umbrella, unused
        {"id": 7, "name": "wheel", "supercategory": "parts"},
        {"id": 3, "name": "door", "supercategory": "parts"},
        {"id": 9, "name": "door", "supercategory": "parts"},  # same name: one class
        {"id": 12, "name": "left", "supercategory": "eye"},
        {"id": 13, "name": "left", "supercategory": "hand"},  # same name, other super
        {"id": 20, "name": "never used"},
        {"id": 21, "name": "_background_"},
    ]
    anns = [_ann(1, 7, [SQUARE]), _ann(2, 9, [SMALL]), _ann(3, 13, [[14, 2, 18, 2, 18, 6]])]
    _write(tmp_path, anns, cats)
    ds = build_dataset("coco", tmp_path, "default")
    assert ds.class_names == [
        "background", "door", "wheel", "left (eye)", "left (hand)", "never used",
    ]  # fmt: skip
    assert dict(ds.index.category_ids) == {3: 1, 7: 2, 9: 1, 12: 3, 13: 4, 20: 5, 21: 0}
    mask = ds[0]["mask"]
    assert (mask[3:11, 3:11][mask[3:11, 3:11] != 1] == 2).all()  # wheel, door on top
    assert set(np.unique(mask).tolist()) == {0, 1, 2, 4}
    labels = ds.metadata().to_dict()["labels"]  # recorded in the checkpoint
    assert labels["rule"] == CATEGORY_RULE and labels["category_ids"]["9"] == 1


def test_polygons_and_both_rle_forms_match_pycocotools(tmp_path):
    hole = np.zeros((H, W), np.uint8, order="F")
    hole[2:14, 2:18] = 1
    hole[5:9, 6:12] = 0  # an object with a hole, as CVAT writes masks
    compressed = mask_api.encode(np.asfortranarray(hole))
    compressed = {"size": compressed["size"], "counts": compressed["counts"].decode()}
    flat = hole.ravel(order="F")
    edges = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    runs = np.diff(edges).tolist()
    uncompressed = {"size": [H, W], "counts": ([0] if flat[0] else []) + runs}
    for seg in ([SQUARE, [14, 10, 18, 10, 18, 14, 14, 14]], compressed, uncompressed):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        _write(root, [_ann(1, 2, seg, crowd=int(isinstance(seg, dict)))])
        mask = build_dataset("coco", root, "default")[0]["mask"]
        np.testing.assert_array_equal(mask, _reference(seg) * 2)
    assert mask[6, 8] == 0 and mask[3, 3] == 2  # the hole stays a hole


def test_crowd_is_an_object_unless_ignored_and_unannotated_images_are_background(tmp_path):
    crowd = mask_api.encode(np.asfortranarray(np.pad(np.ones((8, 8), np.uint8), ((0, 8), (0, 12)))))
    crowd["counts"] = crowd["counts"].decode()
    images = [{"id": i, "file_name": f"{n}.jpg", "width": W, "height": H} for i, n in
              ((1, "a"), (2, "empty"))]  # fmt: skip
    _write(tmp_path, [_ann(1, 1, crowd, crowd=1), _ann(2, 2, [SMALL])], images=images)
    ds = build_dataset("coco", tmp_path, "default")
    mask = ds[0]["mask"]
    assert mask[0, 0] == 1 and mask[5, 5] == 2 and ds.ignore_index is None
    assert not ds[1]["mask"].any() and ds[1]["mask"].shape == (H, W)
    ignored = build_dataset("coco", tmp_path, "default", crowd="ignore")
    mask = ignored[0]["mask"]
    assert ignored.ignore_index == 255 and mask[0, 0] == 255 and mask[5, 5] == 2


def test_smaller_objects_are_painted_over_larger_ones_whatever_the_order(tmp_path):
    for order in ([SMALL, SQUARE], [SQUARE, SMALL]):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        cats = {id(SMALL): 1, id(SQUARE): 2}
        _write(root, [_ann(i + 1, cats[id(s)], [s]) for i, s in enumerate(order)])
        mask = build_dataset("coco", root, "default")[0]["mask"]
        assert mask[5, 5] == 1 and mask[10, 10] == 2


def test_numbers_stored_as_strings_are_read(tmp_path):
    images = [{"id": "1", "file_name": "a.jpg", "width": str(W), "height": str(H)}]
    cats = [{"id": "1", "name": "a"}]
    seg = [[str(v) for v in SQUARE]]
    _write(tmp_path, [{"id": "5", "image_id": "1", "category_id": "1", "segmentation": seg,
                       "iscrowd": "0"}], cats, images)  # fmt: skip
    mask = build_dataset("coco", tmp_path, "default")[0]["mask"]
    np.testing.assert_array_equal(mask, _reference([SQUARE]))


def test_roboflow_and_single_json_layouts_and_an_annotations_option(tmp_path):
    robo = tmp_path / "robo"
    _write(
        robo, [_ann(1, 1, [SQUARE])], json_path="train/_annotations.coco.json", image_dir="train"
    )
    ds = build_dataset("coco", robo, "train")
    assert ds.samples[0].image_path == robo / "train" / "a.jpg" and ds[0]["mask"].max() == 1
    flat = tmp_path / "flat"  # labelme2coco: annotations.json beside JPEGImages/
    images = [{"id": 1, "file_name": "JPEGImages/a.jpg", "width": W, "height": H}]
    _write(flat, [_ann(1, 2, [SQUARE])], images=images, json_path="annotations.json", image_dir="")
    ds = build_dataset("coco", flat, None)
    assert ds.samples[0].id == "a" and ds[0]["mask"].max() == 2
    other = _write(tmp_path / "o", [_ann(1, 1, [SQUARE])], json_path="labels/mine.json")
    ds = build_dataset("coco", tmp_path / "o", "x", annotations="labels/mine.json", images="images")
    assert ds.index.path == other and len(ds) == 1


def test_multilabel_mode_gives_one_mask_per_category(tmp_path):
    _write(tmp_path, [_ann(1, 1, [SQUARE]), _ann(2, 2, [SMALL])])
    ds = build_dataset("coco", tmp_path, "default", mode="multilabel")
    item = ds[0]
    assert ds.class_names == ["a", "b"] and ds.metadata().multilabel and ds.task == "multilabel"
    assert ds.flip_pairs == [] and ds.metadata().labels["category_ids"] == {"1": 0, "2": 1}
    assert item["mask"].shape == (2, H, W) and item["mask"][:, 5, 5].tolist() == [1, 1]
    np.testing.assert_array_equal(item["mask"][0], _reference([SQUARE]))


@pytest.mark.parametrize(
    "anns, cats, expected",
    [
        ([_ann(7, 1, [[1, 1, 5, 1]])], None, r"annotation 7 \(image a.jpg\): a polygon of 2 "
         r"point\(s\), fewer than 3; fix or delete"),
        ([_ann(8, 1, [[1, 1, 50, 1, 5, 5]])], None, r"annotation 8 \(image a.jpg\): point "
         r"\(50, 1\) lies outside the 20x16 image; fix or delete"),
        ([_ann(9, 4, [SQUARE])], None, r"annotation 9 \(image a.jpg\) names category_id 4, "
         r"which no category has \(ids: 1, 2\); add the category or fix"),
        ([_ann(3, 1, [SQUARE], image=2)], None, r"annotation 3 names image_id 2, which the "
         r"file's images do not list; add the image or delete"),
        ([_ann(4, 1, {"size": [4, 4], "counts": [16]})], None, r"annotation 4 \(image a.jpg\): "
         r"RLE of size \[4, 4\] for an image of height 16, width 20"),
        ([_ann(5, 1, [["x", 1, 2, 3, 4, 5]])], None, r"annotation 5 \(image a.jpg\): the "
         r"points are not numbers"),
    ],
)  # fmt: skip
def test_bad_annotations_are_one_line_naming_file_annotation_and_fix(
    tmp_path, anns, cats, expected
):
    path = _write(tmp_path, anns, cats)
    with pytest.raises(DataError, match=expected) as err:
        build_dataset("coco", tmp_path, "default")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_bad_files_are_one_line_each(tmp_path):
    path = _write(tmp_path, [_ann(1, 1, [SQUARE])])
    (tmp_path / "images" / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"names the image 'a.jpg', which is in none of"):
        build_dataset("coco", tmp_path, "default")
    images = [{"id": i, "file_name": f"{n}.jpg", "width": W, "height": H} for i, n in
              ((1, "a"), (2, "b"))]  # fmt: skip
    _write(tmp_path, [_ann(1, 1, [SQUARE])], images=images)
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"names 1 image\(s\) that are not in .*images': b.jpg"):
        build_dataset("coco", tmp_path, "default")
    path.write_text('{"images": [], "annotations": []}')
    with pytest.raises(DataError, match=r"is not a COCO instances file: no categories list"):
        build_dataset("coco", tmp_path, "default")
    path.write_text("not json")
    with pytest.raises(DataError, match=r"is not JSON"):
        build_dataset("coco", tmp_path, "default")
    with pytest.raises(DataError, match=r"No COCO annotation file for split 'train'.*JSONs "
                       r"there: annotations/instances_default.json.*\(CVAT: default\)"):  # fmt: skip
        build_dataset("coco", tmp_path, "train")
    _write(tmp_path, [_ann(1, 1, [SQUARE])], images=[
        {"id": 1, "file_name": "a.jpg", "width": W, "height": H}])  # fmt: skip
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((H, W + 1, 3), np.uint8))
    with pytest.raises(DataError, match=r"is 21x16, but .* gives it as 20x16"):
        build_dataset("coco", tmp_path, "default")[0]
    with pytest.raises(DataError, match=r"crowd must be one of object, ignore"):
        build_dataset("coco", tmp_path, "default", crowd="skip")


@pytest.mark.realdata
@pytest.mark.skipif(not INTERIOR.is_dir(), reason=f"no COCO sample at {INTERIOR}")
def test_real_cvat_export_matches_pycocotools_ann_to_mask():
    from pycocotools.coco import COCO

    ds = build_dataset("coco", INTERIOR, "default")
    coco = COCO(str(INTERIOR / "annotations" / "instances_default.json"))
    assert len(ds) == 6 and len(ds.class_names) == 24  # 23 categories, 13 of them unused
    cat_to_class = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
    for i, sample in enumerate(ds.samples):
        image_id = next(k for k, im in coco.imgs.items() if Path(im["file_name"]).stem == sample.id)
        masks = [(coco.annToMask(a), a) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
        expected = np.zeros_like(masks[0][0])
        for m, a in sorted(masks, key=lambda p: -int(p[0].sum())):  # the documented order
            expected[m > 0] = cat_to_class[a["category_id"]]
        np.testing.assert_array_equal(ds[i]["mask"], expected)
        assert expected.shape == ds[i]["image"].shape[:2]


@pytest.mark.realdata
@pytest.mark.skipif(not INTERIOR.is_dir(), reason=f"no COCO sample at {INTERIOR}")
def test_real_cvat_export_trains_evaluates_and_predicts(tmp_path):
    cfg = tmp_path / "coco.yaml"
    cfg.write_text(
        f"data:\n  dataset: coco\n  root: {INTERIOR}\n  train_split: default\n"
        "  val_fraction: 0.34\n  image_size: 64\n  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 8\n"
        "loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    image = INTERIOR / "images" / "12Volt_041.jpg"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(tmp_path / "p")]) == 0
    )
    label = cv2.imread(str(tmp_path / "p" / "12Volt_041.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (480, 640) and label.max() <= 23


def test_an_annotation_without_segmentation_is_drawn_as_its_box(tmp_path):
    box = {"id": 1, "image_id": 1, "category_id": 2, "segmentation": [], "bbox": [3, 4, 5, 6]}
    _write(tmp_path, [box])  # CVAT exports its rectangles so
    with pytest.warns(
        UserWarning, match=r"1 annotation\(s\) have no segmentation and are drawn as"
    ):
        mask = build_dataset("coco", tmp_path, "default")[0]["mask"]
    np.testing.assert_array_equal(np.argwhere(mask == 2).min(axis=0), [4, 3])
    assert set(np.unique(mask).tolist()) == {0, 2} and 30 <= (mask == 2).sum() <= 42


def test_index_is_flat_arrays(tmp_path):
    """The parsed JSON becomes a few numpy arrays (no Python object per annotation, so a
    forked loader worker shares them), from which each image's entry is built as before."""
    rle = mask_api.encode(np.asfortranarray(_reference([SMALL])))
    images = [{"id": k, "file_name": f"{n}.jpg", "width": W, "height": H}
              for k, n in ((1, "a"), (2, "b"), (3, "c"))]  # fmt: skip
    anns = [_ann(5, 1, [SQUARE, SMALL], image=2), _ann(6, 2, {"size": [H, W],
            "counts": rle["counts"].decode()}, image=1), _ann(7, 2, [SMALL], image=2)]  # fmt: skip
    ds = build_dataset("coco", _write(tmp_path, anns, images=images).parents[1], "default")
    fields = {k: v for k, v in vars(ds.index).items() if isinstance(v, np.ndarray)}
    assert len(fields) == 14 and all(v.dtype != object for v in fields.values())
    a, b, c = (ds.image_entry(s) for s in ds.samples)
    assert (a.file_name, b.file_name, c.annotations) == ("a.jpg", "b.jpg", ())
    assert [(x.id, x.cls) for x in b.annotations] == [(5, 1), (7, 2)]
    np.testing.assert_array_equal(b.annotations[0].segmentation[1].reshape(-1), SMALL)
    assert a.annotations[0].segmentation["counts"] == rle["counts"]
    expected = _reference([SQUARE, SMALL]).astype(np.uint8)
    expected[_reference([SMALL]) == 1] = 2
    np.testing.assert_array_equal(ds.read(1)[1], expected)
