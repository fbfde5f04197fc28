"""Synthetic generators refuse folders that already hold a user's files, unless overwrite=True."""

import hashlib
from pathlib import Path

import pytest

from segkit.data import synth_carvana, synth_helen
from segkit.errors import DataError

CAR = {"cars": 1, "views": 2, "size": (48, 32)}


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def user_file(path: Path, text: str = "real data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- helen -------------------------------------------------------------------------------


def test_helen_refuses_a_folder_holding_files(tmp_path):
    real = user_file(tmp_path / "helen" / "train" / "images" / "image_1.jpg")
    with pytest.raises(DataError, match="overwrite=True") as exc:
        synth_helen(tmp_path / "helen", n=2, size=16)
    message = str(exc.value)
    assert str(real.parent) in message and "image_1.jpg" in message
    assert "--overwrite" in message and "empty folder" in message and "\n" not in message
    assert real.read_text() == "real data"
    assert not (tmp_path / "helen" / "train" / "labels").exists()  # refused before writing


def test_helen_refuses_a_labels_folder_holding_files(tmp_path):
    real = user_file(tmp_path / "helen" / "train" / "labels" / "label_1.png")
    with pytest.raises(DataError, match="already holds files"):
        synth_helen(tmp_path / "helen", n=2, size=16)
    assert real.read_text() == "real data"
    assert not (tmp_path / "helen" / "train" / "images").exists()


def test_helen_official_layout_refuses_a_split_folder_holding_files(tmp_path):
    real = user_file(tmp_path / "release" / "train" / "100032540_1_image.jpg")
    with pytest.raises(DataError, match="already holds files") as exc:
        synth_helen(tmp_path / "release", n=2, size=16, layout="official")
    assert str(real.parent) in str(exc.value)
    assert [p.name for p in real.parent.iterdir()] == [real.name]


def test_helen_overwrite_writes_over_same_names_and_keeps_the_rest(tmp_path):
    root = tmp_path / "helen"
    clobbered = user_file(root / "train" / "images" / "image_1.jpg")
    kept = user_file(root / "train" / "images" / "notes.txt")
    synth_helen(root, n=2, size=16, overwrite=True)
    assert clobbered.read_bytes()[:2] == b"\xff\xd8"  # now a synthetic JPEG
    assert kept.read_text() == "real data"
    assert len(list((root / "train" / "labels").iterdir())) == 2


def test_helen_regenerating_needs_overwrite_and_gives_the_same_files(tmp_path):
    root = synth_helen(tmp_path / "helen", n=2, size=16)
    before = tree_hash(root)
    with pytest.raises(DataError, match="already holds files"):
        synth_helen(root, n=2, size=16)
    synth_helen(root, n=2, size=16, overwrite=True)
    assert tree_hash(root) == before


def test_helen_empty_folders_and_other_splits_are_fine(tmp_path):
    root = tmp_path / "helen"
    (root / "train" / "images").mkdir(parents=True)
    synth_helen(root, n=2, size=16)
    synth_helen(root, n=1, seed=1, size=16, split="test")  # a new split beside a written one
    assert len(list((root / "test" / "images").iterdir())) == 1


def test_helen_refuses_a_file_where_a_folder_goes(tmp_path):
    real = user_file(tmp_path / "helen" / "train")
    with pytest.raises(DataError, match="is a file, not a folder") as exc:
        synth_helen(tmp_path / "helen", n=1, size=16, overwrite=True)
    assert str(real) in str(exc.value) and real.read_text() == "real data"


# --- carvana -----------------------------------------------------------------------------


def test_carvana_refuses_an_image_folder_holding_files(tmp_path):
    real = user_file(tmp_path / "kaggle" / "train" / "0cdf5b5d0ce1_01.jpg")
    with pytest.raises(DataError, match="overwrite=True") as exc:
        synth_carvana(tmp_path / "kaggle", **CAR)
    message = str(exc.value)
    assert str(real.parent) in message and "0cdf5b5d0ce1_01.jpg" in message
    assert "--overwrite" in message and "\n" not in message
    assert [p.name for p in real.parent.iterdir()] == [real.name]  # no synthetic views beside
    assert not (tmp_path / "kaggle" / "train_masks").exists()


@pytest.mark.parametrize("mask_format", ["gif", "png"])
def test_carvana_refuses_a_mask_folder_holding_files(tmp_path, mask_format):
    real = user_file(tmp_path / "kaggle" / "train_masks" / "0cdf5b5d0ce1_01_mask.gif")
    with pytest.raises(DataError, match="already holds files") as exc:
        synth_carvana(tmp_path / "kaggle", mask_format=mask_format, **CAR)
    assert str(real.parent) in str(exc.value)
    assert not (tmp_path / "kaggle" / "train").exists()


def test_carvana_refuses_an_existing_rle_csv(tmp_path):
    real = user_file(tmp_path / "kaggle" / "train_masks.csv", "img,rle_mask\n")
    with pytest.raises(DataError, match="already exists") as exc:
        synth_carvana(tmp_path / "kaggle", mask_format="csv", **CAR)
    assert str(real) in str(exc.value) and "overwrite=True" in str(exc.value)
    assert real.read_text() == "img,rle_mask\n"
    assert not (tmp_path / "kaggle" / "train").exists()


def test_carvana_overwrite_adds_beside_real_views(tmp_path):
    real = user_file(tmp_path / "kaggle" / "train" / "0cdf5b5d0ce1_01.jpg")
    synth_carvana(tmp_path / "kaggle", overwrite=True, **CAR)
    names = sorted(p.name for p in real.parent.iterdir())
    assert names == ["0cdf5b5d0ce1_01.jpg", "synth0000_01.jpg", "synth0000_02.jpg"]
    assert real.read_text() == "real data"


def test_carvana_regenerating_needs_overwrite_and_gives_the_same_files(tmp_path):
    root = synth_carvana(tmp_path / "kaggle", **CAR)
    before = tree_hash(root)
    with pytest.raises(DataError, match="already holds files"):
        synth_carvana(root, **CAR)
    synth_carvana(root, overwrite=True, **CAR)
    assert tree_hash(root) == before


def test_carvana_other_split_and_empty_folders_are_fine(tmp_path):
    root = synth_carvana(tmp_path / "kaggle", **CAR)
    (root / "test").mkdir()
    synth_carvana(root, split="test", mask_format="csv", **CAR)
    assert (root / "test_masks.csv").is_file() and len(list((root / "test").iterdir())) == 2
