"""Carvana: Kaggle layout (GIF, PNG, RLE CSV), preparation, split by car, bad input."""

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segkit.data import (
    CarvanaDataset,
    build_dataset,
    decode_strategy,
    parse_carvana_id,
    prepare_carvana,
    read_mask,
    split_by_car,
    synth_carvana,
)
from segkit.data.io import DataNotFoundError, write_mask
from segkit.errors import DataError

SIZE = (192, 128)  # width, height: small stand-in for 1918x1280


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copy_tree(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            (dst / p.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            (dst / p.relative_to(src)).write_bytes(p.read_bytes())
    return dst


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory) -> Path:
    return synth_carvana(tmp_path_factory.mktemp("carvana") / "gif", cars=2, views=3, size=SIZE)


def test_synthetic_files_look_like_kaggle(kaggle):
    assert sorted(p.name for p in (kaggle / "train").iterdir())[:2] == [
        "synth0000_01.jpg",
        "synth0000_02.jpg",
    ]
    gif = Image.open(kaggle / "train_masks" / "synth0000_01_mask.gif")
    assert gif.format == "GIF" and gif.mode == "P" and gif.size == SIZE
    assert set(np.unique(np.asarray(gif))) == {0, 1}  # palette indices 0/1 like Kaggle's
    again = synth_carvana(kaggle.parent / "again", cars=2, views=3, size=SIZE)
    assert tree_hash(again) == tree_hash(kaggle)  # deterministic from the seed


@pytest.mark.parametrize("mask_format", ["gif", "png", "csv"])
def test_reads_kaggle_layout_with_any_mask_source(tmp_path, mask_format, kaggle):
    root = synth_carvana(
        tmp_path / mask_format, cars=2, views=3, size=SIZE, mask_format=mask_format
    )
    ds = CarvanaDataset(root)
    reference = CarvanaDataset(kaggle)
    assert ds.layout == "kaggle" and ds.task == "binary" and ds.class_names == ["background", "car"]
    assert [s.id for s in ds.samples] == [s.id for s in reference.samples]
    for i in (0, 4):
        item = ds[i]
        assert item["image"].shape == (SIZE[1], SIZE[0], 3)
        assert item["mask"].dtype == np.int64 and set(np.unique(item["mask"])) == {0, 1}
        np.testing.assert_array_equal(item["mask"], reference[i]["mask"])


def test_registered_as_carvana_and_ids(kaggle):
    ds = build_dataset("carvana", kaggle, "train", ids=["synth0001_02"])
    assert [s.id for s in ds.samples] == ["synth0001_02"]


def test_parse_id():
    assert parse_carvana_id("0cdf5b5d0ce1_03") == ("0cdf5b5d0ce1", 3)
    assert parse_carvana_id("synth_0001_16") == ("synth_0001", 16)
    with pytest.raises(DataError, match="<car id>_<view number>"):
        parse_carvana_id("photo")


# --- split by car ------------------------------------------------------------------------


def test_split_by_car_keeps_cars_together_and_is_reproducible():
    ids = [f"car{c:02d}_{v:02d}" for c in range(10) for v in range(1, 17)]
    train, val = split_by_car(ids, val_fraction=0.2, seed=0)
    train_cars = {parse_carvana_id(i)[0] for i in train}
    val_cars = {parse_carvana_id(i)[0] for i in val}
    assert not train_cars & val_cars
    assert len(val_cars) == 2 and len(val) == 32 and len(train) + len(val) == len(ids)
    assert split_by_car(ids, 0.2, seed=0) == (train, val)
    assert any(split_by_car(ids, 0.2, seed=s)[1] != val for s in range(1, 5))
    assert train == [i for i in ids if i in set(train)]  # input order kept


def test_split_by_car_bad_input():
    with pytest.raises(DataError, match="at least two cars"):
        split_by_car(["a_01", "a_02"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_car(["a_01", "b_01"], val_fraction=1.0)


# --- preparation -------------------------------------------------------------------------


def test_decode_strategy_picks_the_largest_safe_reduction():
    assert decode_strategy("reduced", 1918, 1280, 128) == cv2.IMREAD_REDUCED_COLOR_8  # 240x160
    assert decode_strategy("reduced", 1918, 1280, 160) == cv2.IMREAD_REDUCED_COLOR_8
    assert decode_strategy("reduced", 1918, 1280, 161) == cv2.IMREAD_REDUCED_COLOR_4  # 480x320
    assert decode_strategy("reduced", 1918, 1280, 320) == cv2.IMREAD_REDUCED_COLOR_4
    assert decode_strategy("reduced", 1918, 1280, 640) == cv2.IMREAD_REDUCED_COLOR_2
    assert decode_strategy("reduced", 1918, 1280, 641) == cv2.IMREAD_COLOR
    assert decode_strategy("full", 1918, 1280, 128) == cv2.IMREAD_COLOR
    with pytest.raises(ValueError, match="reduced"):
        decode_strategy("fast", 10, 10, 1)


def test_prepare_writes_sizes_binary_masks_and_index(kaggle, tmp_path):
    before = tree_hash(kaggle)
    index = prepare_carvana(kaggle, tmp_path / "p64", size=64, workers=2)
    assert tree_hash(kaggle) == before  # the source is never modified
    assert list(index.columns) == [
        "id", "car_id", "view", "image", "mask", "width", "height", "split"
    ]  # fmt: skip
    assert len(index) == 6 and index.attrs == {"written": 6, "skipped": 0}
    assert (index.width == SIZE[0]).all() and (index.height == SIZE[1]).all()
    on_disk = pd.read_csv(tmp_path / "p64" / "index.csv", dtype={"id": str})
    pd.testing.assert_frame_equal(on_disk, index, check_dtype=False)
    for row in index.itertuples():
        image = cv2.imread(str(tmp_path / "p64" / row.image))
        mask = read_mask(tmp_path / "p64" / row.mask)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask)) == {0, 1}
    assert not list((tmp_path / "p64").rglob("*.tmp"))
    ds = CarvanaDataset(tmp_path / "p64")
    assert ds.layout == "prepared" and len(ds) == 6 and ds[0]["image"].shape == (64, 64, 3)


def test_prepared_mask_is_the_pixel_centre_resize_of_the_source(kaggle, tmp_path):
    prepare_carvana(kaggle, tmp_path / "p", size=32, workers=1)
    source = read_mask(kaggle / "train_masks" / "synth0001_03_mask.gif") // 255
    expected = cv2.resize(source, (32, 32), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(
        read_mask(tmp_path / "p" / "masks" / "synth0001_03.png"), expected
    )


def test_prepare_is_idempotent_resumable_and_overwritable(kaggle, tmp_path):
    dst = tmp_path / "p"
    prepare_carvana(kaggle, dst, size=32, workers=2)
    stamp = {p: p.stat().st_mtime_ns for p in (dst / "images").iterdir()}
    again = prepare_carvana(kaggle, dst, size=32, workers=2)
    assert again.attrs == {"written": 0, "skipped": 6}
    assert {p: p.stat().st_mtime_ns for p in (dst / "images").iterdir()} == stamp
    (dst / "masks" / "synth0000_02.png").unlink()  # as if interrupted before this pair
    assert prepare_carvana(kaggle, dst, size=32).attrs == {"written": 1, "skipped": 5}
    assert prepare_carvana(kaggle, dst, size=32, overwrite=True).attrs["written"] == 6


def test_prepare_at_another_size_redoes_the_pairs(kaggle, tmp_path):
    dst = tmp_path / "p"
    prepare_carvana(kaggle, dst, size=32, workers=2)
    assert prepare_carvana(kaggle, dst, size=48, workers=2).attrs == {"written": 6, "skipped": 0}
    for name in ("images", "masks"):
        assert {cv2.imread(str(p)).shape[:2] for p in (dst / name).iterdir()} == {(48, 48)}
    assert CarvanaDataset(dst)[0]["image"].shape == (48, 48, 3)


def test_reduced_and_full_decoding_agree(tmp_path):
    src = synth_carvana(tmp_path / "big", cars=1, views=2, size=(576, 384))
    reduced = prepare_carvana(src, tmp_path / "r", size=32, decode="reduced")
    prepare_carvana(src, tmp_path / "f", size=32, decode="full")
    for row in reduced.itertuples():
        a = cv2.imread(str(tmp_path / "r" / row.image)).astype(int)
        b = cv2.imread(str(tmp_path / "f" / row.image)).astype(int)
        assert np.abs(a - b).mean() < 2.0


def test_prepare_from_rle_csv_matches_gif(kaggle, tmp_path):
    csv_root = synth_carvana(tmp_path / "csv", cars=2, views=3, size=SIZE, mask_format="csv")
    prepare_carvana(csv_root, tmp_path / "from_csv", size=32)
    prepare_carvana(kaggle, tmp_path / "from_gif", size=32)
    assert tree_hash(tmp_path / "from_csv" / "masks") == tree_hash(tmp_path / "from_gif" / "masks")


def test_prepared_split_is_checked(kaggle, tmp_path):
    prepare_carvana(kaggle, tmp_path / "p", size=32)
    with pytest.raises(DataError, match=r"holds the split\(s\) \['train'\], not 'test'"):
        CarvanaDataset(tmp_path / "p", split="test")


def test_prepare_bad_arguments(kaggle, tmp_path):
    with pytest.raises(ValueError, match="size"):
        prepare_carvana(kaggle, tmp_path / "x", size=0)
    with pytest.raises(ValueError, match="decode"):
        prepare_carvana(kaggle, tmp_path / "x", decode="turbo")
    with pytest.raises(DataError, match="is the source"):
        prepare_carvana(kaggle, kaggle)


# --- bad input ---------------------------------------------------------------------------


def test_missing_empty_and_unrecognised_roots(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as exc:
        CarvanaDataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is empty") as exc:
        CarvanaDataset(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(exc.value)
    (tmp_path / "odd" / "pictures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"No Carvana layout.*kaggle.*prepared") as exc:
        CarvanaDataset(tmp_path / "odd")
    assert str(tmp_path / "odd") in str(exc.value) and "pictures" in str(exc.value)


def test_no_masks_at_all(tmp_path, kaggle):
    root = copy_tree(kaggle / "train", tmp_path / "k" / "train").parent
    with pytest.raises(DataNotFoundError, match=r"train_masks.*train_masks.csv"):
        CarvanaDataset(root)


def test_unpaired_files_are_named(tmp_path, kaggle):
    root = copy_tree(kaggle, tmp_path / "k")
    (root / "train_masks" / "synth0000_01_mask.gif").unlink()
    with pytest.raises(DataError, match=r"synth0000_01.jpg"):
        CarvanaDataset(root)
    with pytest.raises(DataError, match=r"synth0000_01.jpg"):
        prepare_carvana(root, tmp_path / "p")
    (root / "train" / "synth0000_01.jpg").unlink()
    (root / "train" / "synth0000_02.jpg").unlink()
    with pytest.raises(DataError, match=r"synth0000_02_mask.gif"):
        CarvanaDataset(root)


def test_mask_values_0_255_are_accepted_but_other_values_are_not(tmp_path, kaggle):
    root = copy_tree(kaggle, tmp_path / "k")
    mask = (read_mask(root / "train_masks" / "synth0000_01_mask.gif") > 0).astype(np.uint8)
    path = root / "train_masks" / "synth0000_01_mask.gif"
    path.unlink()
    write_mask(path.with_suffix(".png"), mask * 255)
    np.testing.assert_array_equal(CarvanaDataset(root)[0]["mask"], mask)
    mask[0, :5] = 7
    write_mask(path.with_suffix(".png"), mask)
    with pytest.raises(DataError, match=r"synth0000_01_mask.png.*not binary.*7"):
        CarvanaDataset(root)[0]
    with pytest.raises(DataError, match=r"synth0000_01_mask.png.*not binary"):
        prepare_carvana(root, tmp_path / "p", size=16)


def test_truncated_photo_and_size_mismatch(tmp_path, kaggle):
    root = copy_tree(kaggle, tmp_path / "k")
    photo = root / "train" / "synth0000_02.jpg"
    photo.write_bytes(photo.read_bytes()[:-300])
    with pytest.raises(DataError, match="synth0000_02.jpg"):
        CarvanaDataset(root)[1]
    with pytest.raises(DataError, match="synth0000_02.jpg"):
        prepare_carvana(root, tmp_path / "p", size=16)
    write_mask(root / "train_masks" / "synth0000_03_mask.png", np.zeros((10, 10), np.uint8))
    (root / "train_masks" / "synth0000_03_mask.gif").unlink()
    with pytest.raises(DataError, match=r"synth0000_03.jpg.*synth0000_03_mask.png"):
        CarvanaDataset(root)[2]


def test_prepared_index_missing_files(tmp_path, kaggle):
    prepare_carvana(kaggle, tmp_path / "p", size=16)
    (tmp_path / "p" / "images" / "synth0001_01.png").unlink()
    with pytest.raises(DataNotFoundError, match=r"synth0001_01.png.*prepare_carvana"):
        CarvanaDataset(tmp_path / "p")


def test_prepared_index_without_rows(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "index.csv").write_text("id,car_id,view,image,mask\n")
    with pytest.raises(DataError, match="lists no samples"):
        CarvanaDataset(tmp_path / "p")
    (tmp_path / "p" / "index.csv").write_text("name,file\nx,y\n")
    with pytest.raises(DataError, match="not written by prepare_carvana"):
        CarvanaDataset(tmp_path / "p")


def test_prepare_refuses_dst_inside_the_source(kaggle, tmp_path):
    before = tree_hash(kaggle)
    for dst in (kaggle / "train", kaggle / "prepared"):
        with pytest.raises(DataError, match="is inside the source") as exc:
            prepare_carvana(kaggle, dst, size=16)
        assert str(dst) in str(exc.value) and str(kaggle) in str(exc.value)
    assert tree_hash(kaggle) == before  # nothing written into the source
    assert not (kaggle / "prepared").exists() and not (kaggle / "images").exists()


def test_prepare_refuses_dst_inside_the_source_through_a_symlink(kaggle, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(kaggle, target_is_directory=True)
    with pytest.raises(DataError, match="is inside the source"):
        prepare_carvana(kaggle, link / "prepared", size=16)
    assert not (kaggle / "prepared").exists()


def test_prepare_refuses_dst_holding_the_source(kaggle, tmp_path):
    src = copy_tree(kaggle, tmp_path / "outer" / "kaggle")
    with pytest.raises(DataError, match="holds the source") as exc:
        prepare_carvana(src, tmp_path / "outer", size=16)
    assert str(tmp_path / "outer") in str(exc.value) and str(src) in str(exc.value)
    assert sorted(p.name for p in (tmp_path / "outer").iterdir()) == ["kaggle"]


def test_a_config_pointed_at_a_prepared_folder_uses_it_as_it_is(kaggle, tmp_path):
    """Issue 18, bug 1: the example's prepare_size on a folder `segkit prepare` wrote."""
    from segkit.api import resolve_data_root
    from segkit.config import load_config

    dst = tmp_path / "prepared"
    prepare_carvana(kaggle, dst, size=32, workers=2)
    before = tree_hash(dst)
    example = Path(__file__).resolve().parents[1] / "examples/carvana_single_class/config.yaml"
    cfg = load_config(example, [f"data.root={dst}", "data.prepare_size=32"])
    assert resolve_data_root(cfg.data) == dst
    assert tree_hash(dst) == before  # nothing prepared a second time
    assert not (tmp_path / "prepared_prepared32").exists()
    cfg.data.prepare_size = None
    assert resolve_data_root(cfg.data) == dst


def test_a_prepared_folder_at_another_size_says_what_to_do(kaggle, tmp_path):
    from segkit.api import resolve_data_root
    from segkit.config import DataConfig

    dst = tmp_path / "prepared"
    prepare_carvana(kaggle, dst, size=32, workers=2)
    data = DataConfig(dataset="carvana", root=str(dst), prepare_size=128)
    with pytest.raises(DataError, match=r"prepared at 32x32.*data.prepare_size=32 \(or null\)"):
        resolve_data_root(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]
