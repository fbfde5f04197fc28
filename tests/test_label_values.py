"""The values label files hold, kept on the way out: binary masks stored as 0/255 are
predicted as 0/255 (0/1 masks as 0/1, as before)."""

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
