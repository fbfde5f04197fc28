"""Layouts of real public data sets, read from the config alone (issue 25 items 5-7): Dubai's
tiles (several roots, repeated file names), BUSI (masks beside their images, several masks of
one image, one of another size), real split folders and split lists; and the docs/data.md
configs for them, loaded against synthetic copies of those layouts."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segkit.api import build_datasets
from segkit.api.data import scoring_split
from segkit.cli import main
from segkit.config import load_config
from segkit.data import build_dataset
from segkit.data.io import write_image, write_mask
from segkit.errors import DataError

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"

#: Dubai's six classes and colours (its classes.json), in class id order
DUBAI = {
    "Unlabeled": (155, 155, 155),
    "Water": (226, 169, 41),
    "Land (unpaved area)": (132, 41, 246),
    "Road": (110, 193, 228),
    "Building": (60, 16, 152),
    "Vegetation": (254, 221, 58),
}
TILES = (1, 2, 10)  # "Tile 10" sorts after "Tile 2"


def _doc_block(first_line: str, language: str = "yaml") -> str:
    """The code block of docs/data.md in ``language`` ("": plain) that starts with ``first_line``."""
    blocks, lines, open_as = [], [], None
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            if open_as is None:
                open_as, lines = line[3:].strip(), []
            else:
                blocks.append((open_as, "\n".join(lines) + "\n"))
                open_as = None
        elif open_as is not None:
            lines.append(line)
    for lang, block in blocks:
        if lang == language and block.startswith(first_line):
            return block
    raise AssertionError(f"docs/data.md has no {language or 'plain'} block {first_line!r}")


def _doc_yaml(first_line: str) -> str:
    return _doc_block(first_line, "yaml")


def _picture(label: np.ndarray) -> np.ndarray:
    """An RGB image that shows its label (so a wrong pairing would be visible)."""
    return np.repeat((label * 40 + 20).astype(np.uint8)[..., None], 3, axis=2)


def dubai_label(tile: int, part: int) -> np.ndarray:
    """The label map of one Dubai tile's part: different in every tile and part."""
    label = np.zeros((16, 24), np.uint8)
    label[:, : 4 * part] = tile % 6
    label[8:, 12:] = (tile + part) % 6
    return label


def make_dubai(root: Path) -> Path:
    """``Tile N/images/image_part_00K.jpg`` + ``Tile N/masks/image_part_00K.png`` (colours),
    the same names in every tile, and the class table in the root."""
    colors = np.array(list(DUBAI.values()), np.uint8)
    for tile in TILES:
        for part in (1, 2):
            label = dubai_label(tile, part)
            name = f"image_part_00{part}"
            write_image(root / f"Tile {tile}" / "images" / f"{name}.jpg", _picture(label))
            write_image(root / f"Tile {tile}" / "masks" / f"{name}.png", colors[label])
    rows = [f"{name},{r},{g},{b}" for name, (r, g, b) in DUBAI.items()]
    (root / "class_dict.csv").write_text("name,r,g,b\n" + "\n".join(rows) + "\n")
    return root


BUSI = {"benign": 3, "malignant": 2, "normal": 1}


def busi_masks(kind: str, n: int) -> list[np.ndarray]:
    """The 0/255 masks of ``<kind> (<n>)``: a second one for ``benign (2)``, none lit in normal."""
    first = np.zeros((20, 30), np.uint8)
    if kind != "normal":
        first[2 : 6 + n, 3 : 8 + 2 * n] = 255
    if (kind, n) != ("benign", 2):
        return [first]
    second = np.zeros_like(first)
    second[12:18, 20:28] = 255
    return [first, second]


