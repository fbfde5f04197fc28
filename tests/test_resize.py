"""data.resize: squash | longest_side_pad | shortest_side_crop, in training and undone at
prediction; the geometry checked both ways on non-square images whose label is a rectangle."""

from __future__ import annotations

import itertools
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from segkit.api import build_experiment, evaluate, train
from segkit.config import load_config
from segkit.data import build_transforms, read_resized
from segkit.data.io import decode_strategy
from segkit.data.resize import (
    RESIZE_MODES,
    check_resize_mode,
    crop_padding,
    mask_fill,
    resize_for_model,
    resized_shape,
)
from segkit.data.transforms import _resize_steps
from segkit.engine.checkpoint import load_checkpoint, save_checkpoint
from segkit.errors import ConfigError
from segkit.inference import PredictOptions, Predictor
from segkit.models import ModelSpec, SegmentationModel

HEIGHT, WIDTH = 32, 48  # not square: 48 wide, 32 high
BOX = (8, 24, 12, 40)  # rows 8..23, columns 12..39


def _shape_mask(height: int = HEIGHT, width: int = WIDTH, box: tuple = BOX) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    top, bottom, left, right = box
    mask[top:bottom, left:right] = 1
    return mask


def _shape_image(mask: np.ndarray) -> np.ndarray:
    """Red where the label is 1, black elsewhere."""
    image = np.zeros((*mask.shape, 3), np.uint8)
    image[mask == 1] = (255, 0, 0)
    return image


def _boundary(mask: np.ndarray, band: int) -> np.ndarray:
    """Pixels within ``band`` pixels of a class boundary of ``mask``."""
    kernel = np.ones((2 * band + 1, 2 * band + 1), np.uint8)
    return cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)


def _assert_aligned(got: np.ndarray, want: np.ndarray, band: int) -> None:
    assert got.shape == want.shape
    wrong = got != want  # any mistake must lie on a boundary
    assert not (wrong & ~_boundary(want, band)).any(), np.argwhere(wrong & ~_boundary(want, band))


# --- the mode itself --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["pad", "longest", "Squash", 3, None])
def test_an_unknown_mode_names_data_resize_and_the_valid_values(bad):
    with pytest.raises(ConfigError, match="data.resize") as info:
        check_resize_mode(bad)
    assert all(mode in str(info.value) for mode in RESIZE_MODES)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="data.resize"):
        build_transforms(None, 32, train=False, resize=bad)


def test_the_padding_label_is_the_ignore_index_else_background():
    assert mask_fill(255) == 255 and mask_fill(None) == 0
    steps = A.Compose(_resize_steps(32, "longest_side_pad", False, 255))
    out = steps(image=_shape_image(_shape_mask()), mask=_shape_mask())
    assert out["mask"].shape == (32, 32)
    assert (out["mask"][21:] == 255).all() and (out["image"][21:] == 0).all()  # 32 -> 21 rows
    assert set(np.unique(out["mask"][:21])) == {0, 1}


# --- training's geometry and prediction's: the same pixels, undone exactly ----------------------


def test_prediction_input_equals_training_input_pixel_for_pixel():
    rng = np.random.default_rng(0)
    for (height, width), size in itertools.product(
        [(32, 48), (48, 32), (33, 17), (360, 480), (7, 101)], [16, 25, 64]
    ):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        for mode in ("squash", "longest_side_pad"):
            trained = A.Compose(_resize_steps(size, mode, False, None))(image=image, mask=mask)
            np.testing.assert_array_equal(resize_for_model(image, size, mode), trained["image"])
        # shortest_side_crop trains on the centre (random) crop of what prediction sees whole
        trained = A.Compose(_resize_steps(size, "shortest_side_crop", False, None))(
            image=image, mask=mask
        )["image"]
        whole = resize_for_model(image, size, "shortest_side_crop")
        assert min(whole.shape[:2]) == size == trained.shape[0] == trained.shape[1]
        top, left = (whole.shape[0] - size) // 2, (whole.shape[1] - size) // 2
        np.testing.assert_array_equal(whole[top : top + size, left : left + size], trained)


