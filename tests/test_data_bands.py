"""Any channel count and bit depth: greyscale, RGBA, 16-bit PNG/TIFF and multi-band TIFF
images (segkit.data.bands), the ``raster`` data set, ``model.in_channels``, per-channel
statistics (``segkit stats``) and one epoch of train -> evaluate -> predict -> export on them."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segkit.cli import main
from segkit.config import AugmentConfig
from segkit.data import build_dataset, build_transforms, read_image
from segkit.data.bands import BandReader, ChannelStats, pixel_scale, read_bands
from segkit.data.formats.synth import SIZE, synth_raster
from segkit.data.io import resize_scaled, resize_square
from segkit.errors import ConfigError, DataError
from segkit.inference import Predictor, normalize

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
RNG = np.random.default_rng(0)


# --- reading ---------------------------------------------------------------------------------


def test_tiff_bands_come_back_band_last_whatever_the_planar_layout(tmp_path):
    bands = RNG.normal(-10, 3, (5, 12, 20)).astype(np.float32)
    tifffile.imwrite(
        tmp_path / "planar.tif", bands, photometric="minisblack", planarconfig="separate"
    )
    tifffile.imwrite(tmp_path / "contig.tif", bands.transpose(1, 2, 0), photometric="minisblack",
                     planarconfig="contig")  # fmt: skip
    tifffile.imwrite(tmp_path / "one.tif", bands[0])
    for name in ("planar.tif", "contig.tif"):
        np.testing.assert_array_equal(read_bands(tmp_path / name), bands.transpose(1, 2, 0))
    assert read_bands(tmp_path / "one.tif").shape == (12, 20, 1)


def test_png_keeps_16_bits_alpha_and_grey(tmp_path):
    deep = RNG.integers(0, 65536, (10, 14), dtype=np.uint16)
    rgba = RNG.integers(0, 256, (10, 14, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    cv2.imwrite(str(tmp_path / "grey.png"), rgba[..., 0])
    np.testing.assert_array_equal(read_bands(tmp_path / "deep.png")[..., 0], deep)
    np.testing.assert_array_equal(read_bands(tmp_path / "rgba.png"), rgba)
    assert read_bands(tmp_path / "grey.png").shape == (10, 14, 1)


def test_reader_scales_by_type_picks_bands_and_fills_nan(tmp_path):
    assert (pixel_scale(np.uint8), pixel_scale(np.uint16), pixel_scale(np.int16)) == (
        255.0, 65535.0, 1.0)  # fmt: skip
    deep = np.array([[[0, 65535, 13107]]], np.uint16)
    np.testing.assert_allclose(BandReader().prepare(deep, 3, "x"), [[[0.0, 1.0, 0.2]]], rtol=1e-6)
    signed = np.array([[[-5, 7000]]], np.int16)
    assert BandReader().prepare(signed, 2, "x").tolist() == [[[-5.0, 7000.0]]]
    floats = np.array([[[np.nan, 2.0, 3.0]]], np.float32)
    picked = BandReader(bands=(2, 0), nan_fill=-1.0).prepare(floats, 2, "x")
    assert picked.dtype == np.float32 and picked.tolist() == [[[3.0, -1.0]]]
    assert np.isnan(BandReader().prepare(floats, None, "x", fill=False)[0, 0, 0])
    with pytest.raises(DataError, match=r"'x' has 3 band\(s\) .* bands names \[5\]"):
        BandReader(bands=(0, 5)).prepare(floats, 2, "x")
    with pytest.raises(ConfigError, match="bands must be a list"):
        BandReader(bands=("red",))


def test_resizing_takes_any_band_count_as_opencv_does_band_by_band():
    image = RNG.random((30, 50, 13)).astype(np.float32)
    assert resize_scaled(image, 0.5).shape == (15, 25, 13)
    assert resize_square(image[..., :1], 16).shape == (16, 16, 1)
    out = resize_square(image, 16)
    assert out.shape == (16, 16, 13)
    for band in (0, 5, 12):
        ref = cv2.resize(image[..., band], (16, 16), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(out[..., band], ref, rtol=1e-6)


def test_channel_stats_against_numpy():
    images = [RNG.normal(5, 2, (8, 9, 3)) for _ in range(3)]
    images[1][0, 0, 1] = np.nan
    stats = ChannelStats()
    for image in images:
        stats.add(image)
    mean, std = stats.result()
    stacked = np.concatenate([im.reshape(-1, 3) for im in images])
    np.testing.assert_allclose(mean, np.nanmean(stacked, axis=0), rtol=1e-10)
    np.testing.assert_allclose(std, np.nanstd(stacked, axis=0), rtol=1e-8)
    empty = ChannelStats()
    empty.add(np.full((2, 2, 1), np.nan))
    with pytest.raises(DataError, match="no valid value"):
        empty.result()


# --- the data sets ---------------------------------------------------------------------------


def _folder(root: Path, image: np.ndarray, name: str = "a.png") -> Path:
    (root / "images").mkdir(parents=True), (root / "masks").mkdir()
    cv2.imwrite(str(root / "images" / name), image)
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros(image.shape[:2], np.uint8))
    return root


def test_folder_reads_rgb_8_bit_as_before_and_bands_when_in_channels_is_not_3(tmp_path):
    grey = RNG.integers(0, 256, (16, 24), dtype=np.uint8)
    root = _folder(tmp_path / "f", grey)
    ds = build_dataset("folder", root, None)
    image = ds[0]["image"]  # today's reader: grey repeated to RGB, uint8
    assert image.dtype == np.uint8 and image.shape == (16, 24, 3)
    np.testing.assert_array_equal(image, read_image(root / "images" / "a.png"))
    ds.in_channels = 1
    image = ds[0]["image"]
    assert image.dtype == np.float32 and image.shape == (16, 24, 1)
    np.testing.assert_allclose(image[..., 0], grey / 255.0, rtol=1e-6)
    assert ds.metadata().input == {"reader": "bands", "bands": None, "nan_fill": 0.0}
    ds.in_channels = 4
    with pytest.raises(DataError) as info:
        ds[0]
    message = str(info.value)
    assert "a.png" in message and "1 band(s)" in message and "model.in_channels=1" in message


def test_raster_pairs_by_pattern_and_maps_labels(tmp_path):
    root = synth_raster(tmp_path / "r", n=3)
    ds = build_dataset("raster", root, None, label_map={-1: "ignore"})
    assert [s.id for s in ds.samples] == ["r0", "r1", "r2"] and ds.ignore_index == 255
    item = ds[0]
    assert item["image"].shape == (SIZE[1], SIZE[0], 2) and item["image"].dtype == np.float32
    assert item["image"][0, 0].tolist() == [0.0, 0.0]  # NaN -> nan_fill
    labels = tifffile.imread(root / "masks" / "r0.tif")
    np.testing.assert_array_equal(item["mask"], np.where(labels == -1, 255, labels))
    one = build_dataset("raster", root, None, label_map={-1: 0}, bands=[1], nan_fill=-30)
    assert one[0]["image"].shape[2] == 1 and one[0]["image"][0, 0, 0] == -30.0
    assert one.metadata().input == {"reader": "bands", "bands": [1], "nan_fill": -30.0}


def test_raster_bad_inputs_are_one_line_naming_the_file_and_the_fix(tmp_path):
    root = synth_raster(tmp_path / "r", n=2)
    with pytest.raises(DataError, match=r"r0.tif' holds values -1 .*label_map: \{-1: ignore\}"):
        build_dataset("raster", root, None)[0]
    with pytest.raises(ConfigError, match="exactly one '\\*'"):
        build_dataset("raster", root, None, images="images/r0.tif")
    with pytest.raises(DataError, match="No files match masks='labels/\\*.tif'"):
        build_dataset("raster", root, None, masks="labels/*.tif")
    with pytest.raises(ConfigError, match="give a class id 0..255 or 'ignore'"):
        build_dataset("raster", root, None, label_map={-1: "void"})
    tifffile.imwrite(root / "masks" / "r1.tif", np.full(SIZE[::-1], 0.5, np.float32))
    with pytest.raises(DataError, match="r1.tif' holds fractional values"):
        build_dataset("raster", root, None, label_map={-1: "ignore"})[1]


# --- transforms and normalisation -------------------------------------------------------------


def test_transforms_normalise_bands_in_their_own_units():
    image = RNG.normal(-12, 4, (40, 40, 13)).astype(np.float32)
    mean, std = tuple(np.linspace(-13, -11, 13)), tuple(np.linspace(3, 5, 13))
    pipeline = build_transforms(None, 40, False, mean, std, max_pixel_value=1.0)
    out = pipeline(image=image, mask=np.zeros((40, 40), np.uint8))["image"]
    assert tuple(out.shape) == (13, 40, 40)
    expected = (image - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out.numpy().transpose(1, 2, 0), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="augment.color=0.5 .*set augment.color=0"):
        build_transforms(AugmentConfig(color=0.5), 40, True, mean, std, max_pixel_value=1.0)


def test_prediction_normalises_bands_like_training():
    bands = torch.from_numpy(RNG.normal(0, 1, (2, 8, 8, 5)).astype(np.float32))
    mean, std = [0.1, 0.2, 0.3, 0.4, 0.5], [1.0, 2.0, 3.0, 4.0, 5.0]
    out = normalize(bands, mean, std)
    expected = (bands.permute(0, 3, 1, 2) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(
        std
    ).view(1, -1, 1, 1)
    torch.testing.assert_close(out, expected)
    rgb = torch.randint(0, 256, (1, 4, 4, 3), dtype=torch.uint8)
    torch.testing.assert_close(
        normalize(rgb, [0.5] * 3, [0.25] * 3),
        (rgb.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25,
    )


# --- through the CLI -------------------------------------------------------------------------


def _config(tmp_path: Path, data: str, extra: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n{data}  batch_size: 2\n  num_workers: 0\n"
        "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n  in_channels: 2\n"
        f"loss:\n  name: ce\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n{extra}"
    )
    return cfg


def _stats(cfg: Path, capsys, json_out: Path) -> str:
    assert main(["stats", str(cfg), "--json", str(json_out)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-2]
    assert line.startswith("use them: augment.normalize=dataset augment.mean=[")
    return line.removeprefix("use them: ")


def test_bands_train_evaluate_predict_export_through_the_cli(tmp_path, capsys):
    root = synth_raster(tmp_path / "r", n=6)
    data = (
        f"  dataset: raster\n  root: {root}\n  train_split: .\n  val_fraction: 0.34\n"
        "  image_size: 32\n  options: {label_map: {-1: ignore}}\n"
    )
    cfg = _config(tmp_path, data)
    overrides = _stats(cfg, capsys, tmp_path / "stats.json").split()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert len(stats["mean"]) == 2 and stats["mean"][0] > stats["mean"][1]  # VV above VH
    assert main(["train", str(cfg), *overrides]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    spec = torch.load(ckpt, weights_only=True)["model_spec"]
    assert spec["in_channels"] == 2 and spec["meta"]["input"]["reader"] == "bands"
    np.testing.assert_allclose(spec["mean"], stats["mean"], rtol=1e-5)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    out = tmp_path / "pred"
    images = sorted((root / "images").glob("*.tif"))[:2]
    argv = ["predict", "--checkpoint", str(ckpt), *map(str, images), "--out", str(out)]
    assert main([*argv, "--overlay", "--color"]) == 0
    for image in images:
        label = cv2.imread(str(out / f"{image.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == (SIZE[1], SIZE[0]) and set(np.unique(label)) <= {0, 1}
        assert cv2.imread(str(out / f"{image.stem}_overlay.png")).shape == (SIZE[1], SIZE[0], 3)
    bands = tifffile.imread(images[0]).transpose(1, 2, 0)  # an in-memory array, as stored
    written = cv2.imread(str(out / f"{images[0].stem}.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(Predictor(ckpt, device="cpu").labels(bands), written)
    assert main(["export", "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "m.onnx")]) == 0
    import onnx

    props = {p.key: json.loads(p.value) for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["segkit.in_channels"] == 2 and props["segkit.input"]["reader"] == "bands"


def test_a_band_count_that_does_not_match_in_channels_is_one_line(tmp_path, capsys):
    root = synth_raster(tmp_path / "r", n=3)
    data = (
        f"  dataset: raster\n  root: {root}\n  train_split: .\n  val_fraction: 0.34\n"
        "  image_size: 32\n  options: {label_map: {-1: ignore}}\n"
    )
    cfg = _config(tmp_path, data)
    assert main(["train", str(cfg), "model.in_channels=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "r0.tif' has 2 band(s) but model.in_channels is 3" in err
    assert "Set model.in_channels=2" in err
    assert main(["train", str(cfg), "augment.normalize=dataset"]) == 2
    assert "segkit stats CONFIG" in capsys.readouterr().err


def test_stats_of_8_bit_rgb_are_on_the_0_1_scale(tmp_path, capsys):
    image = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    root = _folder(tmp_path / "f", image)
    cfg = _config(
        tmp_path, f"  dataset: folder\n  root: {root}\n  train_split: .\n  val_split: .\n"
    )
    out = tmp_path / "s.json"
    assert main(["stats", str(cfg), "model.in_channels=3", "--json", str(out)]) == 0
    stats = json.loads(out.read_text())
    rgb = image[..., ::-1].reshape(-1, 3) / 255.0  # cv2 wrote BGR
    np.testing.assert_allclose(stats["mean"], rgb.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["std"], rgb.std(axis=0), rtol=1e-5)
    cv2.imwrite(str(root / "images" / "a.png"), np.full((8, 8, 3), 7, np.uint8))
    assert main(["stats", str(cfg), "model.in_channels=3"]) == 2
    assert "hold one value only" in capsys.readouterr().err


def test_a_stats_file_is_what_training_normalises_with(tmp_path, capsys):
    """`segkit stats --json FILE` then `augment.stats: FILE` (relative to the config): the
    model spec, the checkpoint and prediction normalise with the file's mean/std."""
    image = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    root = _folder(tmp_path / "f", image)
    cfg = _config(
        tmp_path,
        f"  dataset: folder\n  root: {root}\n  train_split: .\n  val_split: .\n  image_size: 32\n",
        "augment: {normalize: dataset, stats: stats.json}\n",
    )
    argv = ["stats", str(cfg), "model.in_channels=3", "--json", str(tmp_path / "stats.json")]
    assert main(argv) == 0  # the file it names does not exist yet: stats does not read it
    assert "augment.stats=" in capsys.readouterr().out.strip().splitlines()[-1]
    rgb = image[..., ::-1].reshape(-1, 3) / 255.0  # cv2 wrote BGR
    mean, std = rgb.mean(axis=0), rgb.std(axis=0)
    assert main(["train", str(cfg), "model.in_channels=3"]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    spec = torch.load(ckpt, weights_only=True)["model_spec"]
    np.testing.assert_allclose(spec["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(spec["std"], std, rtol=1e-5)
    np.testing.assert_allclose(Predictor(ckpt, device="cpu").recipe.mean, mean, rtol=1e-5)
    # what training fed the network: the image normalised with the file's values
    from segkit.api import build_experiment
    from segkit.config import load_config

    exp = build_experiment(load_config(cfg, ["model.in_channels=3"]))
    fed = exp.val_set[0]["image"].numpy().transpose(1, 2, 0)
    expected = (image[..., ::-1] / 255.0 - mean) / std
    np.testing.assert_allclose(fed, expected, rtol=1e-4, atol=1e-4)
    # the same config over a rewritten file: no resume with other statistics than the run's
    stats = json.loads((tmp_path / "stats.json").read_text())
    (tmp_path / "stats.json").write_text(json.dumps({**stats, "mean": [0.5, 0.5, 0.5]}))
    capsys.readouterr()
    argv = ["train", str(cfg), "model.in_channels=3", "train.epochs=2", "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "trained with the input mean" in err and "[0.5, 0.5, 0.5]" in err
    assert len(err.splitlines()) == 1
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(
    ("file", "extra", "message"),
    [
        (None, "", "augment.stats: statistics file '{stats}' does not exist; write it with"),
        ('{"mean": [0.5, 0.5, 0.5]}', "", "holds no std (a list of numbers, one per channel)"),
        ("[1, 2]", "", "holds no mean"),
        ('{"mean": [0.5, 0.5], "std": [0.2, 0.2]}', "", "mean has 2 values but model.in_ch"),
        ('{"mean": [0.5], "std": [0.2]}', "augment.normalize=model", "augment.normalize is 'm"),
        ('{"mean": [0.5], "std": [0.2]}', "augment.mean=[0.4] augment.std=[0.2]", "keep one"),
    ],
)
def test_a_bad_stats_file_is_one_line(tmp_path, capsys, file, extra, message):
    root = _folder(tmp_path / "f", RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    data = f"  dataset: folder\n  root: {root}\n  train_split: .\n  val_split: .\n"
    cfg = _config(tmp_path, data, "augment: {normalize: dataset, stats: stats.json}\n")
    if file is not None:
        (tmp_path / "stats.json").write_text(file)
    assert main(["train", str(cfg), "model.in_channels=3", *extra.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert message.format(stats=tmp_path / "stats.json") in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_stats_file_reads_json_exponents_and_yaml(tmp_path):
    """json writes 5e-05 and 1e+20, which PyYAML reads as strings; YAML files still read."""
    from segkit.data.bands import read_stats

    mean, std = [0.0001, -12.5], [5e-05, 1e20]
    (tmp_path / "s.json").write_text(json.dumps({"mean": mean, "std": std}))
    assert read_stats(tmp_path / "s.json") == (mean, std)
    (tmp_path / "s.yaml").write_text("mean: [0.5, 0.25]\nstd: [0.125, 2]\n")
    assert read_stats(tmp_path / "s.yaml") == ([0.5, 0.25], [0.125, 2.0])


# --- the real Sen1Floods11 sample (skipped when absent) ---------------------------------------

SEN1FLOODS = DATA / "sen1floods11_hand13" / "HandLabeled"


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not SEN1FLOODS.is_dir(), reason=f"no Sen1Floods11 sample at {SEN1FLOODS}")
def test_real_sen1floods11_trains_evaluates_and_predicts(tmp_path, capsys):
    data = (
        f"  dataset: raster\n  root: {SEN1FLOODS}\n  train_split: .\n  val_fraction: 0.25\n"
        "  image_size: 64\n  options:\n    images: S1Hand/*_S1Hand.tif\n"
        "    masks: LabelHand/*_LabelHand.tif\n    label_map: {-1: ignore}\n"
    )
    chip = SEN1FLOODS / "S1Hand" / "India_900498_S1Hand.tif"
    with Image.open(chip) as im:  # the trap: Pillow shows the first band only
        assert np.asarray(im).ndim == 2
    assert read_bands(chip).shape == (512, 512, 2)
    cfg = _config(tmp_path, data)
    overrides = _stats(cfg, capsys, tmp_path / "stats.json").split()
    mean = json.loads((tmp_path / "stats.json").read_text())["mean"]
    assert -20 < mean[1] < mean[0] < -5  # VV and VH backscatter in dB, the all-NaN chip left out
    assert main(["train", str(cfg), *overrides]) == 0
    ckpt = tmp_path / "run" / "best.pt"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "val"]) == 0
    chips = [SEN1FLOODS / "S1Hand" / f"{n}_S1Hand.tif" for n in ("Paraguay_34417", "India_900498")]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(ckpt), *map(str, chips), "--out", str(out)]) == 0
    for chip in chips:
        label = cv2.imread(str(out / f"{chip.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == (512, 512) and set(np.unique(label)) <= {0, 1}  # land / water
