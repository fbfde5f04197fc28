"""Sliding windows end to end: evaluate --tile against evaluate, TTA in windows, bounded memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segkit.api import evaluate, train
from segkit.cli import main
from segkit.config import load_config
from segkit.data import synth_carvana, synth_helen
from segkit.engine import Evaluator
from segkit.errors import ConfigError
from segkit.inference import PredictOptions, Predictor, predict_proba
from segkit.inference.scoring import Scorer
from segkit.models import ModelSpec, SegmentationModel
from segkit.models.windows import Windows, blend_image, window_stride

#: what scoring counts exactly (confusion-matrix metrics); soft Dice sums floats in another order
EXACT = ("accuracy", "miou", "f1_overall", "f1_eyes", "iou_foreground", "f1_foreground")


def _run(tmp, dataset: str, extra: list[str]) -> str:
    cfg = load_config(
        None,
        [
            f"data.dataset={dataset}",
            f"data.root={tmp / 'data'}",
            "data.image_size=64",
            "data.batch_size=1",  # untiled soft Dice then sums each image alone, as tiles do
            "data.num_workers=0",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            "train.epochs=1",
            "train.progress=false",
            "train.preview=0",
            f"train.out_dir={tmp / 'run'}",
            *extra,
        ],
    )
    train(cfg)
    return str(tmp / "run" / "last.pt")


@pytest.fixture(scope="module")
def helen_ckpt(tmp_path_factory):
    """A tiny U-Net trained one epoch on 64 px synthetic faces (flip pairs: brows, eyes)."""
    tmp = tmp_path_factory.mktemp("helen")
    synth_helen(tmp / "data", n=4, seed=0, size=64)
    synth_helen(tmp / "data", n=2, seed=1, size=64, split="test")
    return _run(tmp, "helen", ["data.val_fraction=0.25", "loss.name=ce"])


@pytest.fixture(scope="module")
def carvana_ckpt(tmp_path_factory):
    """A tiny binary U-Net trained one epoch on 64 x 64 synthetic cars."""
    tmp = tmp_path_factory.mktemp("carvana")
    synth_carvana(tmp / "data", cars=2, views=2, size=(64, 64))
    return _run(tmp, "carvana", ["data.val_fraction=0.5", "data.test_split=val"])


@pytest.mark.parametrize("tta", [None, "flip", "flip+scales=0.5,1"])
def test_tiled_evaluate_equals_evaluate_when_one_window_covers_each_image(helen_ckpt, tta):
    whole = evaluate(helen_ckpt, split="test", num_workers=0, tta=tta)
    tiled = evaluate(helen_ckpt, split="test", num_workers=0, tta=tta, tile=64, overlap=0.5)
    assert set(tiled) == set(whole)
    # with TTA, untiled evaluate takes the arg-max of log-probabilities, which can break a
    # near-tie (a flip pair averaged to equal probabilities) otherwise than the arg-max of the
    # probabilities that windows (and predict) take: a pixel in 8192 here
    tol = 1e-9 if tta is None else 2e-3
    for key in whole:
        assert tiled[key] == pytest.approx(whole[key], abs=tol, nan_ok=True), key


def test_tiled_evaluate_of_a_binary_model_equals_evaluate(carvana_ckpt):
    whole = evaluate(carvana_ckpt, num_workers=0)
    tiled = evaluate(carvana_ckpt, num_workers=0, tile=64)
    assert set(tiled) == set(whole) and "soft_dice" in whole
    for key in whole:
        tol = 1e-9 if key in EXACT else 1e-6
        assert tiled[key] == pytest.approx(whole[key], abs=tol, nan_ok=True), key


def test_tiled_evaluate_in_many_windows_scores_close_to_one_window(helen_ckpt):
    one = evaluate(helen_ckpt, split="test", num_workers=0, tile=64)
    many = evaluate(helen_ckpt, split="test", num_workers=0, tile=32, overlap=0.5, batch_size=3)
    assert many != one  # really scored in windows: 32 px windows see less context
    assert abs(many["accuracy"] - one["accuracy"]) < 0.25


def test_the_command_scores_in_windows(helen_ckpt, tmp_path, capsys):
    args = ["evaluate", "--checkpoint", helen_ckpt, "--split", "test", "--tile", "32"]
    assert main([*args, "--overlap", "0.5", "--blend", "uniform", "--tta", "flip"]) == 0
    assert "miou" in capsys.readouterr().out
    assert main([*args, "--blend", "cosine"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--blend 'cosine'" in err


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"tile": 8}, "Tile size 8 is smaller than the model's divisor 16"),
        ({"tile": 0}, "tile=0: must be a positive whole number"),
        ({"tile": 32, "overlap": 1.5}, "overlap=1.5: the fraction"),
        ({"tile": 32, "blend": "mean"}, "Unknown blend='mean'"),
    ],
)
def test_bad_window_settings_of_evaluate(helen_ckpt, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        evaluate(helen_ckpt, split="test", num_workers=0, **kwargs)


def _pointwise(classes: int = 2) -> SegmentationModel:
    torch.manual_seed(0)
    task = "binary" if classes == 1 else "multiclass"
    spec = ModelSpec(arch="unet", encoder=None, classes=classes, divisor=16, task=task)
    spec.mean, spec.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    return SegmentationModel(torch.nn.Conv2d(3, classes, 1), spec).eval()


def test_flip_tta_in_windows_swaps_paired_classes_back():
    """A model that labels the left half 1 and the right half 2: mirrored, 1 and 2 trade
    places; flip TTA with the pair (1, 2) swaps them back, so nothing changes."""

    class Halves(torch.nn.Module):
        def forward(self, x):
            n, _, h, w = x.shape
            logits = torch.zeros(n, 3, h, w)
            logits[:, 1, :, : w // 2] = logits[:, 2, :, w // 2 :] = 5.0
            return logits

    spec = ModelSpec(arch="unet", encoder=None, classes=3, divisor=1, task="multiclass")
    model = SegmentationModel(Halves(), spec)
    image = torch.zeros(3, 40, 40)
    windows = Windows(40)
    with torch.inference_mode():
        plain = blend_image(lambda b: predict_proba(model, b), image, windows)
        kept = blend_image(lambda b: predict_proba(model, b, "flip", [(1, 2)]), image, windows)
        lost = blend_image(lambda b: predict_proba(model, b, "flip"), image, windows)
    torch.testing.assert_close(kept, plain)
    assert (lost - plain).abs().max() > 0.3  # without the pair, left and right blur together


class LargestFloat(TorchDispatchMode):
    """Records the bytes of the largest floating-point tensor any torch op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def _band_bytes(classes: int, tile: int, overlap: float, batch_size: int, width: int) -> int:
    """The largest float block one band may hold (strips of at most max(4096, 8 tile) px)."""
    stride = window_stride(tile, overlap)
    strip = min(width, max(4096, 8 * tile))
    rows = math.ceil(batch_size / max(1, (strip - tile) // stride + 1)) + 1
    return 4 * classes * ((rows - 1) * stride + tile) * strip


def _large_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2048, 6144, 3), dtype=np.uint8)


