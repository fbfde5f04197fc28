"""docs/data.md, "Names, colours, statistics and label values in files": each config there
reads its data from the config alone (a names file, a hex JSON colour table, a statistics
file, 0/255 masks)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from test_data_layouts import DUBAI, _doc_yaml, make_dubai
from test_label_values import _binary_folder

from segkit.api import build_datasets
from segkit.config import load_config
from segkit.data import build_dataset
from segkit.data.checks import foreground_value

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()
CAMVID = DATA / "camvid_val40"


def _config(tmp_path: Path, first_line: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(_doc_yaml(first_line))
    return path


@pytest.mark.realdata
@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"no CamVid sample at {CAMVID}")
def test_docs_camvid_folder_is_named_by_its_labels_txt(tmp_path):
    # the config as written, in a folder where ../shared/data is the real samples' folder
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA)  # the test's stand-in, not the user's
    cfg = load_config(_config(repo, "# camvid_folder.yaml"))
    names = (CAMVID / "labels.txt").read_text().split()
    assert cfg.data.classes == names and len(names) == 12 and names[-1] == "Unlabelled"
    train, val = build_datasets(cfg)
    assert train.class_names == names and len(train) + len(val) == 40
    assert train.ignore_index == 11 and set(np.unique(train.read(0)[1]).tolist()) <= set(range(12))


def test_docs_dubai_tiles_read_through_a_hex_json_table(tmp_path):
    root = make_dubai(tmp_path / "data" / "Semantic segmentation dataset")
    text = _doc_yaml("# dubai_json.yaml")
    table = re.search(r"# (\{.*?\})", text.replace("\n", " ").replace("#  ", ""), re.S).group(1)
    (root / "classes.json").write_text(table)  # the colours the docs give, as JSON
    (tmp_path / "dubai.yaml").write_text(text)
    cfg = load_config(tmp_path / "dubai.yaml", [f"data.split_file={tmp_path / 'val.csv'}"])
    train, val = build_datasets(cfg)
    assert train.class_names == list(DUBAI)
    assert train.metadata().palette == tuple(DUBAI.values())  # the masks' colours
    by_csv = build_dataset("color_masks", root, None, roots="Tile *")
    for ds in (train, val):
        for i, sample in enumerate(ds.samples):
            j = [s.id for s in by_csv.samples].index(sample.id)
            np.testing.assert_array_equal(ds.read(i)[1], by_csv.read(j)[1])
    assert json.loads(table)["Water"] == "#E2A929"


def test_docs_stats_file_is_taken_from_the_config_folder(tmp_path):
    cfg = load_config(_config(tmp_path, "# config.yaml: statistics from a file"))
    assert cfg.augment.normalize == "dataset"
    assert cfg.augment.stats == str(tmp_path / "stats.json")


def test_docs_roads_0_255_masks_are_recorded_as_0_255(tmp_path):
    _binary_folder(tmp_path / "data" / "roads")
    cfg = load_config(_config(tmp_path, "# roads.yaml"))
    train, _ = build_datasets(cfg)
    assert foreground_value(train) == 255
