"""segkit.viz: colours, overlays, de-normalisation, prediction grids and curves."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from segkit import viz


def test_palette_background_black_then_distinct():
    colors = viz.palette(11)
    assert colors.shape == (11, 3) and colors.dtype == np.uint8
    assert colors[0].tolist() == [0, 0, 0]
    assert len({tuple(c) for c in colors}) == 11
    assert len(viz.palette(40)) == 40


def test_colorize_and_its_range_check():
    mask = np.array([[0, 1], [2, 1]])
    colors = np.array([[0, 0, 0], [10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    out = viz.colorize(mask, colors)
    assert out[0, 1].tolist() == [10, 20, 30] and out[1, 0].tolist() == [40, 50, 60]
    with pytest.raises(ValueError, match="do not fit a palette of 3"):
        viz.colorize(np.array([[3]]), colors)


def test_overlay_blends_foreground_only():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [1, 0]])
    colors = np.array([[0, 0, 0], [200, 0, 50]], dtype=np.uint8)
    out = viz.overlay(image, mask, alpha=0.25, colors=colors)
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [125, 75, 88]  # 0.75 * 100 + 0.25 * colour, rounded
    with pytest.raises(ValueError, match="differ"):
        viz.overlay(image, np.zeros((3, 2), int))


def test_to_image_undoes_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = (rgb / 255.0 - np.array(mean)) / np.array(std)
    tensor = torch.from_numpy(x.transpose(2, 0, 1)).float()
    np.testing.assert_array_equal(viz.to_image(tensor, mean, std), rgb)
    stretched = viz.to_image(torch.tensor([[[1.0, 3.0]]]))  # one channel, min..max
    assert stretched.shape == (1, 2, 3) and stretched[0, :, 0].tolist() == [0, 255]


def test_prediction_grid_writes_a_png(tmp_path):
    images = torch.rand(2, 3, 32, 64)
    masks = torch.randint(0, 3, (2, 32, 64))
    path = viz.prediction_grid(
        images, masks, masks.flip(-1), tmp_path / "sub" / "grid.png",
        class_names=["bg", "a", "b"], ids=["x", "y"], title="t",
    )  # fmt: skip
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
    with pytest.raises(ValueError, match="at least one"):
        viz.prediction_grid(images[:0], masks[:0], masks[:0], tmp_path / "none.png")


def test_plot_curves_picks_a_metric(tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_miou": 0.2},
        {"epoch": 2, "train_loss": 0.8, "val_loss": None, "val_miou": None},
        {"epoch": 3, "train_loss": 0.7, "val_loss": 0.6, "val_miou": 0.4},
    ]
    wide = viz.plot_curves(rows, tmp_path / "wide.png", monitor="val_loss")
    narrow = viz.plot_curves([{"epoch": 1, "train_loss": 1.0}], tmp_path / "narrow.png")
    with Image.open(wide) as a, Image.open(narrow) as b:
        assert a.width > 1.5 * b.width  # a second panel for val_miou
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_curves([], tmp_path / "x.png")


def test_importing_viz_does_not_import_matplotlib():
    code = "import sys, segkit.viz; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_failed_figure_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import matplotlib.figure

    rows = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.2}]
    path = viz.plot_curves(rows, tmp_path / "curves.png")
    before = path.read_bytes()

    def broken(self, fname, *args, **kwargs):  # half a file written, then the disk is full
        with open(fname, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        viz.plot_curves(rows + [{"epoch": 2, "train_loss": 0.9}], path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.mark.parametrize(
    ("classes", "multilabel", "expected"),
    [
        (["background", "cat", "dog"], False, 0),
        (["_background_", "person"], False, 0),
        (["bg", "face", "lb"], False, 0),  # Helen
        (["road", "car"], False, 0),  # binary: class 0 is what is not the object
        (["road", "sidewalk", "building"], False, None),  # Cityscapes: road is a class
        (["Sky", "Building", "Road"], False, None),  # CamVid
        (["Unlabelled", "Sky", "Road"], False, 0),
        (["red_disc", "blue_disc", "green_disc"], True, 0),  # multi-label: 0 draws "none"
        (None, False, 0),  # nothing known: as before
    ],
)
def test_background_label_is_decided_from_the_class_names(classes, multilabel, expected):
    assert viz.background_label(classes, multilabel) == expected


def test_overlay_tints_class_0_when_it_is_a_real_class():
    image = np.full((2, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1], [1, 0]])
    colors = np.array([[200, 0, 50], [0, 200, 0]], dtype=np.uint8)
    out = viz.overlay(image, mask, alpha=0.25, colors=colors, background=None)
    assert out[0, 0].tolist() == [125, 75, 88]
    assert out[0, 1].tolist() == [75, 125, 75]
    assert viz.overlay(image, mask, 0.25, colors)[0, 0].tolist() == [100, 100, 100]
