"""The held-out validation split: seeded, written to data.split_file, reused, checked."""

from pathlib import Path

import pandas as pd
import pytest

from segkit.api import build_datasets
from segkit.config import Config
from segkit.errors import DataError


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
