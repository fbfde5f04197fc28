"""The held-out validation split: seeded, written to data.split_file, reused, checked."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from segkit.api import build_datasets
from segkit.config import Config, to_dict
from segkit.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def helen_root(tmp_path_factory) -> Path:
    from segkit.data import synth_helen

    root = tmp_path_factory.mktemp("data") / "helen_small"
    synth_helen(root, n=10, seed=0, size=32)
    return root


def make_cfg(root: Path, split_file: Path | str | None, seed: int = 0) -> Config:
    cfg = Config()
    cfg.data.root, cfg.data.val_fraction = str(root), 0.3
    cfg.data.split_file = None if split_file is None else str(split_file)
    cfg.train.seed = seed
    return cfg


def ids(ds) -> list[str]:
    return sorted(s.id for s in ds.samples)


def test_seeded_split_is_written_and_reused(helen_root, tmp_path):
    split = tmp_path / "val.csv"
    train, val = build_datasets(make_cfg(helen_root, split))
    assert len(val) == 3 and len(train) == 7 and not set(ids(train)) & set(ids(val))
    assert pd.read_csv(split, dtype=str)["id"].tolist() == ids(val)
    # the same seed without a file draws the same split
    assert ids(build_datasets(make_cfg(helen_root, None))[1]) == ids(val)
    # a file that exists wins over the seed, and is not rewritten
    pd.DataFrame({"id": ids(train)[:2]}).to_csv(split, index=False)
    before = split.read_bytes()
    train2, val2 = build_datasets(make_cfg(helen_root, split, seed=5))
    assert ids(val2) == ids(train)[:2] and len(train2) == 8
    assert split.read_bytes() == before


def test_split_file_naming_ids_of_another_data_set_fails_clearly(helen_root, tmp_path):
    split = tmp_path / "val.csv"
    pd.DataFrame({"id": ["image_1", "100032540_1"]}).to_csv(split, index=False)
    with pytest.raises(DataError, match=r"val\.csv.*names ids not in the data set.*100032540_1"):
        build_datasets(make_cfg(helen_root, split))


def test_root_name_placeholder_keeps_one_split_file_per_data_set(helen_root, tmp_path):
    pattern = tmp_path / "val_ids_{root_name}.csv"
    _, val = build_datasets(make_cfg(helen_root, pattern))
    written = tmp_path / "val_ids_helen_small.csv"
    assert pd.read_csv(written, dtype=str)["id"].tolist() == ids(val)
    assert [p.name for p in tmp_path.iterdir()] == [written.name]


@pytest.mark.parametrize("content", ["", "name\nimage_1\n", "\xff\xfe\x00binary"])
def test_a_split_file_that_is_not_an_id_csv_says_so(helen_root, tmp_path, content):
    split = tmp_path / "val.csv"
    split.write_bytes(content.encode("latin-1"))
    with pytest.raises(DataError, match=r"val\.csv.*is not a CSV with an 'id' column"):
        build_datasets(make_cfg(helen_root, split))


def test_holding_out_everything_or_too_much_is_refused(helen_root, tmp_path):
    split = tmp_path / "val.csv"
    pd.DataFrame({"id": [f"image_{i}" for i in range(1, 11)]}).to_csv(split, index=False)
    with pytest.raises(DataError, match=r"training part .* is empty .*val\.csv"):
        build_datasets(make_cfg(helen_root, split))
    cfg = make_cfg(helen_root, None)
    cfg.data.val_fraction = 0.95  # 9.5 of 10 samples: no training sample left
    with pytest.raises(ConfigError, match=r"data.val_fraction=0.95 cannot split 10 samples"):
        build_datasets(cfg)


def test_evaluate_builds_a_named_split_with_data_classes(tmp_path):
    from segkit.api import evaluate
    from segkit.data.io import write_image, write_mask
    from segkit.engine.checkpoint import save_checkpoint
    from segkit.models import build_model

    rng = np.random.default_rng(0)
    for i in range(2):
        image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        write_image(tmp_path / "d" / "images" / f"s{i}.png", image)
        write_mask(tmp_path / "d" / "masks" / f"s{i}.png", rng.integers(0, 4, (32, 32)))
    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.image_size = "folder", str(tmp_path / "d"), 32
    cfg.data.classes = ["a", "b", "c", "d"]
    model = build_model(arch="unet", base_channels=4, classes=4, class_names=cfg.data.classes)
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        {"model": model.state_dict(), "model_spec": model.spec.to_dict(), "config": to_dict(cfg)},
    )
    result = evaluate(ckpt, split=".", num_workers=0)  # four classes, not a binary folder
    assert "iou_d" in result


def test_train_and_evaluate_with_void_pixels_left_out(tmp_path):
    from segkit.api import evaluate, train
    from segkit.data import read_mask, synth_helen, write_mask

    root = synth_helen(tmp_path / "helen", n=6, seed=0, size=32)
    for label in (root / "train" / "labels").iterdir():  # a void border, as in VOC
        mask = read_mask(label)
        mask[:2] = 255
        write_mask(label, mask)
    cfg = make_cfg(root, None)
    cfg.data.image_size, cfg.data.batch_size, cfg.data.num_workers = 32, 2, 0
    cfg.model.arch, cfg.model.base_channels = "unet", 4
    cfg.loss.name, cfg.loss.ignore_index = "ce", 255
    cfg.train.epochs, cfg.train.out_dir, cfg.train.progress = 1, str(tmp_path / "run"), False
    result = train(cfg)
    assert np.isfinite(result["metrics"]["val_loss"])
    metrics = evaluate(result["best"], split="val", num_workers=0)
    assert 0.0 <= metrics["f1_overall"] <= 1.0


def test_train_seed_decides_the_initial_weights(helen_root):
    from segkit.api import build_experiment

    cfg = make_cfg(helen_root, None)
    cfg.data.image_size, cfg.model.arch, cfg.model.base_channels = 32, "unet", 4
    first = build_experiment(cfg).model.state_dict()
    torch.rand(100)  # whatever else draws from torch's generator in between
    again = build_experiment(cfg).model.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    cfg.train.seed = 1
    other = build_experiment(cfg).model.state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_an_out_dir_split_file_goes_into_the_run_folder_not_beside_the_config(helen_root, tmp_path):
    """Issue 18: the Helen example's split file of a new data root is the run's, not the checkout's."""
    from segkit.config import load_config

    example = Path(__file__).resolve().parents[1] / "examples" / "helen_faces" / "config.yaml"
    before = sorted(p.name for p in example.parent.iterdir())
    run = tmp_path / "run"
    cfg = load_config(example, [f"data.root={helen_root}", f"train.out_dir={run}"])
    assert cfg.data.split_file == "{out_dir}/val_ids.csv"
    _, val = build_datasets(cfg)
    assert pd.read_csv(run / "val_ids.csv", dtype=str)["id"].tolist() == ids(val)
    assert sorted(p.name for p in example.parent.iterdir()) == before