def make_busi(root: Path, odd_size: bool = False) -> Path:
    """``benign/benign (1).png`` beside ``benign (1)_mask.png``; ``benign (2)_mask_1.png`` too
    (with ``odd_size``: at half the image's size, as one of BUSI's extra masks is not its
    image's size)."""
    for kind, count in BUSI.items():
        for n in range(1, count + 1):
            masks = busi_masks(kind, n)
            write_image(root / kind / f"{kind} ({n}).png", _picture(masks[0] // 255))
            for i, mask in enumerate(masks):
                suffix = "_mask" if i == 0 else f"_mask_{i}"
                if i and odd_size:
                    mask = mask[::2, ::2]
                write_mask(root / kind / f"{kind} ({n}){suffix}.png", mask)
    return root


BUSI_OPTIONS = {
    "roots": ["benign", "malignant", "normal"],
    "images": ".",
    "masks": ".",
    "mask_suffix": "_mask",
}


# ---- item 5: several roots, repeated names, masks by suffix ---------------------------------


def test_dubai_tiles_read_as_one_set_with_unique_ids_and_right_pairs(tmp_path):
    root = make_dubai(tmp_path / "Semantic segmentation dataset")
    ds = build_dataset("color_masks", root, None, roots="Tile *")
    expected = [f"Tile {t}/image_part_00{p}" for t in TILES for p in (1, 2)]
    assert [s.id for s in ds.samples] == expected  # natural order, unique across tiles
    assert ds.class_names == list(DUBAI)
    for sample in ds.samples:
        tile, name = sample.id.split("/")
        assert sample.image_path == root / tile / "images" / f"{name}.jpg"
        assert sample.mask_path == root / tile / "masks" / f"{name}.png"
    for i, sample in enumerate(ds.samples):
        tile, part = int(sample.id[5 : sample.id.index("/")]), int(sample.id[-1])
        image, mask, _ = ds.read(i)
        assert np.array_equal(mask, dubai_label(tile, part)), sample.id
    # a list of roots, one a glob, gives the same; a folder named twice counts once
    listed = build_dataset("color_masks", root, None, roots=["Tile 1", "Tile [12]*"])
    assert [s.id for s in listed.samples] == expected


def test_busi_masks_beside_their_images_pair_by_suffix(tmp_path):
    root = make_busi(tmp_path / "Dataset_BUSI_with_GT")
    (root / "benign" / "benign (2)_mask_1.png").unlink()  # one mask each here
    ds = build_dataset("folder", root, None, **BUSI_OPTIONS)
    ids = [s.id for s in ds.samples]
    assert ids == [
        "benign/benign (1)",
        "benign/benign (2)",
        "benign/benign (3)",
        "malignant/malignant (1)",
        "malignant/malignant (2)",
        "normal/normal (1)",
    ]
    for i, sample in enumerate(ds.samples):  # no mask was taken as an image
        kind, name = sample.id.split("/")
        assert sample.image_path.name == f"{name}.png"
        assert sample.mask_path.name == f"{name}_mask.png" and not sample.extra_masks
        n = int(name[name.index("(") + 1 : -1])
        _, mask, _ = ds.read(i)
        assert np.array_equal(mask, busi_masks(kind, n)[0] // 255)
    assert ds.task == "binary"


def test_layout_options_that_cannot_work_are_one_line_each(tmp_path):
    root = make_busi(tmp_path / "busi")
    with pytest.raises(DataError, match=r"images and masks are one folder .*set mask_suffix"):
        build_dataset("folder", root, None, roots="*", images=".", masks=".")
    with pytest.raises(DataError, match=r"roots entry 'Tile \*' matches no folder .*benign/"):
        build_dataset("folder", root, None, **{**BUSI_OPTIONS, "roots": "Tile *"})
    with pytest.raises(DataError, match=r"roots entry '\.\./x' must be a folder .* inside"):
        build_dataset("folder", root, None, **{**BUSI_OPTIONS, "roots": "../x"})
    with pytest.raises(DataError, match=r"merge_masks must be union"):
        build_dataset("folder", root, None, **BUSI_OPTIONS, merge_masks="max")
    with pytest.raises(DataError, match=r"merge_masks needs a mask_suffix"):
        build_dataset("folder", root, None, roots="*", merge_masks="union")
    (root / "malignant" / "malignant (2)_mask.png").unlink()
    with pytest.raises(
        DataError, match=r"1 image\(s\) in .*malignant' have no mask: malignant \(2\)"
    ):
        build_dataset("folder", root, None, **BUSI_OPTIONS, merge_masks="union")


# ---- item 6: several masks of one image --------------------------------------------------


def test_several_masks_of_one_image_need_merge_masks(tmp_path):
    root = make_busi(tmp_path / "busi")
    with pytest.raises(
        DataError,
        match=r"1 image\(s\) in .*benign' have several masks, e.g. 'benign \(2\)': "
        r"benign \(2\)_mask\.png, benign \(2\)_mask_1\.png\. Set data\.options\.merge_masks: union",
    ):
        build_dataset("folder", root, None, **BUSI_OPTIONS)


def test_merge_masks_union_reads_the_union_of_the_objects(tmp_path):
    root = make_busi(tmp_path / "busi")
    ds = build_dataset("folder", root, None, **BUSI_OPTIONS, merge_masks="union")
    ids = [s.id for s in ds.samples]
    assert len(ids) == 6 and "benign/benign (2)" in ids  # the extra mask is no image
    sample = ds.samples[ids.index("benign/benign (2)")]
    assert [p.name for p in sample.extra_masks] == ["benign (2)_mask_1.png"]
    first, second = busi_masks("benign", 2)
    _, mask, _ = ds.read(ids.index("benign/benign (2)"))
    expected = ((first > 0) | (second > 0)).astype(np.uint8)
    assert np.array_equal(mask, expected) and mask[14, 22] == 1 and mask[3, 4] == 1


def test_an_extra_mask_of_another_size_is_one_line_or_resized(tmp_path):
    root = make_busi(tmp_path / "busi", odd_size=True)
    ds = build_dataset("folder", root, None, **BUSI_OPTIONS, merge_masks="union")
    at = [s.id for s in ds.samples].index("benign/benign (2)")
    with pytest.raises(
        DataError,
        match=r"Image '.*benign \(2\)\.png' is 30x20 but its mask '.*benign \(2\)_mask_1\.png' "
        r"is 15x10 \(width x height\)\. Set data\.options\.resize_masks: true",
    ):
        ds.read(at)
    ds = build_dataset("folder", root, None, **BUSI_OPTIONS, merge_masks="union", resize_masks=True)
    first, second = busi_masks("benign", 2)
    upsampled = np.repeat(np.repeat(second[::2, ::2], 2, axis=0), 2, axis=1)  # nearest, x2
    _, mask, _ = ds.read(at)
    assert np.array_equal(mask, ((first > 0) | (upsampled > 0)).astype(np.uint8))


def test_resize_masks_takes_the_label_at_each_pixel_centre(tmp_path):
    """A mask twice its image's size: pixel (i, j) takes the mask's (2i + 1, 2j + 1), the
    label at its centre, as training's Resize shrinks masks (INTER_NEAREST took 2i, 2j)."""
    from segkit.data.base import Sample
    from segkit.data.pairs import read_masks

    big = np.arange(64, dtype=np.uint8).reshape(8, 8)
    sample = Sample("a", tmp_path / "a.png", tmp_path / "a_mask.png")
    mask = read_masks(sample, (4, 4), lambda path: big, resize=True)
    assert np.array_equal(mask, big[1::2, 1::2])


# ---- item 7: real split folders, lists, the root itself ------------------------------------


def make_city(root: Path) -> Path:
    """``train/`` and ``val/`` side by side, each ``images/`` + ``masks/`` (3 classes)."""
    for split, names in (("train", ["aachen_1", "aachen_2", "bochum_1"]), ("val", ["lindau_1"])):
        for i, name in enumerate(names):
            label = np.zeros((16, 16), np.uint8)
            label[: 4 + 3 * i] = 1
            label[12:, 8:] = 2
            write_image(root / split / "images" / f"{name}.png", _picture(label))
            write_mask(root / split / "masks" / f"{name}.png", label)
    return root


def _cfg(tmp_path: Path, text: str, root: Path, *overrides: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return load_config(path, [f"data.root={root}", *overrides])


def test_val_split_names_the_real_val_folder(tmp_path):
    root = make_city(tmp_path / "city")
    cfg = _cfg(tmp_path, _doc_yaml("# city.yaml"), root)
    train, val = build_datasets(cfg)
    assert [s.id for s in train.samples] == ["aachen_1", "aachen_2", "bochum_1"]
    assert [s.id for s in val.samples] == ["lindau_1"]
    assert val.samples[0].image_path == root / "val" / "images" / "lindau_1.png"
    assert scoring_split(cfg.data, "val", root) == "val"  # evaluate --split val: the folder


def test_without_val_split_val_is_the_held_out_part_and_dot_slash_the_folder(tmp_path):
    root = make_city(tmp_path / "city")
    cfg = _cfg(tmp_path, _doc_yaml("# city.yaml"), root, "data.val_split=null")
    with pytest.warns(UserWarning, match=r"holds a val/ folder too; .*split=\./val"):
        assert scoring_split(cfg.data, "val", root) is None  # the held-out part
    with pytest.warns(UserWarning, match="held out"):
        assert scoring_split(cfg.data, None, root) is None  # test_split: val, the same
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scoring_split(cfg.data, "./val", root) == "val"
        assert scoring_split(cfg.data, "val/", root) == "val"
        assert scoring_split(cfg.data, "train", root) == "train"
        cfg.data.train_split = "val"  # the held-out part is val/'s own: no other val/
        assert scoring_split(cfg.data, "val", root) is None
        cfg.data.train_split = "train"
        (root / "val").rename(root / "valid")
        assert scoring_split(cfg.data, "val", root) is None  # no val/ folder: no warning


def test_a_split_can_be_a_list_file_or_the_root_itself(tmp_path):
    root = tmp_path / "flat"
    for name in ("a_01", "a_02", "b_01", "b 02 (copy)"):
        label = np.zeros((8, 8), np.uint8)
        label[:4] = 1
        write_image(root / "images" / f"{name}.png", _picture(label))
        write_mask(root / "masks" / f"{name}.png", label)
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("# training ids\nb_01\na_01\n\nb 02 (copy)\n")
    (root / "splits" / "val.txt").write_text("a_02\n")
    pd.DataFrame({"id": ["a_02", "b_01"]}).to_csv(root / "splits" / "test.csv", index=False)
    text = _doc_yaml("# lists.yaml")
    train, val = build_datasets(_cfg(tmp_path, text, root))
    assert [s.id for s in train.samples] == ["b_01", "a_01", "b 02 (copy)"]  # the list's order
    assert [s.id for s in val.samples] == ["a_02"]
    _, test = build_datasets(_cfg(tmp_path, text, root, "data.val_split=splits/test.csv"))
    assert [s.id for s in test.samples] == ["a_02", "b_01"]
    (root / "splits" / "val.txt").write_text("a_02\na_03\n")
    with pytest.raises(DataError, match=r"val\.txt' names 1 id\(s\) that are not in .*: a_03\."):
        build_datasets(_cfg(tmp_path, text, root))
    (root / "splits" / "val.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match=r"val\.txt' names no sample id"):
        build_datasets(_cfg(tmp_path, text, root))
    for itself in ("null", "."):  # the root itself, validation held out of it
        cfg = _cfg(tmp_path, text, root, f"data.train_split={itself}", "data.val_split=null")
        cfg.data.val_fraction = 0.25
        train, val = build_datasets(cfg)
        assert len(train) == 3 and len(val) == 1
        assert {s.id for s in train.samples} | {s.id for s in val.samples} == {
            "a_01",
            "a_02",
            "b_01",
            "b 02 (copy)",
        }


def _labelled(path_image: Path, path_mask: Path, label: np.ndarray) -> None:
    write_image(path_image, _picture(label % 6))
    write_mask(path_mask, label)


def test_splits_below_the_image_folder_ade20k(tmp_path):
    root = tmp_path / "data" / "ADEChallengeData2016"
    for split, kind, n in (("training", "train", 3), ("validation", "val", 2)):
        for i in range(1, n + 1):
            name = f"ADE_{kind}_{i:08d}"
            label = np.full((8, 8), 0, np.uint8)
            label[:, 4:] = i
            label[0, 0] = 150
            _labelled(
                root / "images" / split / f"{name}.jpg",
                root / "annotations" / split / f"{name}.png",
                label,
            )
    (tmp_path / "ade20k.yaml").write_text(_doc_yaml("# ade20k.yaml"))
    cfg = load_config(tmp_path / "ade20k.yaml")
    train, val = build_datasets(cfg)
    assert [s.id for s in train.samples] == [f"ADE_train_{i:08d}" for i in (1, 2, 3)]
    assert [s.id for s in val.samples] == ["ADE_val_00000001", "ADE_val_00000002"]
    assert val.samples[1].mask_path == root / "annotations" / "validation" / "ADE_val_00000002.png"
    _, mask, _ = val.read(1)  # 0 -> 255 (left out), v -> v - 1
    assert mask[0, 0] == 149 and mask[1, 0] == 255 and mask[1, 5] == 1
    assert scoring_split(cfg.data, "val", root) == "validation"


def test_real_split_folders_above_several_roots_loveda(tmp_path):
    root = tmp_path / "data" / "LoveDA"
    for split, names in (
        ("Train", {"Urban": ["1366", "1367"], "Rural": ["0"]}),
        ("Val", {"Urban": ["3514"], "Rural": ["2522"]}),
    ):
        for area, stems in names.items():
            for k, stem in enumerate(stems):
                label = np.full((8, 8), 1 + k, np.uint8)
                label[:2] = 0  # no-data
                label[6:] = 7 if area == "Urban" else 2
                folder = root / split / area
                _labelled(
                    folder / "images_png" / f"{stem}.png",
                    folder / "masks_png" / f"{stem}.png",
                    label,
                )
    (tmp_path / "loveda.yaml").write_text(_doc_yaml("# loveda.yaml"))
    train, val = build_datasets(load_config(tmp_path / "loveda.yaml"))
    assert [s.id for s in train.samples] == ["Urban/1366", "Urban/1367", "Rural/0"]
    assert [s.id for s in val.samples] == ["Urban/3514", "Rural/2522"]
    assert val.samples[1].image_path == root / "Val" / "Rural" / "images_png" / "2522.png"
    _, mask, _ = train.read(1)  # Urban/1367: 2 -> building (1), 7 -> agriculture (6)
    assert mask[0, 0] == 255 and mask[3, 3] == 1 and mask[7, 7] == 6
    assert train.class_names[6] == "agriculture"


def test_a_labelme2voc_export_reads_with_folder(tmp_path):
    """labelme2voc.py's JPEGImages/ + SegmentationClassPNG/ (palette PNGs, 255 = __ignore__)."""
    from PIL import Image

    root = tmp_path / "data_dataset_voc"
    label = np.zeros((10, 12), np.uint8)
    label[2:6, 3:9], label[7:, :4], label[0, 0] = 3, 1, 255
    write_image(root / "JPEGImages" / "2011_000003.jpg", _picture(label % 4))
    (root / "SegmentationClassPNG").mkdir()
    png = Image.fromarray(label, mode="P")
    png.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
    png.save(root / "SegmentationClassPNG" / "2011_000003.png")
    text = (
        "data:\n  dataset: folder\n  train_split: null\n  val_split: .\n"
        "  classes: [_background_, aeroplane, bicycle, bird]\n"
        "  options: {images: JPEGImages, masks: SegmentationClassPNG}\n"
        "loss: {name: ce, ignore_index: 255}\n"
    )
    _, val = build_datasets(_cfg(tmp_path, text, root))
    _, mask, _ = val.read(0)
    assert np.array_equal(mask, label)  # the palette index, 255 kept to be left out


# ---- the docs/data.md configs, from the config alone -------------------------------------


def test_docs_dubai_config_reads_the_tiles_and_holds_out_by_prefixed_id(tmp_path):
    make_dubai(tmp_path / "data" / "Semantic segmentation dataset")
    (tmp_path / "dubai.yaml").write_text(_doc_yaml("# dubai.yaml"))
    table = _doc_block("name,r,g,b\nUnlabeled", "")
    assert table.splitlines()[1:] == [f"{n},{r},{g},{b}" for n, (r, g, b) in DUBAI.items()]
    split = tmp_path / "val_ids.csv"
    cfg = load_config(tmp_path / "dubai.yaml", [f"data.split_file={split}"])
    train, val = build_datasets(cfg)
    assert len(train) + len(val) == 6 and len(val) >= 1
    written = pd.read_csv(split, dtype=str)["id"].tolist()
    assert written == sorted(s.id for s in val.samples) and all("/" in i for i in written)
    _, again = build_datasets(cfg)  # read back from the file, spaces and all
    assert sorted(s.id for s in again.samples) == written


@pytest.mark.slow
def test_docs_busi_and_city_configs_train_and_evaluate_by_their_ids(tmp_path):
    """BUSI's config trains an epoch and its report names the prefixed ids; the city config
    validates on val/ and ``evaluate --split val`` scores that folder."""
    make_busi(tmp_path / "data" / "Dataset_BUSI_with_GT", odd_size=True)
    make_city(tmp_path / "data" / "city")
    tiny = [
        "data.image_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.arch=unet",
        "model.encoder=null",
        "model.base_channels=4",
        "train.epochs=1",
        "train.progress=false",
    ]
    for name, held_out in (("busi", True), ("city", False)):
        (tmp_path / f"{name}.yaml").write_text(_doc_yaml(f"# {name}.yaml"))
        out = tmp_path / "runs" / name
        assert main(["train", str(tmp_path / f"{name}.yaml"), f"train.out_dir={out}", *tiny]) == 0
        report = tmp_path / f"report_{name}"
        argv = ["evaluate", "--checkpoint", str(out / "best.pt"), "--split", "val"]
        assert main([*argv, "--report", str(report)]) == 0
        ids = pd.read_csv(report / "per_image.csv", dtype=str)["id"].tolist()
        if held_out:  # a fifth of BUSI's 6 images, held out by their prefixed ids
            assert ids and all(re.fullmatch(r"(benign|malignant|normal)/\1 \(\d\)", i) for i in ids)
        else:
            assert ids == ["lindau_1"]


def test_readme_names_the_data_sets_the_docs_table_lists():
    page = DOC.read_text()
    start = page.index("### Public data sets read from the config alone")
    section = page[start : page.index("\n## ", start)]
    rows = re.findall(r"^\| ([^|`]+?) \| `", section, flags=re.M)
    assert len(rows) == 9
    readme = " ".join((DOC.parents[1] / "README.md").read_text().split())
    assert "docs/data.md#public-data-sets-read-from-the-config-alone" in readme
    for name in rows:
        words = name.removeprefix("a ").replace(" breast", "").split(" (")[0]
        assert words in readme, words
