"""CamVid in the SegNet tutorial's layout (``camvid``): split lists of foreign absolute paths
matched by file name, label 11 left out, and the real 40-frame sample through the CLI."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.formats import CAMVID_CLASSES
from segkit.data.formats.synth import synth_camvid
from segkit.errors import DataError

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()
CAMVID = DATA / "camvid_val40"


def test_split_list_of_foreign_absolute_paths_is_matched_by_file_name(tmp_path):
    root = synth_camvid(tmp_path, n=3)
    first = (root / "train.txt").read_text().splitlines()[0]
    assert first.startswith("/SegNet/CamVid/train/")  # a path that does not exist here
    (root / "train.txt").write_text(
        "# a comment\n\n"
        + first.replace("/", "\\").replace("\\SegNet", "D:\\SegNet")  # a Windows path too
        + "\n/elsewhere/train/0001TP_train0002.png /elsewhere/trainannot/0001TP_train0002.png\n"
    )
    ds = build_dataset("camvid", root, "train")
    assert [s.id for s in ds.samples] == ["0001TP_train0000", "0001TP_train0002"]
    assert ds.samples[0].image_path == root / "train" / "0001TP_train0000.png"
    assert ds.class_names == list(CAMVID_CLASSES) and ds.ignore_index == 11
    mask = ds[0]["mask"]
    assert mask.shape == (32, 48) and set(np.unique(mask).tolist()) <= {0, 3, 8, 11}
    (root / "val.txt").unlink()  # without a list: every pair in the folders
    assert len(build_dataset("camvid", root, "val")) == 3


def test_split_list_naming_a_missing_file_is_one_line(tmp_path):
    root = synth_camvid(tmp_path, n=2)
    lines = (root / "val.txt").read_text().splitlines()
    (root / "valannot" / "0001TP_val0001.png").unlink()
    with pytest.raises(DataError) as err:
        build_dataset("camvid", root, "val")
    msg = str(err.value)
    assert "val.txt" in msg and "line 2" in msg and "0001TP_val0001.png" in msg
    assert "remove line 2" in msg and "\n" not in msg
    (root / "val.txt").write_text(lines[0] + "\n/x/val/nope.png /x/valannot/nope.png\n")
    with pytest.raises(DataError, match=r"line 2 names 'nope.png'.*val/nope.png"):
        build_dataset("camvid", root, "val")
    (root / "val.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="names no images"):
        build_dataset("camvid", root, "val")
    with pytest.raises(DataError, match=r"Image folder .*test' does not exist"):
        build_dataset("camvid", root, "test")
    with pytest.raises(DataError, match="reads one split"):
        build_dataset("camvid", root, None)


@pytest.mark.realdata
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"no CamVid sample at {CAMVID}")
def test_real_camvid_val40_reads_trains_evaluates_and_predicts(tmp_path):
    ds = build_dataset("camvid", CAMVID, "val")  # val.txt: /SegNet/CamVid/... paths
    assert len(ds) == 40 and ds.ignore_index == 11
    seen = set()
    for i in range(len(ds)):
        image, mask, _ = ds.read(i)
        assert image.shape == (360, 480, 3) and mask.shape == (360, 480)
        seen |= set(np.unique(mask).tolist())
    assert seen == set(range(12))  # all 11 classes and Unlabelled
    few = [s.id for s in ds.samples[:4]]
    cfg = tmp_path / "camvid.yaml"
    cfg.write_text(
        f"data:\n  dataset: camvid\n  root: {CAMVID}\n  train_split: val\n  val_fraction: 0.5\n"
        f"  image_size: 64\n  batch_size: 2\n  num_workers: 0\n  options: {{ids: {few}}}\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        "loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    image = ds.samples[0].image_path
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(image), "--out", str(tmp_path / "p")]) == 0
    )
    label = cv2.imread(str(tmp_path / "p" / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (360, 480) and label.max() <= 10  # 11 is never predicted