@pytest.mark.parametrize("size, band", [(64, 1), (16, 2)])  # enlarging; shrinking 3x
@pytest.mark.parametrize("mode", RESIZE_MODES)
@pytest.mark.parametrize("height, width", [(HEIGHT, WIDTH), (WIDTH, HEIGHT)])
def test_a_label_map_survives_the_round_trip(mode, size, band, height, width):
    """Training's geometry (longest_side_pad: scaled + padded; the others: the scale at which
    prediction sees the image), then prediction's undo: the label map comes back in place."""
    box = (8, 24, 12, 40) if height < width else (12, 40, 8, 24)
    mask = _shape_mask(height, width, box)
    if mode == "longest_side_pad":
        steps = A.Compose(_resize_steps(size, mode, False, 255))
        model_side = steps(image=_shape_image(mask), mask=mask)["mask"]
        assert model_side.shape == (size, size)
    else:  # what the model sees at prediction: the whole image at training's scale
        shape = resized_shape(height, width, size, mode)
        model_side = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    back = crop_padding(model_side, (height, width), size, mode)
    assert 255 not in back  # no padding left
    back = cv2.resize(back, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
    _assert_aligned(back, mask, band)


def _pointwise(mode: str | None) -> SegmentationModel:
    """Class 1 wherever the input pixel is red: a stand-in that sees each pixel alone, so
    its output is the input's geometry."""
    spec = ModelSpec(arch="unet", encoder=None, classes=2, divisor=16, task="multiclass")
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if mode is not None:
        spec.options["resize"] = mode
    net = torch.nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, -5.0]))
        net.weight[1, 0] = 10.0  # red (0..1) -> +10
    return SegmentationModel(net, spec).eval()


