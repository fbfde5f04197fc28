"""Generic folders, the dataset registry and the one-class-one-line extension point."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.data import (
    FolderDataset,
    Sample,
    SegmentationDataset,
    build_dataset,
    dataset_metas,
    list_datasets,
    register_dataset,
    synth_carvana,
    synth_helen,
)
from segkit.data import registry as registry_module
from segkit.data.io import write_mask
from segkit.errors import ConfigError, DataError


def make_folder(root: Path, n: int = 3, classes: int = 4, split: str | None = None) -> Path:
    base = root / split if split else root
    (base / "images").mkdir(parents=True)
    (base / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(base / "images" / f"img{i}.png"), rng.integers(0, 255, (16, 24, 3)))
        write_mask(base / "masks" / f"img{i}.png", rng.integers(0, classes, (16, 24)))
    return root


def test_folder_multiclass_with_names(tmp_path):
    root = make_folder(tmp_path / "d", classes=4)
    ds = FolderDataset(root, classes=["bg", "road", "car", "sky"])
    assert len(ds) == 3 and ds.task == "multiclass" and ds.num_classes == 4
    item = ds[1]
    assert item["id"] == "img1" and item["image"].shape == (16, 24, 3)
    assert item["mask"].max() <= 3 and item["mask"].dtype == np.int64
    assert FolderDataset(root, classes=4).class_names == [
        "background",
        "class_1",
        "class_2",
        "class_3",
    ]


def test_folder_binary_default_maps_255(tmp_path):
    root = tmp_path / "b"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "masks").mkdir()
    cv2.imwrite(str(root / "train" / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    write_mask(root / "train" / "masks" / "a.png", np.array([[0, 255] * 4] * 8, np.uint8))
    ds = FolderDataset(root, split="train")
    assert ds.task == "binary" and ds.class_names == ["background", "foreground"]
    assert set(np.unique(ds[0]["mask"])) == {0, 1}


def test_an_ignore_value_is_accepted_only_when_declared(tmp_path):
    root = make_folder(tmp_path / "d", n=1, classes=3)
    mask = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    write_mask(root / "masks" / "img0.png", cv2.resize(mask, (24, 16), interpolation=0))
    ds = FolderDataset(root, classes=3)
    with pytest.raises(DataError, match=r"values 255 outside 0..2.*loss.ignore_index=255"):
        ds[0]
    ds.ignore_index = 255
    assert set(np.unique(ds[0]["mask"])) == {0, 1, 2, 255}
    write_mask(root / "masks" / "img0.png", np.full((16, 24), 7, np.uint8))
    with pytest.raises(DataError, match=r"values 7 outside"):  # other values still refused
        ds[0]
    # a binary set: 255 is the object, unless it is declared as the value to ignore
    binary = FolderDataset(root)
    write_mask(root / "masks" / "img0.png", np.array([[0, 255] * 12] * 16, np.uint8))
    assert set(np.unique(binary[0]["mask"])) == {0, 1}
    write_mask(root / "masks" / "img0.png", np.array([[0, 1, 255] * 8] * 16, np.uint8))
    binary.ignore_index = 255
    assert set(np.unique(binary[0]["mask"])) == {0, 1, 255}
    write_mask(root / "masks" / "img0.png", np.array([[0, 255] * 12] * 16, np.uint8))
    with pytest.warns(UserWarning, match="holds 0 and 255 only; with loss.ignore_index=255"):
        binary[0]
    # with an ignore value already set, a stray value is not suggested as another one
    write_mask(root / "masks" / "img0.png", np.full((16, 24), 7, np.uint8))
    with pytest.raises(DataError) as failure:
        ds[0]
    assert "ignore_index" not in str(failure.value)


def test_folder_custom_folder_names_and_split(tmp_path):
    root = make_folder(tmp_path / "d", split="val")
    (root / "val" / "images").rename(root / "val" / "rgb")
    (root / "val" / "masks").rename(root / "val" / "gt")
    ds = build_dataset("folder", root, "val", images="rgb", masks="gt", classes=4)
    assert len(ds) == 3


def test_folder_errors(tmp_path):
    root = make_folder(tmp_path / "d", classes=4)
    with pytest.raises(DataError, match=r"img0.png.*not binary.*values 2, 3.*class list"):
        FolderDataset(root)[0]
    with pytest.raises(DataError, match="unique"):
        FolderDataset(root, classes=["a", "a"])
    with pytest.raises(DataError, match="at least 2"):
        FolderDataset(root, classes=1)
    with pytest.raises(DataError, match=r"No folder data set layout.*pass images=/masks="):
        FolderDataset(root, images="rgb")
    with pytest.raises(FileNotFoundError, match=r"no split folder 'train'.*split=None"):
        FolderDataset(root, "train", classes=4)
    assert len(FolderDataset(root, ".", classes=4)) == 3
    (root / "masks" / "img2.png").unlink()
    with pytest.raises(DataError, match=r"1 image\(s\).*img2.png"):
        FolderDataset(root, classes=4)
    with pytest.raises(FileNotFoundError, match="does not exist") as exc:
        FolderDataset(tmp_path / "none")
    assert str(tmp_path / "none") in str(exc.value)
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="is empty") as exc:
        FolderDataset(tmp_path / "e")
    assert str(tmp_path / "e") in str(exc.value)


def test_two_files_with_one_stem_is_an_error(tmp_path):
    root = make_folder(tmp_path / "d")
    cv2.imwrite(str(root / "images" / "img0.jpg"), np.zeros((16, 24, 3), np.uint8))
    with pytest.raises(DataError, match=r"share the name 'img0'"):
        FolderDataset(root, classes=4)


# --- registry ----------------------------------------------------------------------------


def test_builtin_names_are_registered():
    assert {"helen", "carvana", "folder"} <= set(list_datasets())
    assert list_datasets("car*") == ["carvana"]


def test_builtin_table_names_each_module_that_registers_a_data_set():
    """BUILTIN_DATASETS (what the registry imports lazily) is what segkit's modules register:
    a new reader's ``@register_dataset`` line without its table entry fails here."""
    import importlib
    import pkgutil

    import segkit.data

    for info in pkgutil.walk_packages(segkit.data.__path__, "segkit.data."):
        importlib.import_module(info.name)
    registered = {
        name: cls.__module__
        for name, cls in registry_module._DATASETS.items()
        if cls.__module__.startswith("segkit.")
    }
    assert registered == registry_module.BUILTIN_DATASETS