def test_the_largest_float_tensor_does_not_grow_with_the_image(tmp_path):
    """A small window on a large image: no float tensor beyond one band of windows (a whole
    image's probabilities, 2 x 2048 x 6144 floats, would be 100 MB)."""
    model = _pointwise(2)
    image = _large_image()
    opts = PredictOptions(tile=128, overlap=0.25, batch_size=8)
    predictor = Predictor(model, opts, device="cpu")
    with LargestFloat() as seen:
        labels = predictor.labels(image)
    bound = _band_bytes(2, 128, 0.25, 8, 6144)
    assert labels.shape == (2048, 6144) and labels.dtype == np.uint8
    assert seen.largest <= bound < 2 * 2048 * 6144 * 4 / 10
    # the same pixels scored against a mask: bounded by the same band
    mask = torch.from_numpy((image[..., 0] > 127).astype(np.int64))
    batch = [{"image": torch.from_numpy(image)[None], "mask": mask[None]}]
    with LargestFloat() as scored:
        result = Scorer(predictor, Evaluator(["a", "b"])).score(batch)
    assert scored.largest <= bound and 0 <= result["miou"] <= 1
    # and the tracker can see a whole image's floats: what blend_image returns is one
    small = torch.zeros(3, 512, 768)
    with LargestFloat() as whole, torch.inference_mode():
        blend_image(lambda b: predict_proba(model, b), small, Windows(128))
    assert whole.largest >= 2 * 512 * 768 * 4


