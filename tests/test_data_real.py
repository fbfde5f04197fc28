"""The real samples in ../shared/data load through the adapters (skipped when absent).

Run with: .venv/bin/python -m pytest -q tests/test_data_real.py
"""

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.data import (
    HELEN_CLASSES,
    CarvanaDataset,
    HelenDataset,
    build_transforms,
    prepare_carvana,
    rle_decode,
    rle_encode,
)

#: the real samples: $SEGKIT_TEST_DATA, else ../shared/data beside the repository
DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()  # absolute: tests link to these files from tmp_path
HELEN = DATA / "helen256"
CARVANA = DATA / "carvana_real5"

pytestmark = pytest.mark.realdata


@pytest.mark.skipif(not HELEN.is_dir(), reason=f"real Helen sample not found at {HELEN}")
def test_real_helen_split_layout():
    ds = HelenDataset(HELEN, "train", ids=["image_1", "image_2", "image_1000", "image_1999"])
    assert ds.layout == "split" and ds.class_names == HELEN_CLASSES
    seen = set()
    for item in ds:
        assert item["image"].shape == (256, 256, 3) and item["image"].dtype == np.uint8
        assert item["mask"].shape == (256, 256) and item["mask"].max() <= 10
        seen |= set(np.unique(item["mask"]).tolist())
        # brows/eyes: "l" = viewer's left, so lb lies left of rb whenever both are visible
        if {2, 3} <= set(np.unique(item["mask"]).tolist()):
            xs = [np.nonzero(item["mask"] == c)[1].mean() for c in (2, 3)]
            assert xs[0] < xs[1]
    assert {0, 1, 2, 3, 4, 5, 6} <= seen
    assert len(HelenDataset(HELEN, "train")) == 1999


@pytest.mark.skipif(not CARVANA.is_dir(), reason=f"real Carvana sample not found at {CARVANA}")
def test_real_carvana_kaggle_layout():
    ds = CarvanaDataset(CARVANA, "train")
    assert [s.id for s in ds.samples] == [f"0cdf5b5d0ce1_0{v}" for v in range(1, 6)]
    for item in ds:
        assert item["image"].shape == (1280, 1918, 3)
        assert item["mask"].shape == (1280, 1918)
        assert set(np.unique(item["mask"]).tolist()) == {0, 1}
        assert 0.05 < item["mask"].mean() < 0.5  # a car fills part of the frame
        np.testing.assert_array_equal(
            rle_decode(rle_encode(item["mask"]), (1280, 1918)), item["mask"]
        )
    transformed = CarvanaDataset(CARVANA, transform=build_transforms(None, 128, False))[0]
    assert tuple(transformed["image"].shape) == (3, 128, 128)


@pytest.mark.skipif(not CARVANA.is_dir(), reason=f"real Carvana sample not found at {CARVANA}")
def test_real_carvana_prepare_reduced_matches_full(tmp_path):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in CARVANA.rglob("*.*")}
    reduced = prepare_carvana(CARVANA, tmp_path / "r", size=128, decode="reduced")
    prepare_carvana(CARVANA, tmp_path / "f", size=128, decode="full")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in CARVANA.rglob("*.*")}
    assert before == after
    assert (reduced.width == 1918).all() and (reduced.height == 1280).all()
    for row in reduced.itertuples():
        a = cv2.imread(str(tmp_path / "r" / row.image)).astype(int)
        b = cv2.imread(str(tmp_path / "f" / row.image)).astype(int)
        assert np.abs(a - b).mean() < 1.5
    prepared = CarvanaDataset(tmp_path / "r")
    assert len(prepared) == 5 and set(np.unique(prepared[0]["mask"]).tolist()) == {0, 1}
