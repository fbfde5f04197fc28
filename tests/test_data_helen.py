"""Helen: both layouts on synthetic faces, pairing, preparation, the label-aware flip, bad input."""

import hashlib
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest

from segkit.data import (
    HELEN_CLASSES,
    HELEN_FLIP_PAIRS,
    HelenDataset,
    LabelAwareHorizontalFlip,
    build_dataset,
    prepare_helen,
    synth_helen,
)
from segkit.data.io import DataNotFoundError, write_mask
from segkit.errors import DataError

SIZE = 48


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def helen_split(tmp_path_factory) -> Path:
    return synth_helen(tmp_path_factory.mktemp("helen") / "split", n=4, size=SIZE)


@pytest.fixture(scope="module")
def helen_official(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("helen") / "helenstar_release"
    synth_helen(root, n=3, size=SIZE, layout="official", split="train")
    synth_helen(root, n=2, seed=1, size=SIZE, layout="official", split="test")
    return root


def test_class_names_and_flip_pairs():
    assert HELEN_CLASSES == [
        "bg", "face", "lb", "rb", "le", "re", "nose", "ulip", "imouth", "llip", "hair"
    ]  # fmt: skip
    assert [(HELEN_CLASSES[a], HELEN_CLASSES[b]) for a, b in HELEN_FLIP_PAIRS] == [
        ("lb", "rb"),
        ("le", "re"),
    ]


@pytest.mark.parametrize("layout", ["split", "official"])
def test_reads_both_layouts(layout, helen_split, helen_official):
    root = helen_split if layout == "split" else helen_official
    ds = HelenDataset(root, "train")
    assert ds.layout == layout
    assert len(ds) == (4 if layout == "split" else 3)
    assert ds.task == "multiclass" and ds.class_names == HELEN_CLASSES
    item = ds[0]
    assert item["image"].shape == (SIZE, SIZE, 3) and item["image"].dtype == np.uint8
    assert item["mask"].shape == (SIZE, SIZE) and item["mask"].dtype == np.int64
    assert set(np.unique(item["mask"])) == set(range(11))  # every class is drawn
    assert Path(item["image_path"]).is_file()


def test_ids_and_viz_files_ignored(helen_split, helen_official):
    assert [s.id for s in HelenDataset(helen_split).samples] == [f"image_{i}" for i in (1, 2, 3, 4)]
    official = HelenDataset(helen_official, "test")
    assert [s.id for s in official.samples] == ["synth0001_1", "synth0002_1"]
    assert all("_viz" not in str(s.image_path) for s in official.samples)
    subset = HelenDataset(helen_split, ids=["image_3", "image_1"])
    assert [s.id for s in subset.samples] == ["image_3", "image_1"]
    with pytest.raises(DataError, match="image_99"):
        HelenDataset(helen_split, ids=["image_99"])


def test_synthetic_faces_are_left_right_consistent(helen_split):
    """lb/le sit on the viewer's left (smaller x) of rb/re, as in the real labels."""
    for item in HelenDataset(helen_split):
        xs = {c: np.nonzero(item["mask"] == c)[1].mean() for c in (2, 3, 4, 5)}
        assert xs[2] < xs[3] and xs[4] < xs[5]


def test_split_layout_pairs_by_number_not_sort_order(tmp_path):
    images, labels = tmp_path / "train" / "images", tmp_path / "train" / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    for n in (1, 2, 10, 11):  # lexical order 1, 10, 11, 2; .png next to .jpg
        ext = ".png" if n == 10 else ".jpg"
        cv2.imwrite(str(images / f"image_{n}{ext}"), np.full((8, 8, 3), n * 20, np.uint8))
        write_mask(labels / f"label_{n}.png", np.full((8, 8), n % 11, np.uint8))
    ds = HelenDataset(tmp_path, "train")
    assert [s.id for s in ds.samples] == ["image_1", "image_2", "image_10", "image_11"]
    for item in ds:
        n = int(item["id"].split("_")[1])
        assert abs(int(item["image"][0, 0, 0]) - n * 20) <= 2  # JPEG rounding
        assert item["mask"][0, 0] == n % 11


def test_registered_as_helen(helen_split):
    ds = build_dataset("helen", helen_split, "train")
    assert isinstance(ds, HelenDataset) and len(ds) == 4


def test_label_aware_flip_swaps_left_and_right(helen_split):
    ds = HelenDataset(
        helen_split, transform=A.Compose([LabelAwareHorizontalFlip(HELEN_FLIP_PAIRS, p=1)])
    )
    raw = HelenDataset(helen_split)[0]
    flipped = ds[0]
    expected = raw["mask"][:, ::-1].copy()
    for a, b in HELEN_FLIP_PAIRS:  # independent reference: swap via a copy
        expected[raw["mask"][:, ::-1] == a] = b
        expected[raw["mask"][:, ::-1] == b] = a
    np.testing.assert_array_equal(flipped["mask"].numpy(), expected)
    # the flipped face keeps lb on the viewer's left, which a plain flip would break
    xs = {c: np.nonzero(flipped["mask"].numpy() == c)[1].mean() for c in (2, 3)}
    assert xs[2] < xs[3]
    plain = A.Compose([A.HorizontalFlip(p=1)])(image=raw["image"], mask=raw["mask"])["mask"]
    assert np.nonzero(plain == 2)[1].mean() > np.nonzero(plain == 3)[1].mean()


def test_flip_rejects_bad_pairs():
    with pytest.raises(ValueError, match="at most once"):
        LabelAwareHorizontalFlip([(2, 3), (3, 4)])
    with pytest.raises(ValueError, match="0..255"):
        LabelAwareHorizontalFlip([(2, 300)])


def test_prepare_helen_copies_official_into_split_layout(helen_official, tmp_path):
    before = tree_hash(helen_official)
    dst = prepare_helen(helen_official, tmp_path / "prepared")
    assert tree_hash(helen_official) == before  # the source is never touched
    for split, n in (("train", 3), ("test", 2)):
        prepared, original = HelenDataset(dst, split), HelenDataset(helen_official, split)
        assert prepared.layout == "split" and len(prepared) == n
        for a, b in zip(prepared, original):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["mask"], b["mask"])
        assert prepared.samples[0].id == f"image_{original.samples[0].id}"  # names traceable
    assert not list(dst.rglob("*_viz*"))
    mtime = (dst / "train" / "labels" / "label_synth0001_1.png").stat().st_mtime_ns
    prepare_helen(helen_official, dst)  # second run: nothing to copy
    assert (dst / "train" / "labels" / "label_synth0001_1.png").stat().st_mtime_ns == mtime