def test_looking_up_one_builtin_imports_its_module_only():
    """The registry imports a built-in reader when its name is looked up; a plugin taking a
    built-in name not imported yet is still refused (the built-in is imported first)."""
    import subprocess
    import sys

    code = """
import sys
from segkit.data import SegmentationDataset, list_datasets, register_dataset
from segkit.data.registry import get_dataset_class
from segkit.errors import ConfigError
names = list_datasets()
assert "coco" in names and "segkit.data.formats.coco" not in sys.modules, names
assert get_dataset_class("helen").__name__ == "HelenDataset"
print(sorted(m for m in sys.modules if m.startswith("segkit.data.formats")), "pandas" in sys.modules)
try:
    register_dataset("voc")(type("MyVOC", (SegmentationDataset,), {}))
except ConfigError as exc:
    print(str(exc).split(";")[0])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "[] False",
        "Dataset name 'voc' is already registered by segkit.data.formats.voc.VOCDataset",
    ]


def test_unknown_name_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown dataset 'helne'.*Did you mean 'helen'"):
        build_dataset("helne", tmp_path, "train")


def test_unknown_option_is_an_error_with_suggestion(tmp_path):
    root = make_folder(tmp_path / "d")
    with pytest.raises(ConfigError, match=r"no option 'clases'.*Did you mean 'classes'"):
        build_dataset("folder", root, None, clases=4)
    with pytest.raises(ConfigError, match="no option 'classes'"):
        build_dataset("helen", root, "train", classes=["a", "b"])


#: the split each annotation-tool reader's synthetic export is read with
ANNOTATION_SPLITS = {
    "coco": "default",
    "labelme": None,
    "yolo_seg": "train",
    "cvat_mask": "default",
}


def _builtin_case(name: str, tmp_path: Path) -> tuple[Path, str | None, dict]:
    if name == "helen":
        return synth_helen(tmp_path / "h", n=2, size=16), "train", {}
    if name == "carvana":
        return synth_carvana(tmp_path / "c", cars=1, views=2, size=(48, 32)), "train", {}
    if name == "folder":
        return make_folder(tmp_path / "f", classes=3), None, {"classes": 3}
    if name in (
        "voc",
        "cityscapes",
        "camvid",
        "color_masks",
        "multilabel",
    ):  # their own synthetic sets
        dataset_metas()[name].synth(tmp_path / name, n=3)  # writes the set, says what it wrote
        return tmp_path / name, (None if name in ("color_masks", "multilabel") else "train"), {}
    if name in ANNOTATION_SPLITS:  # annotation-tool exports, their own synthetic sets
        dataset_metas()[name].synth(tmp_path / name, n=3)
        return tmp_path / name, ANNOTATION_SPLITS[name], {}
    if name == "raster":
        dataset_metas()[name].synth(tmp_path / name, n=3)
        return tmp_path / name, None, {"label_map": {-1: "ignore"}}
    raise AssertionError(f"registered dataset {name!r} has no test case: add one here")


def _builtin_datasets() -> list[str]:
    """The registered data sets segkit ships (plugins registered by other tests left out)."""
    return [
        n
        for n in list_datasets()
        if registry_module.get_dataset_class(n).__module__.startswith("segkit.")
    ]


@pytest.mark.parametrize("name", _builtin_datasets())
def test_every_builtin_dataset_builds_by_name(name, tmp_path):
    root, split, options = _builtin_case(name, tmp_path)
    ds = build_dataset(name, root, split, **options)
    assert isinstance(ds, SegmentationDataset) and len(ds) >= 2
    item = ds[0]
    assert set(item) == {"image", "mask", "id", "image_path"}
    masks = item["mask"].shape[1:] if ds.task == "multilabel" else item["mask"].shape  # C x H x W
    assert item["image"].shape[:2] == masks


def test_every_registered_dataset_has_a_case(tmp_path):
    """Completeness: a new built-in data set must get a case in _builtin_case."""
    for name in _builtin_datasets():
        _builtin_case(name, tmp_path / name)


@pytest.fixture
def temporary_registration():
    yield
    registry_module._DATASETS.pop("tiny_rgb", None)


def test_adding_a_dataset_takes_one_class_and_one_line(tmp_path, temporary_registration):
    """The worked example of docs/adding_a_dataset.md."""

    @register_dataset("tiny_rgb")
    class TinyRGB(SegmentationDataset):
        class_names = ["background", "red", "green"]

        def __init__(self, root, split="train", transform=None):
            folder = Path(root) / split
            samples = [
                Sample(p.stem, p, folder / "labels" / f"{p.stem}.png")
                for p in sorted((folder / "photos").glob("*.png"))
            ]
            super().__init__(samples, transform, root=root)

    folder = tmp_path / "train"
    (folder / "photos").mkdir(parents=True)
    (folder / "labels").mkdir()
    cv2.imwrite(str(folder / "photos" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    write_mask(folder / "labels" / "a.png", np.full((8, 8), 2, np.uint8))
    ds = build_dataset("tiny_rgb", tmp_path, "train")
    assert "tiny_rgb" in list_datasets() and ds.task == "multiclass"
    assert (ds[0]["mask"] == 2).all()
    with pytest.raises(ConfigError, match="already registered"):
        register_dataset("tiny_rgb")(type("Other", (SegmentationDataset,), {}))


def test_left_right_classes_of_a_folder_set_swap_under_a_flip(tmp_path):
    root = make_folder(tmp_path / "d", n=1, classes=3)
    ds = FolderDataset(root, classes=["bg", "l_eye", "r_eye"])
    assert ds.flip_pairs == [(1, 2)]
    assert FolderDataset(root, classes=["bg", "towel", "tower"]).flip_pairs == []


def test_reduce_zero_label_leaves_0_out_and_shifts_the_classes_down(tmp_path):
    """MMSegmentation's reduce_zero_label (ADE20K: 0 = other, 1..150 classes): 0 -> 255
    (ignored), v -> v - 1; predictions are written back as 1..N."""
    from types import SimpleNamespace

    from segkit.inference.outputs import encoding

    root = make_folder(tmp_path / "d", n=2, classes=4)  # values 0..3: 0 unlabelled, 3 classes
    raw = cv2.imread(str(root / "masks" / "img0.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    ds = build_dataset(
        "folder", root, None, classes=["wall", "floor", "sky"], reduce_zero_label=True
    )
    assert ds.class_names == ["wall", "floor", "sky"] and ds.ignore_index == 255
    np.testing.assert_array_equal(ds[0]["mask"], np.where(raw == 0, 255, raw - 1))
    meta = ds.metadata().to_dict()
    assert meta["output_ids"] == [1, 2, 3] and meta["labels"]["reduce_zero_label"] is True
    assert encoding(SimpleNamespace(meta=meta))[np.array([0, 1, 2])].tolist() == [1, 2, 3]


def test_one_label_past_the_names_suggests_reduce_zero_label_not_an_ignore_index(tmp_path):
    root = make_folder(tmp_path / "d", n=2, classes=4)
    ds = FolderDataset(root, classes=["wall", "floor", "sky"])  # values 0..3 for 3 names
    with pytest.raises(DataError, match="reduce_zero_label") as err:
        ds[0]
    assert "ignore_index=3" not in str(err.value)


def test_reduce_zero_label_with_a_class_count_names_no_class_background(tmp_path):
    """Class 0 after the shift is a real class (label 1), so overlays tint it."""
    from segkit.viz import background_label

    root = make_folder(tmp_path / "d", n=1, classes=4)
    ds = FolderDataset(root, classes=3, reduce_zero_label=True)
    assert ds.class_names == ["class_1", "class_2", "class_3"]
    assert background_label(ds.class_names) is None