@pytest.mark.parametrize("kind", ["crops at scale 0.5", "multi-label"])
def test_scaled_and_multilabel_models_are_bounded_by_the_band_too(kind):
    """A model trained on 64 px crops at scale 0.5 (its windows cover 128 image pixels), and
    a multi-label model, on the same large image: predicted and scored band by band."""
    model = _pointwise(2)
    opts = PredictOptions(batch_size=8)
    if kind == "multi-label":
        model.spec.task, opts = "multilabel", PredictOptions(tile=128, batch_size=8)
    else:
        model.spec.options["crop"] = {"size": 64, "scale": 0.5, "overlap": 0.25}
    image = _large_image()
    predictor = Predictor(model, opts, device="cpu")
    with LargestFloat() as seen:
        labels = predictor.labels(image)
    bound = _band_bytes(2, 128, 0.25, 8, 6144)
    assert seen.largest <= bound
    shape = (2, 2048, 6144) if kind == "multi-label" else (2048, 6144)
    assert labels.shape == shape and labels.dtype == np.uint8
    mask = torch.from_numpy(labels.astype(np.int64))
    if kind == "multi-label":
        evaluator, windows = Evaluator(["a", "b"], multilabel=True), Windows(128)
    else:
        evaluator, windows = Evaluator(["a", "b"]), Windows(64, scale=0.5)
    assert predictor.recipe.windows == windows  # the crop size at its scale, as recorded
    batch = [{"image": torch.from_numpy(image)[None], "mask": mask[None]}]
    with LargestFloat() as scored:
        result = Scorer(predictor, evaluator).score(batch)
    assert scored.largest <= bound
    assert result["mean_f1" if kind == "multi-label" else "accuracy"] == pytest.approx(1.0)


def _at_scale(ckpt: str, tmp_path, scale: float = 0.5) -> str:
    """``ckpt`` as if trained on 32 px crops at ``scale``."""
    from segkit.engine import load_checkpoint

    state = load_checkpoint(ckpt)
    state["model_spec"]["options"]["crop"] = {"size": 32, "scale": scale, "overlap": 0.25}
    torch.save(state, tmp_path / "crops.pt")
    return str(tmp_path / "crops.pt")


def test_a_model_trained_on_crops_at_another_scale_is_scored_in_windows_at_it(
    helen_ckpt, tmp_path, monkeypatch
):
    import segkit.inference.probs as probs

    seen: list[tuple[int, ...]] = []

    def spy(model, x):
        seen.append(tuple(x.shape))
        return forward(model, x)

    forward = probs.forward_probs
    monkeypatch.setattr(probs, "forward_probs", spy)
    ckpt = _at_scale(helen_ckpt, tmp_path)
    recorded = evaluate(ckpt, split="test", num_workers=0)  # the recorded windows
    # the 64 px faces (2 of them) resized by 0.5: one 32 px window each, one face per call
    assert seen == [(1, 3, 32, 32)] * 2
    same = evaluate(ckpt, split="test", num_workers=0, tile=32, overlap=0.25)
    assert same == pytest.approx(recorded, abs=0, nan_ok=True)
    # --tile is the window as the model sees it: 16 model px at scale 0.5 cover 32 of the
    # 64 px faces, so 3 x 3 windows of 32 image px, each resized to 16 for the model
    seen.clear()
    evaluate(ckpt, split="test", num_workers=0, tile=16, batch_size=9)
    assert seen == [(9, 3, 16, 16)] * 2


def test_predicting_a_scaled_model_in_bands_gives_what_validation_computes(helen_ckpt, tmp_path):
    """The Predictor's band-by-band labels equal those of :class:`ScaledWindows` (what
    validation runs during training) on the whole image."""
    from segkit.engine import model_from_checkpoint
    from segkit.inference.inputs import normalize
    from segkit.models.windows import ScaledWindows

    model = model_from_checkpoint(_at_scale(helen_ckpt, tmp_path), device="cpu").eval()
    image = np.random.default_rng(1).integers(0, 256, (150, 210, 3), dtype=np.uint8)
    predictor = Predictor(model, PredictOptions(batch_size=3), device="cpu")
    assert predictor.recipe.windows == Windows(32, batch_size=3, scale=0.5)
    labels = predictor.labels(image)
    x = normalize(torch.from_numpy(image)[None], model.spec.mean, model.spec.std)
    with torch.inference_mode():
        logits = ScaledWindows(model, Windows(32, 0.25, batch_size=5, scale=0.5))(x)
    assert logits.shape[-2:] == (150, 210)
    assert (labels == logits[0].argmax(0).numpy()).mean() > 0.9999


