"""The window engine (segkit.models.windows): windows, blending weights, bands, Windows."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.errors import ConfigError
from segkit.models import ModelSpec, SegmentationModel, build_model, crop, pad_to_divisor
from segkit.models.windows import (
    ScaledWindows,
    Windows,
    blend_bands,
    blend_image,
    blend_weights,
    window_boxes,
)


def _unet(classes: int = 3) -> SegmentationModel:
    torch.manual_seed(0)
    return build_model(arch="unet", base_channels=4, classes=classes).eval()


def _pointwise(classes: int = 2) -> SegmentationModel:
    torch.manual_seed(0)
    spec = ModelSpec(arch="unet", encoder=None, classes=classes, divisor=16, task="multiclass")
    return SegmentationModel(torch.nn.Conv2d(3, classes, 1), spec).eval()


def _windowed_logits(model, x, windows):
    """Blended logits of each image of ``x``, each window padded to the divisor and cropped."""

    def run(batch):
        padded, size = pad_to_divisor(batch, model.spec.divisor)
        return crop(model(padded), size)

    return torch.stack([blend_image(run, image, windows) for image in x])


def _reference_blend(model, x, tile, overlap, blend):
    """Whole-image accumulators, every window at once: the plain definition of blending."""
    height, width = x.shape[-2:]
    out = torch.zeros(model.spec.classes, height, width)
    total = torch.zeros(height, width)
    for y, x0, h, w in window_boxes(height, width, tile, overlap):
        weights = blend_weights(h, w, blend)
        out[:, y : y + h, x0 : x0 + w] += model(x[None, :, y : y + h, x0 : x0 + w])[0] * weights
        total[y : y + h, x0 : x0 + w] += weights
    return out / total


def test_windows_cover_the_image_and_end_at_its_edges():
    boxes = window_boxes(70, 100, 32, 0.25)
    covered = torch.zeros(70, 100, dtype=torch.int64)
    for y, x, h, w in boxes:
        assert (h, w) == (32, 32) and y + h <= 70 and x + w <= 100
        covered[y : y + h, x : x + w] += 1
    assert covered.min() >= 1
    assert max(y + h for y, _, h, _ in boxes) == 70 and max(x + w for _, x, _, w in boxes) == 100
    assert window_boxes(20, 30, 64) == [(0, 0, 20, 30)]  # smaller than a window: one, clipped


def test_gaussian_weights_peak_at_the_centre_and_never_vanish():
    w = blend_weights(33, 21)
    assert w.shape == (33, 21) and float(w[16, 10]) == pytest.approx(1.0)
    assert float(w.min()) >= 1e-3 and float(w[0, 0]) < 0.01
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    # sigma = 0.125 x side (81 px: 10.125); 10 px from the centre: exp(-10² / (2 x 10.125²))
    v = blend_weights(1, 81)[0]
    assert float(v[40 + 10]) == pytest.approx(math.exp(-100 / (2 * 10.125**2)), rel=1e-5)
    assert torch.equal(blend_weights(5, 7, "uniform"), torch.ones(5, 7))


def test_one_window_gives_exactly_the_bare_model():
    model = _unet()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(ScaledWindows(model, Windows(tile=64))(x), model(x))
        # sides not multiples of the divisor: padded and cropped like one padded call
        odd = torch.randn(1, 3, 40, 50)
        padded = torch.nn.functional.pad(odd, (0, 14, 0, 8), mode="reflect")
        expected = model(padded)[..., :40, :50]
        assert torch.equal(ScaledWindows(model, Windows(tile=64))(odd), expected)
        assert torch.equal(_windowed_logits(model, odd, Windows(tile=64)), expected)


@pytest.mark.parametrize("blend", ["gaussian", "uniform"])
def test_blending_is_the_weighted_mean_of_the_windows(blend):
    model = _unet()
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        windows = Windows(tile=32, overlap=0.5, batch_size=3, blend=blend)
        got = _windowed_logits(model, x, windows)[0]
        expected = _reference_blend(model, x[0], 32, 0.5, blend)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_and_uniform_blends_differ_where_windows_disagree():
    model = _unet()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a = _windowed_logits(model, x, Windows(32, 0.5, blend="gaussian"))
        b = _windowed_logits(model, x, Windows(32, 0.5, blend="uniform"))
    assert (a - b).abs().max() > 1e-3


def test_a_pixelwise_model_is_unchanged_by_windows():
    model = _pointwise()
    x = torch.randn(2, 3, 80, 112)
    with torch.no_grad():
        windowed = _windowed_logits(model, x, Windows(40, 0.25, batch_size=5))
        torch.testing.assert_close(windowed, model(x))


def test_bands_and_strips_cover_each_pixel_once_and_change_nothing():
    model = _unet()
    x = torch.randn(3, 90, 150)
    run = model  # divisor 16: windows of 32 need no padding

    def read(box):
        y, x0, h, w = box
        return x[:, y : y + h, x0 : x0 + w]

    windows = Windows(32, 0.25, batch_size=4)
    with torch.no_grad():
        whole = blend_image(run, x, windows)
        bands = list(blend_bands(run, read, (90, 150), windows, strip_width=64))
    seen = torch.zeros(90, 150, dtype=torch.int64)
    assert len({b.x for b in bands}) > 1  # really walked in strips
    for band in bands:
        h, w = band.out.shape[-2:]
        seen[band.y : band.y + h, band.x : band.x + w] += 1
        assert torch.equal(band.out, whole[:, band.y : band.y + h, band.x : band.x + w])
    assert torch.equal(seen, torch.ones_like(seen))


def test_windows_are_batched_batch_size_at_a_time():
    calls = []

    def fn(batch):
        calls.append(batch.shape[0])
        return batch[:, :1]

    image = torch.zeros(1, 100, 100)
    windows = Windows(32, 0.25, batch_size=5)
    list(
        blend_bands(fn, lambda b: image[:, b[0] : b[0] + 32, b[1] : b[1] + 32], (100, 100), windows)
    )
    assert max(calls) <= 5 and sum(calls) == len(window_boxes(100, 100, 32, 0.25))
    assert calls.count(5) >= len(calls) - 4  # full batches but for each band's last


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"blend": "cosine"}, "blend='cosine'"),
        ({"overlap": 1.0}, "overlap=1.0"),
        ({"tile": 0}, "tile=0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"scale": 0}, "scale=0"),
    ],
)
def test_bad_window_settings_are_one_clear_error(kwargs, words):
    settings = {"tile": 32, **kwargs}
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
        Windows(**settings)


def test_windows_span_tile_over_scale_image_pixels():
    assert Windows(64).span == 64 and Windows(32, scale=0.5).span == 64
    assert Windows(30, scale=0.7).span == 43 and Windows(1, scale=4.0).span == 1


def test_windowed_probabilities_are_blended_as_asked():
    from segkit.inference import predict_proba

    model = _unet()
    image = torch.randn(3, 70, 100)
    with torch.no_grad():
        for blend in ("gaussian", "uniform"):
            windows = Windows(32, 0.5, blend=blend, batch_size=3)
            got = blend_image(lambda b: predict_proba(model, b), image, windows)
            expected = _reference_blend(_Probs(model), image, 32, 0.5, blend)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


class _Probs(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.spec = model, model.spec

    def forward(self, x):
        from segkit.inference import predict_proba

        return predict_proba(self.model, x)
