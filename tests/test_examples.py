"""The example configs load and train unchanged on synthetic data in the real layouts."""

from pathlib import Path

import pytest

from segkit.api import train
from segkit.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIGS = sorted(EXAMPLES.glob("*/*.yaml"))
TINY = [
    "data.image_size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    "train.epochs=1",
    "train.progress=false",
    "model.base_channels=4",
    "data.val_fraction=0.5",
]


@pytest.fixture(scope="module")
def helen_official(tmp_path_factory):
    from segkit.data import synth_helen

    root = tmp_path_factory.mktemp("helen") / "helenstar_release"
    synth_helen(root, n=4, seed=0, size=64, layout="official", split="train")
    synth_helen(root, n=2, seed=1, size=64, layout="official", split="test")
    return root


@pytest.fixture(scope="module")
def carvana_kaggle(tmp_path_factory):
    from segkit.data import synth_carvana

    root = tmp_path_factory.mktemp("carvana") / "carvana"
    synth_carvana(root, cars=2, views=2, seed=0, size=(96, 64))
    return root


def test_there_are_example_configs():
    names = {p.relative_to(EXAMPLES).as_posix() for p in CONFIGS}
    assert {
        "helen_faces/config.yaml",
        "helen_faces/config_smp.yaml",
        "carvana_single_class/config.yaml",
    } <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_trains_one_tiny_epoch(config, helen_official, carvana_kaggle, tmp_path):
    cfg = load_config(config)
    root = helen_official if cfg.data.dataset == "helen" else carvana_kaggle
    overrides = [*TINY, f"data.root={root}", f"train.out_dir={tmp_path / 'run'}"]
    if cfg.data.prepare_size:
        overrides += ["data.prepare_size=64", f"data.prepared_root={tmp_path / 'prepared'}"]
    if cfg.data.crop is not None:  # crops (and validation windows) of the tiny images
        overrides.append("data.crop.size=32")
    if cfg.data.split_file:  # the example's split file for these synthetic ids goes to tmp_path
        name = Path(cfg.data.split_file).name
        overrides.append(f"data.split_file={tmp_path / name}")
    result = train(load_config(config, overrides))
    assert result["status"] == "completed"
    assert (tmp_path / "run" / "best.pt").is_file()
    assert (tmp_path / "run" / "history.csv").is_file()


def test_helen_split_file_for_the_real_sample_matches_the_seeded_split():
    """val_ids_helen256.csv is the seeded 10% hold-out of ../shared/data/helen256's 1999 pairs."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    cfg = load_config(EXAMPLES / "helen_faces" / "config_smp.yaml")
    ids = [f"image_{n}" for n in range(1, 2000)]  # the real sample's ids, in the adapter's order
    _, val = train_test_split(ids, test_size=cfg.data.val_fraction, random_state=cfg.train.seed)
    written = pd.read_csv(EXAMPLES / "helen_faces" / "val_ids_helen256.csv", dtype=str)["id"]
    assert written.tolist() == sorted(val)