def test_overwrite_draws_a_new_split_for_new_data(tmp_path):
    # an earlier run on other data left its held-out ids in the run folder
    from segkit.api import train
    from segkit.data import synth_helen

    first, second = tmp_path / "a", tmp_path / "b"
    synth_helen(first, n=6, seed=0, size=32)
    synth_helen(second, n=6, seed=1, size=32, layout="official")
    cfg = make_cfg(first, "{out_dir}/val_ids.csv")
    cfg.model.arch, cfg.model.base_channels, cfg.model.encoder_weights = "unet", 4, None
    cfg.data.image_size, cfg.data.batch_size, cfg.data.num_workers = 32, 2, 0
    cfg.train.epochs, cfg.train.out_dir = 1, str(tmp_path / "run")
    cfg.train.hooks.plot = False
    train(cfg)
    cfg.data.root = str(second)
    train(cfg, overwrite=True)
    written = pd.read_csv(tmp_path / "run" / "val_ids.csv", dtype=str)["id"].tolist()
    assert written and all(i.endswith("_1") for i in written)  # official-layout ids
    keep = tmp_path / "mine.csv"  # a split file outside the run folder is the user's
    pd.DataFrame({"id": written}).to_csv(keep, index=False)
    cfg.data.split_file = str(keep)
    train(cfg, overwrite=True)
    assert keep.is_file()


def test_one_car_cannot_be_split_by_car_and_the_message_says_what_helps(tmp_path):
    from segkit.data import synth_carvana

    synth_carvana(tmp_path / "c", cars=1, views=4, size=(64, 48))
    cfg = make_cfg(tmp_path / "c", None)
    cfg.data.dataset = "carvana"
    with pytest.raises(DataError) as info:
        build_datasets(cfg)
    message = str(info.value)
    assert "one car's views" in message and "data.val_split" in message
    assert "val_fraction" not in message  # no fraction can split a single car


def test_evaluate_val_scores_the_split_training_validated_on(helen_root, tmp_path):
    from segkit.api import evaluate, train

    cfg = make_cfg(helen_root, None)
    cfg.data.val_split = "train"  # validate on a split of its own, not a hold-out
    cfg.model.arch, cfg.model.base_channels, cfg.model.encoder_weights = "unet", 4, None
    cfg.data.image_size, cfg.data.batch_size, cfg.data.num_workers = 32, 2, 0
    cfg.train.epochs, cfg.train.out_dir = 1, str(tmp_path / "run")
    cfg.train.hooks.plot = False
    train(cfg)
    best = tmp_path / "run" / "best.pt"
    val, whole = (evaluate(best, split=s, device="cpu") for s in ("val", "train"))
    assert val.keys() == whole.keys()
    np.testing.assert_equal([val[k] for k in val], [whole[k] for k in val])  # NaN == NaN


def test_a_missing_helen_split_names_the_command_line_option(helen_root):
    from segkit.data.helen import _split_folder

    with pytest.raises(DataError, match=r"holding test/.*data\.root=DIR; segkit evaluate --data"):
        _split_folder(helen_root, "test")
