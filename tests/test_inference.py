"""Prediction: outputs at the original size, RLE, TTA, tiling, streaming and clear errors."""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit import inference
from segkit.data.helen import HELEN_CLASSES, HELEN_FLIP_PAIRS
from segkit.data.io import MAX_IMAGE_PIXELS, read_mask
from segkit.data.rle import read_rle_csv, rle_decode
from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import CheckpointError, DataError
from segkit.inference import (
    ImageFiles,
    find_images,
    flip_pairs_from_names,
    normalize,
    predict,
    predict_proba,
    predictor,
    probs_to_labels,
    read_for_model,
)
from segkit.models import ModelSpec, SegmentationModel, build_model
from segkit.models.windows import Windows, blend_image


def _write_images(
    folder: Path, n: int = 3, size: tuple[int, int] = (80, 96), ext: str = ".jpg", stem: str = "img"
) -> list[Path]:
    """``n`` smooth random RGB images ``<stem><i><ext>`` of ``size`` = (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(list(folder.iterdir())))
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        path = folder / f"{stem}{i}{ext}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def _binary_model() -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(arch="unet", base_channels=4, classes=1)


def _helen_model() -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(arch="unet", base_channels=4, classes=11, class_names=list(HELEN_CLASSES))


def _pointwise_model(classes: int = 3) -> SegmentationModel:
    """A 1x1-convolution network: each output pixel depends only on its own input pixel.

    With one class the logit is ``R - G``: foreground wherever red exceeds green.
    """
    torch.manual_seed(0)
    task = "binary" if classes == 1 else "multiclass"
    spec = ModelSpec(arch="unet", encoder=None, classes=classes, divisor=16, task=task)
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    conv = torch.nn.Conv2d(3, classes, 1)
    if classes == 1:
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1))
            conv.bias.zero_()
    return SegmentationModel(conv, spec).eval()


def _checkpoint(path: Path, model: SegmentationModel, image_size: int = 32) -> Path:
    state = {
        "model": model.state_dict(),
        "model_spec": model.spec.to_dict(),
        "config": {"data": {"image_size": image_size}},
    }
    return save_checkpoint(path, state)


def test_predict_writes_label_maps_at_original_size(tmp_path):
    folder = tmp_path / "in"
    jpgs = _write_images(folder, 3, (80, 96))
    other = _write_images(tmp_path / "single", 1, (50, 70), ext=".png", stem="other")[0]
    result = predict(_binary_model(), [folder, other], tmp_path / "out", size=32, batch_size=2)
    assert result["count"] == 4 and result["skipped"] == []
    assert sorted(Path(p).name for p in result["outputs"]) == [
        "img0.png",
        "img1.png",
        "img2.png",
        "other0.png",
    ]
    for src in [*jpgs, other]:
        mask = read_mask(tmp_path / "out" / f"{src.stem}.png")
        assert mask.shape == cv2.imread(str(src)).shape[:2]
        assert set(np.unique(mask)) <= {0, 1}
    assert result["images_per_s"] > 0


@pytest.mark.parametrize("in_spec", [True, False], ids=["spec-options", "config-only"])
def test_predict_from_checkpoint_uses_training_size_and_writes_overlays(
    tmp_path, monkeypatch, in_spec
):
    model = _helen_model()
    if in_spec:  # what training records: spec.options["image_size"] wins over the config
        model.spec.options["image_size"] = 48
    ckpt = _checkpoint(tmp_path / "best.pt", model, image_size=32 if in_spec else 48)
    _write_images(tmp_path / "in", 2, (80, 96))
    seen = []
    original = predictor.predict_proba
    monkeypatch.setattr(
        predictor, "predict_proba", lambda m, x, *a: seen.append(x.shape) or original(m, x, *a)
    )
    predict(ckpt, [tmp_path / "in"], tmp_path / "out", overlay=True)
    assert seen == [torch.Size([2, 3, 48, 48])]
    overlay = cv2.imread(str(tmp_path / "out" / "img0_overlay.png"))
    assert overlay.shape == (80, 96, 3)
    assert read_mask(tmp_path / "out" / "img1.png").max() < len(HELEN_CLASSES)


def test_rle_csv_decodes_to_the_written_masks(tmp_path):
    paths = _write_images(tmp_path / "in", 3, (80, 96))
    csv_path = tmp_path / "sub" / "submission.csv"
    predict(_pointwise_model(1), paths, tmp_path / "out", size=32, rle_csv=csv_path)
    with open(csv_path, newline="") as f:
        assert next(csv.reader(f)) == ["img", "rle_mask"]
    rles = read_rle_csv(csv_path)
    assert list(rles) == [p.name for p in paths]
    for p in paths:
        mask = read_mask(tmp_path / "out" / f"{p.stem}.png")
        image = cv2.imread(str(p))
        assert 0.01 < mask.mean() < 0.99  # both classes present
        # the pointwise model marks red > green; the resize back only blurs the borders
        assert (mask == (image[..., 2] > image[..., 1])).mean() > 0.9
        np.testing.assert_array_equal(rle_decode(rles[p.name], mask.shape), mask)


def test_probs_to_labels_matches_torch_interpolation():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(1, 4, 8, 10)).astype(np.float32)), 1)
    size = (37, 53)
    ref = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
    got = probs_to_labels(probs[0].numpy(), size)
    assert (got == ref.numpy()).mean() > 0.999  # float rounding may flip a near-tie
    near = F.interpolate(probs.argmax(1, keepdim=True).float(), size=size, mode="nearest-exact")
    np.testing.assert_array_equal(
        probs_to_labels(probs[0].numpy(), size, resize_back="nearest"), near[0, 0].numpy()
    )
    one = torch.sigmoid(torch.from_numpy(rng.normal(size=(1, 1, 8, 10)).astype(np.float32)))
    ref1 = F.interpolate(one, size=size, mode="bilinear", align_corners=False)[0, 0] > 0.3
    assert (probs_to_labels(one[0].numpy(), size, threshold=0.3) == ref1.numpy()).mean() > 0.999
    np.testing.assert_array_equal(
        probs_to_labels(one[0].numpy(), (8, 10)), (one[0, 0] > 0.5).numpy()
    )


def test_one_channel_fixed_point_resize_differs_only_next_to_the_threshold():
    rng = np.random.default_rng(1)
    plane = rng.random((1, 16, 24), dtype=np.float32)
    size = (160, 383)
    exact = cv2.resize(plane[0], (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    for threshold in (0.5, 0.3, 0.999):
        got = probs_to_labels(plane, size, threshold=threshold)
        assert got.dtype == np.uint8 and got.shape == size
        differ = got != (exact > threshold)
        assert np.abs(exact[differ] - threshold).max(initial=0.0) < 3e-5
        assert differ.mean() < 1e-3
    assert probs_to_labels(plane, size, threshold=1.0).sum() == 0
    assert probs_to_labels(plane, size, threshold=-0.1).all()


def test_flip_pairs_from_helen_names_match_the_data_layer():
    assert sorted(flip_pairs_from_names(HELEN_CLASSES)) == sorted(HELEN_FLIP_PAIRS)
    assert flip_pairs_from_names(["bg", "left_eye", "right_eye", "nose"]) == [(1, 2)]
    assert flip_pairs_from_names(["background", "car"]) == []
    assert flip_pairs_from_names(["bg", "Left Lung", "Right Lung"]) == [(1, 2)]
    assert flip_pairs_from_names(["bg", "lung_left", "lung_right", "heart"]) == [(1, 2)]
    assert flip_pairs_from_names(["eye_r", "eye_l", "nose", "wheel"]) == [(1, 0)]
    assert flip_pairs_from_names(["bg", "towel", "tower", "pool", "poor"]) == []  # words


def test_flip_tta_averages_the_mirrored_prediction_with_classes_swapped_back():
    model = _helen_model().eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.inference_mode():
        plain = torch.softmax(model(x), 1)
        mirrored = torch.softmax(model(x.flip(3)), 1).flip(3)
        swap = [0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10]
        expected = (plain + mirrored[:, swap]) / 2
        got = predict_proba(model, x, tta="flip", flip_pairs=HELEN_FLIP_PAIRS)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(1), torch.ones(2, 32, 48))


def test_flip_tta_wrapper_returns_logits_of_the_averaged_probabilities():
    from segkit.models import FlipTTA

    x = torch.randn(2, 3, 32, 48)
    helen = _helen_model().eval()
    with torch.inference_mode():
        expected = predict_proba(helen, x, tta="flip", flip_pairs=HELEN_FLIP_PAIRS)
        got = torch.softmax(FlipTTA(helen, HELEN_FLIP_PAIRS)(x), 1)
    torch.testing.assert_close(got, expected)
    binary = _pointwise_model(1)
    with torch.inference_mode():
        expected = predict_proba(binary, x, tta="flip")
        got = torch.sigmoid(FlipTTA(binary)(x))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_predict_with_flip_tta_writes_full_size_maps(tmp_path):
    _write_images(tmp_path / "in", 2, (80, 96))
    result = predict(_helen_model(), [tmp_path / "in"], tmp_path / "out", size=32, tta="flip")
    assert result["count"] == 2
    assert read_mask(tmp_path / "out" / "img0.png").shape == (80, 96)


def test_tiling_equals_whole_image_prediction_when_one_tile_covers_it():
    model = _helen_model().eval()
    image = torch.randn(3, 40, 56)
    with torch.inference_mode():
        whole = predict_proba(model, image[None])[0]
        tiled = blend_image(lambda b: predict_proba(model, b), image, Windows(tile=64))
    torch.testing.assert_close(tiled, whole)


def test_overlapping_tiles_cover_every_pixel_once_averaged():
    model = _pointwise_model()
    image = torch.randn(3, 70, 100)
    with torch.inference_mode():
        whole = predict_proba(model, image[None])[0]
        windows = Windows(tile=32, overlap=0.5, batch_size=3)
        tiled = blend_image(lambda b: predict_proba(model, b), image, windows)
    torch.testing.assert_close(tiled, whole)


def test_predict_tiled_end_to_end_at_native_resolution(tmp_path, monkeypatch):
    _write_images(tmp_path / "in", 1, (80, 96))
    seen = []
    original = predictor.predict_proba
    monkeypatch.setattr(
        predictor, "predict_proba", lambda m, x, *a: seen.append(x.shape) or original(m, x, *a)
    )
    predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", tile=48, overlap=0.25)
    # stride 36: rows start at 0 and 32, columns at 0, 36 and 48
    assert all(s[-2:] == (48, 48) for s in seen) and sum(s[0] for s in seen) == 2 * 3
    assert read_mask(tmp_path / "out" / "img0.png").shape == (80, 96)


def _box_model() -> SegmentationModel:
    """Foreground where the 15x15 mean brightness exceeds half: edges depend on the padding."""
    spec = ModelSpec(arch="unet", encoder=None, classes=1, divisor=16, task="binary")
    spec.mean, spec.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    conv = torch.nn.Conv2d(3, 1, 15, padding=7, padding_mode="replicate")
    with torch.no_grad():
        conv.weight.fill_(100.0 / (3 * 15 * 15))
        conv.bias.fill_(-50.0)
    return SegmentationModel(conv, spec).eval()


def test_native_size_batches_mixed_sizes(tmp_path):
    a = _write_images(tmp_path / "a", 1, (40, 56))[0]
    b = _write_images(tmp_path / "b", 1, (24, 30), ext=".png", stem="other")[0]
    predict(_pointwise_model(), [a, b], tmp_path / "out", batch_size=2)
    assert read_mask(tmp_path / "out" / "img0.png").shape == (40, 56)
    assert read_mask(tmp_path / "out" / "other0.png").shape == (24, 30)


def test_an_image_predicts_the_same_whatever_shares_its_batch(tmp_path):
    white, black = tmp_path / "in" / "white.png", tmp_path / "in" / "black.png"
    white.parent.mkdir()
    cv2.imwrite(str(white), np.full((40, 40, 3), 255, np.uint8))
    cv2.imwrite(str(black), np.zeros((64, 64, 3), np.uint8))
    for batch_size in (1, 2):
        predict(_box_model(), [white, black], tmp_path / f"out{batch_size}", batch_size=batch_size)
    alone, batched = (read_mask(tmp_path / f"out{b}" / "white.png") for b in (1, 2))
    assert alone.all()  # reflect padding: white all the way to the edges
    np.testing.assert_array_equal(batched, alone)  # not padded with the black image's zeros


def test_smp_unet_binary_prediction(tmp_path):
    torch.manual_seed(0)
    model = build_model(arch="smp.Unet", encoder="resnet18", encoder_weights=None, classes=1)
    _write_images(tmp_path / "in", 2, (80, 96))
    result = predict(
        model, [tmp_path / "in"], tmp_path / "out", size=64, rle_csv=tmp_path / "s.csv"
    )
    assert result["count"] == 2 and len(read_rle_csv(tmp_path / "s.csv")) == 2


def test_dataset_reads_one_image_per_item_and_holds_only_paths(tmp_path):
    paths = _write_images(tmp_path / "in", 3, (80, 96))
    ds = ImageFiles(paths, 48)  # 48 < 80 / 2: a full decode, comparable with cv2.imread
    assert vars(ds) == {
        "paths": paths,
        "size": 48,
        "max_pixels": MAX_IMAGE_PIXELS,
        "mode": "squash",
    }  # no pixels
    item = ds[1]
    assert item["image"].dtype == torch.uint8 and item["size"] == (80, 96)
    raw = cv2.resize(cv2.imread(str(paths[1]))[..., ::-1], (48, 48), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(item["image"].numpy(), raw)


def test_normalize_matches_the_formula():
    images = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    got = normalize(images, mean, std)
    expected = (
        images.permute(0, 3, 1, 2).double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()
    )
    expected = expected / torch.tensor(std).view(1, 3, 1, 1).double()
    assert got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


def test_in_flight_images_are_bounded(tmp_path, monkeypatch):
    _write_images(tmp_path / "in", 10, (32, 32))
    most = []
    drain = inference.Outputs.drain
    monkeypatch.setattr(
        inference.Outputs,
        "drain",
        lambda self, keep=0: most.append(len(self.pending)) or drain(self, keep),
    )
    predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", size=32, batch_size=2, writers=1)
    assert max(most) <= 2 * 2 + 1 + 2


def test_reduced_decode_matches_full_decode(tmp_path):
    path = _write_images(tmp_path, 1, (300, 400))[0]
    image, size = read_for_model(path, 64)
    assert image.shape == (64, 64, 3) and size == (300, 400)
    full = cv2.resize(cv2.imread(str(path))[..., ::-1], (64, 64), interpolation=cv2.INTER_AREA)
    assert np.abs(image.astype(int) - full).mean() < 2.0


def test_model_mode_is_restored(tmp_path):
    _write_images(tmp_path / "in", 1)
    model = _binary_model().train()
    predict(model, [tmp_path / "in"], tmp_path / "out", size=32)
    assert model.training


# ---- errors ---------------------------------------------------------------------------------


def test_missing_checkpoint(tmp_path):
    _write_images(tmp_path / "in", 1)
    with pytest.raises(CheckpointError, match="nope.pt"):
        predict(tmp_path / "nope.pt", [tmp_path / "in"], tmp_path / "out")


def test_corrupt_checkpoint(tmp_path):
    _write_images(tmp_path / "in", 1)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="bad.pt"):
        predict(bad, [tmp_path / "in"], tmp_path / "out")


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predict(_binary_model(), [tmp_path / "missing.jpg"], tmp_path / "out")


def test_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="No images found in folder .*empty"):
        find_images([tmp_path / "empty"])


def test_a_helen_release_folder_predicts_its_images_only_and_scores(tmp_path, capsys):
    """Issue 18, bug 3: not the _label.png and _viz.jpg files beside the photos."""
    from segkit.cli import main
    from segkit.data import synth_helen

    synth_helen(tmp_path / "helen", n=3, size=32, layout="official", split="test")
    folder = tmp_path / "helen" / "test"
    with pytest.warns(UserWarning, match=r"3 \*_image image\(s\), not the 6 _label/_viz file"):
        paths = find_images([folder])
    assert sorted(p.name for p in paths) == [f"synth000{i}_1_image.jpg" for i in (1, 2, 3)]
    ckpt = _checkpoint(tmp_path / "m.pt", _helen_model())
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(folder), "--out", str(tmp_path / "p")]) == 0
    )
    assert len(list((tmp_path / "p").iterdir())) == 3
    assert main(["score", str(folder), str(tmp_path / "p")]) == 0
    # Helen and CamVid both have 11 classes: the labels alone cannot say which, so both are named
    assert "data sets with 11 classes: camvid, helen" in capsys.readouterr().out
    assert main(["score", str(folder), str(tmp_path / "p"), "--classes", "helen"]) == 0
    assert "f1_overall" in capsys.readouterr().out


def test_a_split_folder_without_images_points_at_images_and_labels(tmp_path):
    from segkit.data import synth_helen
    from segkit.metrics import score_folders

    synth_helen(tmp_path / "helen", n=2, size=32, split="test")
    test = tmp_path / "helen" / "test"
    with pytest.raises(DataError, match="It holds images/: pass .*images"):
        find_images([test])
    with pytest.raises(DataError, match="It holds labels/: pass .*labels"):
        score_folders(test, test / "labels", list(HELEN_CLASSES))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_fails_naming_the_file(tmp_path, workers):
    _write_images(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"\xff\xd8 this is no jpeg")
    # start OpenCV's thread pool here first: forked loader workers must not hang on it
    cv2.resize(np.zeros((600, 600), np.float32), (1200, 1200))
    with pytest.raises(DataError, match="broken.jpg") as failure:
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", size=32, num_workers=workers)
    # the error (and its traceback, as a notebook keeps it) holds no reader still running
    assert failure.value is not None and not multiprocessing.active_children()


def test_truncated_jpeg_is_skipped_with_skip_bad(tmp_path, caplog):
    good = _write_images(tmp_path / "in", 2)
    data = good[0].read_bytes()
    (tmp_path / "in" / "cut.jpg").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="segkit.inference"):
        result = predict(
            _binary_model(),
            [tmp_path / "in"],
            tmp_path / "out",
            size=32,
            skip_bad=True,
            rle_csv=tmp_path / "s.csv",
        )
    assert result["count"] == 2 and result["skipped"] == [str(tmp_path / "in" / "cut.jpg")]
    assert "cut.jpg" in caplog.text
    assert not (tmp_path / "out" / "cut.png").exists()
    assert sorted(read_rle_csv(tmp_path / "s.csv")) == ["img0.jpg", "img1.jpg"]


def test_rle_on_a_multiclass_model_is_refused_before_writing(tmp_path):
    _write_images(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="11 classes"):
        predict(_helen_model(), [tmp_path / "in"], tmp_path / "out", rle_csv=tmp_path / "s.csv")
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.csv").exists()


def test_outputs_never_overwrite_inputs(tmp_path):
    paths = _write_images(tmp_path / "in", 1, ext=".png")
    before = paths[0].read_bytes()
    with pytest.raises(DataError, match="overwrite"):
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "in", size=32)
    assert paths[0].read_bytes() == before


def test_duplicate_stems_are_refused(tmp_path):
    a = _write_images(tmp_path / "a", 1)[0]
    b = _write_images(tmp_path / "b", 1, ext=".png")[0]
    with pytest.raises(DataError, match="share the name"):
        predict(_binary_model(), [a, b], tmp_path / "out", size=32)


def test_bad_arguments(tmp_path):
    _write_images(tmp_path / "in", 1)
    with pytest.raises(ValueError, match="tta"):
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", tta="rotate")
    with pytest.raises(ValueError, match="resize_back"):
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", resize_back="cubic")
    with pytest.raises(ValueError, match="divisor"):
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", tile=8)
    with pytest.raises(TypeError, match="spec"):
        predict(torch.nn.Conv2d(3, 1, 1), [tmp_path / "in"], tmp_path / "out")
    with pytest.raises(ValueError, match="No inputs"):
        predict(_binary_model(), [], tmp_path / "out")
    with pytest.raises(ValueError, match="size=0: must be a positive whole number"):
        predict(_binary_model(), [tmp_path / "in"], tmp_path / "out", size=0)


def test_a_file_named_twice_is_predicted_once(tmp_path):
    first = _write_images(tmp_path / "in", 2)[0]
    result = predict(_binary_model(), [tmp_path / "in", first], tmp_path / "out", size=32)
    assert result["count"] == 2 and len(result["outputs"]) == 2


#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
CARVANA = (
    Path(
        os.environ.get("SEGKIT_TEST_DATA")
        or Path(__file__).resolve().parents[2] / "shared" / "data"
    ).resolve()
    / "carvana_real5"
)


@pytest.mark.realdata
@pytest.mark.skipif(not CARVANA.is_dir(), reason=f"real Carvana sample not found at {CARVANA}")
def test_real_carvana_jpegs_predict_at_full_resolution(tmp_path):
    images = sorted((CARVANA / "train").glob("*.jpg"))[:2]
    before = [p.stat().st_mtime_ns for p in images]
    csv_path = tmp_path / "submission.csv"
    result = predict(_pointwise_model(1), images, tmp_path / "out", size=128, rle_csv=csv_path)
    assert result["count"] == 2
    rles = read_rle_csv(csv_path)
    for p in images:
        mask = read_mask(tmp_path / "out" / f"{p.stem}.png")
        assert mask.shape == (1280, 1918)
        np.testing.assert_array_equal(rle_decode(rles[p.name], mask.shape), mask)
    assert [p.stat().st_mtime_ns for p in images] == before  # inputs untouched


def test_prefetch_yields_everything_in_order():
    from segkit.inference import prefetch

    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))
    assert list(prefetch([])) == []


def test_prefetch_raises_the_readers_error_at_its_item():
    from segkit.inference import prefetch

    def items():
        yield 1
        yield 2
        raise DataError("bad.jpg is truncated")

    got = []
    with pytest.raises(DataError, match="bad.jpg"):
        for item in prefetch(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
    import threading

    from segkit.inference import prefetch

    read = []

    def items():
        for i in range(1000):
            read.append(i)
            yield i

    stream = prefetch(items(), depth=1)
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "segkit-prefetch" for t in threading.enumerate())
    assert len(read) <= 3  # read ahead by depth, not to the end


def test_close_batches_stops_the_prefetch_thread_after_an_error():
    from segkit.inference import close_batches, prefetch

    def readers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "segkit-prefetch"]

    batches = prefetch(iter(range(100)))
    with pytest.raises(RuntimeError):
        for _ in batches:
            raise RuntimeError("the model failed")
    assert readers()  # the suspended generator still holds its reader thread
    close_batches(batches)
    assert not readers()
    close_batches(iter([]))  # anything without close() / workers is left alone


def test_outputs_keep_the_input_order_when_a_batch_mixes_shapes(tmp_path):
    paths = []
    for i, shape in enumerate([(64, 64), (40, 56), (64, 64), (40, 56)]):
        paths += _write_images(tmp_path / "in", 1, shape, stem=f"s{i}_")
    out = tmp_path / "out"
    result = predict(_pointwise_model(1), paths, out, batch_size=4, rle_csv=out / "r.csv")
    assert result["outputs"] == [str(out / f"{p.stem}.png") for p in paths]
    assert list(read_rle_csv(out / "r.csv")) == [p.name for p in paths]


@pytest.mark.parametrize(
    ("names", "tinted"),
    [(("road", "car", "sky"), True), (("background", "car", "sky"), False)],
    ids=["class-0-real", "class-0-background"],
)
def test_overlay_tints_class_0_only_when_the_metadata_says_it_is_a_real_class(
    tmp_path, names, tinted
):
    """Cityscapes' road, CamVid's sky: class 0 is a real class and is tinted like the others."""
    model = _pointwise_model(3)
    with torch.no_grad():  # class 0 everywhere
        model.net.weight.zero_()
        model.net.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    model.spec.class_names = list(names)
    palette = [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
    model.spec.meta = {"classes": list(names), "palette": palette}
    image = _write_images(tmp_path / "in", 1, (40, 48), ext=".png")[0]
    predict(model, [image], tmp_path / "out", size=32, overlay=True, color=True)
    assert (read_mask(tmp_path / "out" / "img0.png") == 0).all()
    (written,) = (tmp_path / "out").glob("img0_overlay.*")
    overlay = cv2.imread(str(written)).astype(np.float32)
    diff = np.abs(overlay - cv2.imread(str(image)).astype(np.float32)).mean()
    assert (diff > 20) if tinted else (diff < 3), diff
