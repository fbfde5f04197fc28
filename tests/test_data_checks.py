"""What training says about its data before the first step: split sizes, the ignored-pixel
fraction (sampled), and warnings for a validation split that overlaps training or masks
that are mostly ignored (issue 25 item 4)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.data import FolderDataset
from segkit.data.checks import check_splits
from segkit.data.io import write_mask


def _folder(root: Path, n: int, ignored_rows: int = 0) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"img{i}.png"), np.full((10, 8, 3), 40 * i, np.uint8))
        mask = np.zeros((10, 8), np.uint8)
        mask[5:] = 1
        mask[:ignored_rows] = 255
        write_mask(root / "masks" / f"img{i}.png", mask)
    return root


def test_sizes_and_sampled_ignored_fraction_without_warnings(tmp_path):
    train = FolderDataset(_folder(tmp_path / "t", 5, ignored_rows=2), classes=3)
    val = FolderDataset(_folder(tmp_path / "v", 2), classes=3)
    train.ignore_index = 255
    report = check_splits(train, val, max_masks=3)
    assert (report.train_images, report.val_images, report.shared) == (5, 2, 0)
    assert report.sampled == 3 and report.ignored == pytest.approx(0.2)
    assert report.warnings == []
    line = report.line()
    assert "train 5 images, val 2" in line and "20.0% of the pixels" in line
    assert "3 of 5 sampled masks" in line


def test_validation_that_is_the_training_set_warns(tmp_path):
    root = _folder(tmp_path / "d", 3)
    report = check_splits(FolderDataset(root, classes=3), FolderDataset(root, classes=3))
    assert report.shared == 3
    (warning,) = report.warnings
    assert "all 3 validation images are training images" in warning


def test_mostly_ignored_masks_warn(tmp_path):
    """A colour table that matches almost no pixel with unknown: ignore."""
    train = FolderDataset(_folder(tmp_path / "t", 2, ignored_rows=9), classes=3)
    train.ignore_index = 255
    report = check_splits(train, FolderDataset(_folder(tmp_path / "v", 1), classes=3))
    (warning,) = report.warnings
    assert "90.0% of the pixels" in warning and "ignored" in warning


def test_training_prints_the_report_and_warns(tmp_path, capsys):
    from segkit.api import train
    from segkit.config import Config

    root = _folder(tmp_path / "d", 2)
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.classes = "folder", str(root), 3
    cfg.data.train_split = cfg.data.val_split = "."
    cfg.data.image_size, cfg.data.batch_size, cfg.data.num_workers = 32, 2, 0
    cfg.model.arch, cfg.model.base_channels = "unet", 4
    cfg.train.epochs, cfg.train.out_dir, cfg.train.progress = 1, str(tmp_path / "run"), False
    with pytest.warns(UserWarning, match="validation images are training images"):
        train(cfg)
    assert "data: train 2 images, val 2" in capsys.readouterr().out