def test_predict_command_takes_overlap_and_blend(helen_ckpt, tmp_path):
    import cv2

    from segkit.data import read_mask

    cv2.imwrite(str(tmp_path / "a.png"), np.full((50, 70, 3), 120, np.uint8))
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", helen_ckpt, str(tmp_path / "a.png"), "--out", str(out)]
    assert main([*args, "--tile", "32", "--overlap", "0.5", "--blend", "uniform"]) == 0
    assert read_mask(out / "a.png").shape == (50, 70)


def _masks_from_predict(ckpt: str, tmp_path, split: str, **options) -> Path:
    """A copy of ``ckpt``'s data whose ``split`` masks are what ``predict`` writes for its
    images with ``options``: evaluating it scores evaluate's labels against predict's."""
    import shutil

    from segkit.engine import load_checkpoint
    from segkit.inference import predict

    source = Path(load_checkpoint(ckpt)["config"]["data"]["root"])
    root = tmp_path / "as_predicted"
    shutil.copytree(source, root)
    if split == "test":  # Helen's split layout: images/image_N.jpg, labels/label_N.png
        images, masks = root / split / "images", root / split / "labels"
        name = lambda stem: stem.replace("image", "label") + ".png"  # noqa: E731
    else:  # Carvana's Kaggle layout: train/<id>.jpg, train_masks/<id>_mask.gif
        images, masks = root / "train", root / "train_masks"
        name = lambda stem: f"{stem}_mask.png"  # noqa: E731
    shutil.rmtree(masks)
    predict(ckpt, images, tmp_path / "predicted", device="cpu", **options)
    masks.mkdir()
    for label in (tmp_path / "predicted").glob("*.png"):
        shutil.copy(label, masks / name(label.stem))
    return root


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("helen", {}),  # untiled: at the training size (the 64 px faces' own)
        ("helen", {"tile": 32, "overlap": 0.5, "batch_size": 3}),
        ("helen", {"tile": 64, "tta": "flip"}),
        ("crop-scale", {}),  # in the recorded windows, at scale 0.5
        ("crop-scale", {"tile": 16}),
        ("carvana", {}),  # binary, untiled
        ("carvana", {"tile": 32, "blend": "uniform"}),
    ],
)
def test_evaluate_scores_the_labels_predict_writes(
    kind, options, helen_ckpt, carvana_ckpt, tmp_path
):
    """For the same options, evaluate's labels are predict's: scored against masks that are
    predict's own labels, every pixel agrees (accuracy exactly 1)."""
    ckpt = {"helen": helen_ckpt, "carvana": carvana_ckpt}.get(kind)
    if kind == "crop-scale":
        ckpt = _at_scale(helen_ckpt, tmp_path)
    split = "val" if kind == "carvana" else "test"
    root = _masks_from_predict(ckpt, tmp_path, split, **options)
    scores = evaluate(ckpt, root, split, num_workers=0, device="cpu", **options)
    assert scores["accuracy"] == 1.0


@pytest.mark.parametrize("options", [{}, {"tile": 32, "overlap": 0.5}, {"tta": "flip"}])
def test_per_image_counts_sum_to_the_data_set_matrix(helen_ckpt, monkeypatch, options):
    """The scorer keeps each image's confusion counts; summed, they are what the figures
    come from."""
    from segkit.inference import scoring

    scorers = []
    score = scoring.Scorer.score
    monkeypatch.setattr(
        scoring.Scorer, "score", lambda s, loader: scorers.append(s) or score(s, loader)
    )
    evaluate(helen_ckpt, split="test", num_workers=0, **options)
    (scorer,) = scorers
    ids = [image_id for image_id, _ in scorer.per_image]
    assert len(set(ids)) == 2 and all(i.startswith("image_") for i in ids)  # the data set's ids
    total = sum(counts for _, counts in scorer.per_image)
    assert torch.equal(total, scorer.evaluator.cm.matrix)
    assert all(int(counts.sum()) == 64 * 64 for _, counts in scorer.per_image)


def test_evaluate_takes_predict_options_as_one_value(helen_ckpt):
    window = {"tile": 32, "overlap": 0.5, "batch_size": 3}
    by_name = evaluate(helen_ckpt, split="test", num_workers=0, **window)
    as_value = evaluate(helen_ckpt, split="test", num_workers=0, options=PredictOptions(**window))
    assert as_value == pytest.approx(by_name, abs=0, nan_ok=True)
    with pytest.raises(ConfigError, match="Did you mean 'tile'"):
        evaluate(helen_ckpt, split="test", tiles=32)
