"""CVAT's "Segmentation mask 1.1" export (``cvat_mask``): colour masks read through the
export's labelmap.txt, on a synthetic export in the real layout."""

import cv2
import numpy as np
import pytest

from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.formats import read_labelmap, voc_palette
from segkit.data.formats.synth_annotations import synth_cvat_mask
from segkit.errors import DataError


def test_labelmap_colours_give_the_class_ids(tmp_path):
    root = synth_cvat_mask(tmp_path, n=3)
    ds = build_dataset("cvat_mask", root, "default")  # CVAT names its subset default
    assert ds.class_names == ["background", "box", "disc"] and len(ds) == 3
    rgb = cv2.imread(str(ds.samples[0].mask_path))[..., ::-1]
    mask = ds[0]["mask"]
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    assert (rgb[mask == 1] == (250, 50, 83)).all() and (rgb[mask == 2] == (51, 221, 255)).all()
    assert not ds[2]["mask"].any()  # the image without objects
    assert ds.metadata().palette == ((0, 0, 0), (250, 50, 83), (51, 221, 255))
    assert len(build_dataset("cvat_mask", root, None)) == 3


def test_labelmap_without_colours_takes_voc_colours_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "labelmap.txt"
    path.write_text("# label:color_rgb:parts:actions\nbackground:::\ncat:::\ndog:1,2,3::\n")
    names, colors = read_labelmap(path)
    assert names == ["background", "cat", "dog"]
    assert colors == [voc_palette()[0], voc_palette()[1], (1, 2, 3)]
    path.write_text("background:0,0,0::\ncat:300,0,0::\n")
    with pytest.raises(DataError, match=r"labelmap.txt' line 2: colour '300,0,0' is not r,g,b"):
        read_labelmap(path)
    path.write_text("background:0,0,0::\ncat:0,0,0::\n")
    with pytest.raises(DataError, match=r"line 2: the colour \(0, 0, 0\) is listed twice"):
        read_labelmap(path)


def test_bad_exports_are_one_line_each(tmp_path):
    root = synth_cvat_mask(tmp_path, n=2)
    rgb = cv2.imread(str(root / "SegmentationClass" / "s0.png"))
    rgb[0, 0] = (7, 7, 7)
    cv2.imwrite(str(root / "SegmentationClass" / "s0.png"), rgb)
    with pytest.raises(DataError, match=r"s0.png' holds colour \(7, 7, 7\)"):
        build_dataset("cvat_mask", root, "default")[0]
    assert build_dataset("cvat_mask", root, "default", unknown="ignore")[0]["mask"][0, 0] == 255
    (root / "JPEGImages" / "s1.jpg").unlink()
    with pytest.raises(DataError, match=r"default.txt' names 's1', but its image .* does not "
                       r"exist. Export with 'Save images' on"):  # fmt: skip
        build_dataset("cvat_mask", root, "default")
    with pytest.raises(DataError, match=r"No subset list .*train.txt'. Lists there: default"):
        build_dataset("cvat_mask", root, "train")


def test_cvat_mask_export_trains_evaluates_and_predicts(tmp_path):
    root = synth_cvat_mask(tmp_path / "export", n=6)
    cfg = tmp_path / "cvat.yaml"
    cfg.write_text(
        f"data:\n  dataset: cvat_mask\n  root: {root}\n  train_split: default\n"
        "  val_fraction: 0.34\n  image_size: 32\n  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        "loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    image = root / "JPEGImages" / "s0.jpg"
    out = tmp_path / "p"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(out), "--color"]) == 0
    )
    assert cv2.imread(str(out / "s0.png"), cv2.IMREAD_UNCHANGED).shape == (32, 48)