def test_prepare_helen_bad_input(helen_official, tmp_path):
    with pytest.raises(DataError, match="out' is inside the source .* only read"):
        prepare_helen(helen_official, helen_official / "out")
    with pytest.raises(DataError, match="holds the source"):
        prepare_helen(helen_official, helen_official.parent)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(DataError, match="official Helen layout"):
        prepare_helen(tmp_path / "other", tmp_path / "dst")
    with pytest.raises(DataNotFoundError):
        prepare_helen(tmp_path / "missing", tmp_path / "dst")


# --- bad input ---------------------------------------------------------------------------


def test_missing_root_and_split(tmp_path, helen_split):
    with pytest.raises(FileNotFoundError, match="does not exist") as exc:
        HelenDataset(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value) and "Check the path" in str(exc.value)
    with pytest.raises(DataNotFoundError, match=r"no split folder 'val'.*train"):
        HelenDataset(helen_split, "val")
    with pytest.raises(DataNotFoundError, match="looks like a split folder itself"):
        HelenDataset(helen_split / "train", "train")


def test_empty_root(tmp_path):
    with pytest.raises(DataError, match="is empty") as exc:
        HelenDataset(tmp_path)
    assert str(tmp_path) in str(exc.value) and "docs/data.md" in str(exc.value)


def test_unrecognised_layout_names_both_layouts(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"No Helen layout.*official.*split") as exc:
        HelenDataset(tmp_path)
    assert "photo.jpg" in str(exc.value) and str(tmp_path / "train") in str(exc.value)


def _copy_split(src: Path, dst: Path) -> Path:
    for p in src.rglob("*"):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(p.read_bytes())
    return dst


def test_images_without_labels_are_named_up_to_five(tmp_path):
    root = synth_helen(tmp_path / "h", n=8, size=16)
    for n in range(1, 8):
        (root / "train" / "labels" / f"label_{n}.png").unlink()
    with pytest.raises(DataError, match=r"7 image\(s\).*have no label.*and 2 more"):
        HelenDataset(root)


def test_label_without_image(tmp_path):
    root = synth_helen(tmp_path / "h", n=2, size=16, layout="official")
    (root / "train" / "synth0002_1_image.jpg").unlink()
    with pytest.raises(DataError, match=r"synth0002_1_label.png"):
        HelenDataset(root)


def test_truncated_image_is_an_error_naming_it(tmp_path, helen_split):
    root = _copy_split(helen_split, tmp_path / "h")
    path = root / "train" / "images" / "image_2.jpg"
    path.write_bytes(path.read_bytes()[:300])
    ds = HelenDataset(root)
    ds[0]  # the intact ones still load
    with pytest.raises(DataError, match="image_2.jpg"):
        ds[1]


def test_size_mismatch_names_both_files(tmp_path, helen_split):
    root = _copy_split(helen_split, tmp_path / "h")
    write_mask(root / "train" / "labels" / "label_1.png", np.zeros((SIZE, SIZE + 2), np.uint8))
    with pytest.raises(DataError, match=r"image_1.jpg.*label_1.png.*nearest"):
        HelenDataset(root)[0]


def test_label_holding_255_is_an_error(tmp_path, helen_split):
    root = _copy_split(helen_split, tmp_path / "h")
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[0, 0] = 255
    write_mask(root / "train" / "labels" / "label_1.png", mask)
    with pytest.raises(DataError, match=r"label_1.png.*255.*outside 0..10"):
        HelenDataset(root)[0]


def test_rgb_label_image_is_an_error(tmp_path, helen_split):
    root = _copy_split(helen_split, tmp_path / "h")
    colour = np.zeros((SIZE, SIZE, 3), np.uint8)
    colour[..., 2] = 200
    cv2.imwrite(str(root / "train" / "labels" / "label_1.png"), colour)
    with pytest.raises(DataError, match=r"label_1.png.*colour"):
        HelenDataset(root)[0]
