"""Class balance: counts against hand-computed values, both weighting rules, the ignore label,
the rare-class sampler, config errors, ``segkit stats``'s table and a run that records and
resumes its weights."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import segkit.data.base as base
from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.balance import (
    BALANCE_FILE,
    ClassCounts,
    RareClassSampler,
    class_weights,
    count_classes,
    image_weights,
)
from segkit.errors import ConfigError

# three 4x4 label maps of classes 0, 1, 2 (255: ignored), counted by hand below
MASKS = {
    "a": np.array([[0] * 4, [0] * 4, [1] * 4, [1] * 4], np.uint8),  # 8 x 0, 8 x 1
    "b": np.array([[0] * 4, [0] * 4, [0] * 4, [255, 2, 2, 255]], np.uint8),  # 12 x 0, 2 x 2
    "c": np.array([[0] * 4, [0] * 4, [0] * 4, [0, 0, 1, 1]], np.uint8),  # 14 x 0, 2 x 1
}
# pixels of class 0, 1, 2: 8+12+14 = 34, 8+2 = 10, 2; labelled 46; ignored 2
PIXELS, IMAGES, LABELLED = [34, 10, 2], [3, 2, 1], 46


def _write(root: Path, masks: dict[str, np.ndarray], size: int | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        if size is not None:
            mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        image = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
    return root


@pytest.fixture
def tiny(tmp_path):
    ds = build_dataset("folder", _write(tmp_path / "d", MASKS), None, classes=["bg", "x", "y"])
    ds.ignore_index = 255
    return ds


def test_counts_match_the_hand_counts_and_leave_the_ignore_label_out(tiny, monkeypatch):
    def no_images(*args, **kwargs):
        raise AssertionError("counting decoded an image")

    monkeypatch.setattr(base, "read_image", no_images)  # labels only
    counts = count_classes(tiny)
    assert counts.ids == ("a", "b", "c") and counts.classes == ("bg", "x", "y")
    assert counts.pixels.tolist() == PIXELS and counts.images.tolist() == IMAGES
    assert counts.labelled == LABELLED and counts.ignored == 2
    assert counts.per_image.tolist() == [[8, 8, 0], [12, 0, 2], [14, 2, 0]]
    np.testing.assert_allclose(counts.shares(), np.array(PIXELS) / LABELLED)
    # freq(c): pixels of c / labelled pixels of the images holding c
    np.testing.assert_allclose(counts.frequencies(), [34 / 46, 10 / 32, 2 / 14])


def test_median_frequency_weights_by_hand(tiny):
    weights = class_weights(count_classes(tiny), "auto")
    median = 10 / 32  # of 34/46, 10/32, 2/14
    np.testing.assert_allclose(weights, [median / (34 / 46), 1.0, median / (2 / 14)])
    assert class_weights(count_classes(tiny), "median_frequency") == weights


def test_inverse_weights_are_scikit_learns_balanced_weights(tiny):
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.concatenate([m.ravel() for m in MASKS.values()])
    labels = labels[labels != 255]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    weights = class_weights(count_classes(tiny), "inverse")
    np.testing.assert_allclose(weights, expected)
    np.testing.assert_allclose(np.dot(weights, PIXELS) / LABELLED, 1.0)  # mean pixel weight 1


def test_a_class_without_pixels_weighs_one_and_reduce_zero_label_leaves_0_out(tmp_path):
    masks = {"a": np.array([[0, 1], [1, 2]], np.uint8), "b": np.array([[1, 1], [2, 0]], np.uint8)}
    ds = build_dataset(
        "folder",
        _write(tmp_path / "d", masks),
        None,
        classes=["p", "q", "r"],
        reduce_zero_label=True,
    )
    counts = count_classes(ds)  # labels 1, 2 are classes 0, 1; label 0 is left out
    assert counts.pixels.tolist() == [4, 2, 0] and counts.ignored == 2
    weights = class_weights(counts, "median_frequency")
    assert weights[2] == 1.0
    np.testing.assert_allclose(weights[:2], [np.median([4 / 6, 2 / 6]) / (4 / 6), 1.5])


def test_rare_class_sampler_draws_rare_class_images_more_often(tiny):
    counts = count_classes(tiny)
    weights = class_weights(counts, "auto")
    per_image = image_weights(counts, weights)
    pixels = np.array([[8, 8, 0], [12, 0, 2], [14, 2, 0]], float)
    expected = pixels @ weights / pixels.sum(1)  # the mean class weight of each image's pixels
    np.testing.assert_allclose(per_image, expected / expected.mean())
    assert per_image.argmax() == 0  # a: half of it class x (weight 1)
    sampler = RareClassSampler(per_image, seed=0)
    draws = []
    for epoch in range(2000):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    seen = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(seen, per_image / per_image.sum(), atol=0.01)
    assert seen[0] > 1 / 3 + 0.05 and seen[2] < 1 / 3 - 0.05
    sampler.set_epoch(7)
    again = list(sampler)
    sampler.set_epoch(7)
    assert list(sampler) == again  # an epoch's draws depend on seed and epoch only


def test_rare_class_sampler_shards_over_processes():
    sampler = RareClassSampler([1.0] * 10, seed=3)
    shards = [sampler.shard(rank, 3) for rank in range(3)]
    draws = [list(s) for s in shards]
    assert [len(d) for d in draws] == [4, 4, 4]  # ceil(10 / 3) each, as DistributedSampler
    assert draws[0] != draws[1] != draws[2]
    assert list(sampler.shard(1, 3)) == draws[1]


def test_a_sharded_loader_draws_with_its_share_of_the_rare_class_sampler():
    from segkit.engine import DistInfo, make_loader, set_loader_epoch, shard_loader

    data = list(range(10))
    sampler = RareClassSampler([1.0] * 9 + [5.0], seed=3)
    loader = make_loader(data, 2, shuffle=True, sampler=sampler)
    assert loader.sampler is sampler
    ranks = [shard_loader(loader, DistInfo(rank=r, world_size=2), train=True) for r in (0, 1)]
    drawn = []
    for r, sharded in enumerate(ranks):
        assert sharded.sampler.rank == r and len(sharded.sampler) == 5
        set_loader_epoch(sharded, 4, seed=3)
        drawn.append([int(i) for batch in sharded for i in batch])
        alone = sampler.shard(r, 2)
        alone.set_epoch(4)
        assert drawn[r] == list(alone)  # epoch 4 of rank r, whoever draws it
    assert drawn[0] != drawn[1]


def _config(tmp_path: Path, root: Path, extra: str = "", loss: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data:\n  dataset: folder\n  root: {root}\n  train_split: .\n  classes: [bg, x, y]\n"
        "  val_fraction: 0.34\n  image_size: 16\n  batch_size: 2\n  num_workers: 0\n"
        f"{extra}model:\n  arch: unet\n  encoder: null\n  base_channels: 4\n"
        f"loss:\n  name: ce\n  ignore_index: 255\n{loss}"
        "train:\n  epochs: 2\n  out_dir: run\n  progress: false\n  preview: 0\n  deterministic: true\n"
        "  hooks: {plot: false}\n"
    )
    return cfg


@pytest.mark.parametrize(
    "override, words",
    [
        ("loss.class_weights=median", ["'median' is no weighting rule", "auto (= median_frequency)", "inverse"]),
        ("data.sampler=rare", ["data.sampler='rare' is no sampler", "Did you mean 'rare_classes'?"]),
    ],
)  # fmt: skip
def test_a_bad_rule_or_sampler_is_one_line_naming_the_choices(tmp_path, capsys, override, words):
    cfg = _config(tmp_path, _write(tmp_path / "d", MASKS))
    assert main(["train", str(cfg), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    for word in words:
        assert word in err
    counts = ClassCounts(("a", "b"), ("i",), np.array([[1, 2]]))
    with pytest.raises(ConfigError, match=r"class_weights='log' is no weighting rule: use auto"):
        class_weights(counts, "log")


def test_stats_prints_each_class_share_and_image_count(tmp_path, capsys):
    cfg = _config(tmp_path, _write(tmp_path / "d", MASKS), extra="  val_split: .\n")
    out = tmp_path / "stats.json"
    assert main(["stats", str(cfg), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "classes in the 3 training label maps (46 labelled pixels; label 255 left out: 2" in text
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert [r[:5] for r in rows] == [
        ["0", "bg", "34", f"{100 * 34 / 46:.2f}%", "3"],
        ["1", "x", "10", f"{100 * 10 / 46:.2f}%", "2"],
        ["2", "y", "2", f"{100 * 2 / 46:.2f}%", "1"],
    ]
    table = json.loads(out.read_text())["class_balance"]
    assert [r["images"] for r in table["classes"]] == IMAGES
    assert table["classes"][2]["median_frequency"] == pytest.approx((10 / 32) / (2 / 14))


@pytest.mark.slow
def test_a_run_records_its_weights_and_resumes_with_them_without_counting(
    tmp_path, capsys, monkeypatch
):
    from segkit.api import train
    from segkit.config import load_config

    masks = {f"{k}{i}": m for i in range(2) for k, m in MASKS.items()}  # 6 images, 16x16
    root = _write(tmp_path / "d", masks, size=16)
    cfg_path = _config(tmp_path, root, "  sampler: rare_classes\n", "  class_weights: auto\n")
    monkeypatch.chdir(tmp_path)
    straight = train(load_config(cfg_path, ["train.out_dir=straight"]))
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "straight" / BALANCE_FILE).read_text())
    train_ids = sorted(record["image_weights"])
    assert len(train_ids) == 3  # 3 of the 6 held out (val_fraction 0.34)
    labels = np.stack([cv2.imread(str(root / "masks" / f"{i}.png"), 0) for i in train_ids])
    counts = [int((labels == c).sum()) for c in range(3)]
    assert [r["pixels"] for r in record["classes"]] == counts
    assert record["rule"] == "median_frequency" and record["sampler"] == "rare_classes"
    assert (
        f"class weights: median_frequency from 3 training label maps: bg {record['weights'][0]:.3g}"
        in printed
    )
    assert "sampler rare_classes: each epoch draws 3 training images" in printed
    ckpt = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert ckpt["hooks"]["class_balance"]["weights"] == record["weights"]
    assert ckpt["config"]["loss"]["class_weights"] == "auto"

    train(load_config(cfg_path, ["train.out_dir=cut", "train.epochs=1"]))

    def no_counting(*args, **kwargs):
        raise AssertionError("a resume counted the labels again")

    monkeypatch.setattr("segkit.api.balance.count_classes", no_counting)
    resumed = train(load_config(cfg_path, ["train.out_dir=cut"]), resume=True)
    a = torch.load(straight["last"], weights_only=True)["model"]
    b = torch.load(resumed["last"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical


def test_soft_targets_cannot_be_counted(tmp_path):
    masks = {"a": np.array([[0, 1], [1, 1]], np.uint8)}
    ds = build_dataset("folder", _write(tmp_path / "d", masks), None)
    assert count_classes(ds).pixels.tolist() == [1, 3]  # binary: background, foreground
    ds.use_soft_targets()
    with pytest.raises(ConfigError, match="Give loss.class_weights as a list of numbers"):
        count_classes(ds)


def test_overwrite_removes_an_earlier_runs_class_balance_record(make_trainer, tmp_path):
    first = make_trainer(tmp_path / "run", epochs=1)
    first.fit()
    (tmp_path / "run" / BALANCE_FILE).write_text("{}")
    make_trainer(tmp_path / "run", epochs=1).fit(overwrite=True)  # a run without class balance
    assert not (tmp_path / "run" / BALANCE_FILE).exists()