class _Recording(torch.nn.Module):
    """Remembers the shapes of the inputs of the wrapped model."""

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model, self.spec, self.inputs = model, model.spec, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("size, band", [(64, 1), (16, 2)])
@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_predictions_come_back_at_the_image_size_and_in_place(tmp_path, mode, size, band):
    mask = _shape_mask()
    image = _shape_image(mask)
    model = _Recording(_pointwise(mode))
    predictor = Predictor(model, PredictOptions(size=size))
    assert predictor.recipe.resize == mode
    labels = predictor.labels(image)
    _assert_aligned(labels, mask, band)
    probs = predictor.probabilities(image)
    assert probs.shape == (2, HEIGHT, WIDTH)
    _assert_aligned(probs.argmax(0).astype(np.uint8), mask, band)
    # the model saw what training feeds it
    seen = model.inputs[0]
    if mode == "longest_side_pad":  # 48x32 -> 16x11 / 64x43, padded below to a square
        rows = resized_shape(HEIGHT, WIDTH, size, mode)[0]
        assert seen.shape[-2:] == (size, size) and (seen[..., rows:, :] == 0).all()
        assert seen[..., :rows, :].amax() > 0.9
    elif mode == "shortest_side_crop":  # the whole image, shortest side = size, then the divisor
        scaled = resized_shape(HEIGHT, WIDTH, size, mode)
        assert scaled == (size, size * 3 // 2)
        assert seen.shape[-2:] == tuple(-(-s // 16) * 16 for s in scaled)
    else:
        assert seen.shape[-2:] == (size, size)
    # files give what arrays give
    path = tmp_path / "in" / "shape.png"
    path.parent.mkdir()
    cv2.imwrite(str(path), image[..., ::-1])
    predictor.predict([path], tmp_path / "out")
    written = cv2.imread(str(tmp_path / "out" / "shape.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, labels)


def test_a_large_jpeg_is_decoded_reduced_no_smaller_than_the_scaled_shape(tmp_path):
    # 2048 x 1024 to a longest side of 512: 512 x 256 is needed, a quarter decode gives it
    # (a square 512 x 512 would allow only half)
    shape = resized_shape(1024, 2048, 512, "longest_side_pad")
    assert shape == (256, 512)
    assert decode_strategy("reduced", 2048, 1024, 512, shape) == cv2.IMREAD_REDUCED_COLOR_4
    assert decode_strategy("reduced", 2048, 1024, 512) == cv2.IMREAD_REDUCED_COLOR_2
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    image = cv2.resize(small, (2048, 1024), interpolation=cv2.INTER_LINEAR)
    path = tmp_path / "wide.jpg"
    cv2.imwrite(str(path), image)
    read, original = read_resized(path, 512, mode="longest_side_pad")
    assert original == (1024, 2048) and read.shape == (512, 512, 3)
    assert (read[256:] == 0).all() and read[:256].any()
    full = resize_for_model(image[..., ::-1], 512, "longest_side_pad")
    assert np.abs(read.astype(int) - full).mean() < 4  # a reduced decode, not another picture


# --- through the API: train, evaluate, predict ------------------------------------------------


def _folder(root: Path, n: int = 6) -> Path:
    """Binary folder data set: 48 x 32 black images, a red rectangle labelled 1, moving."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        box = (4 + i, 20 + i, 6 + 3 * i, 24 + 3 * i)
        mask = _shape_mask(box=box)
        cv2.imwrite(str(root / "images" / f"s{i}.png"), _shape_image(mask)[..., ::-1])
        cv2.imwrite(str(root / "masks" / f"s{i}.png"), mask)  # 0/1, so 255 may be ignored
    return root


def _cfg(tmp_path: Path, mode: str, *more: str):
    root = tmp_path / "data"
    if not root.exists():
        _folder(root)
    return load_config(
        None,
        [
            "data.dataset=folder",
            f"data.root={root}",
            "data.train_split=.",
            "data.val_fraction=0.34",
            "data.image_size=16",
            f"data.resize={mode}",
            "data.batch_size=2",
            "data.num_workers=0",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            "loss.name=bce",
            "train.epochs=1",
            f"train.out_dir={tmp_path / ('run_' + mode)}",
            "train.progress=false",
            *more,
        ],
    )


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_each_mode_trains_evaluates_and_predicts(tmp_path, mode):
    cfg = _cfg(tmp_path, mode)
    summary = train(cfg)
    ckpt = Path(cfg.train.out_dir) / "best.pt"
    assert ckpt.is_file(), summary
    spec = load_checkpoint(ckpt)["model_spec"]
    assert spec["options"]["resize"] == mode and spec["options"]["image_size"] == 16
    result = evaluate(ckpt, split="val", device="cpu")
    assert 0.0 <= result["miou"] <= 1.0
    image = tmp_path / "data" / "images" / "s0.png"
    out = tmp_path / "pred"
    Predictor(ckpt, device="cpu").predict([image], out)
    label = cv2.imread(str(out / "s0.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (HEIGHT, WIDTH)


def test_a_checkpoint_without_a_recorded_mode_squashes(tmp_path, monkeypatch):
    """Checkpoints written before data.resize existed record no mode: squash, as then."""
    cfg = _cfg(tmp_path, "squash")
    train(cfg)
    state = load_checkpoint(Path(cfg.train.out_dir) / "best.pt")
    del state["model_spec"]["options"]["resize"]
    del state["config"]["data"]["resize"]
    old = save_checkpoint(tmp_path / "old.pt", state)
    predictor = Predictor(old, PredictOptions(), device="cpu")
    assert predictor.recipe.resize == "squash" and predictor.recipe.size == 16
    assert predictor.labels(_shape_image(_shape_mask())).shape == (HEIGHT, WIDTH)
    seen = []
    original = build_transforms

    def recording(*args, **kwargs):
        seen.append(kwargs.get("resize"))
        return original(*args, **kwargs)

    monkeypatch.setattr("segkit.data.build_transforms", recording)
    assert evaluate(old, split="val", device="cpu") == evaluate(
        Path(cfg.train.out_dir) / "best.pt", split="val", device="cpu"
    )
    assert seen == ["squash"] * 2  # each evaluate builds validation's transform (only)


def test_training_feeds_the_geometry_of_the_mode(tmp_path):
    """The data sets' items, as the trainer gets them: square, padded with the ignore index."""
    exp = build_experiment(_cfg(tmp_path, "longest_side_pad", "loss.ignore_index=255"))
    item = exp.val_set[0]
    assert tuple(item["image"].shape) == (3, 16, 16)
    assert (item["mask"][11:] == 255).all() and (item["mask"][:11] != 255).all()  # 32 -> 11 rows
    exp = build_experiment(_cfg(tmp_path, "shortest_side_crop"))
    assert tuple(exp.train_set[0]["image"].shape) == (3, 16, 16)
    assert tuple(exp.val_set[0]["mask"].shape) == (16, 16)


def test_a_bad_mode_or_one_with_prepared_squares_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="data.resize: unknown resize mode 'pad'"):
        build_experiment(_cfg(tmp_path, "pad"))
    with pytest.raises(ConfigError, match="keeps each image's aspect, but data.prepare_size"):
        build_experiment(_cfg(tmp_path, "longest_side_pad", "data.prepare_size=16"))
