"""YOLO segmentation labels (ultralytics, Roboflow) read as semantic masks: ``yolo_seg``.

Two layouts, looked for in this order::

    ultralytics                          Roboflow export
    <root>/images/<split>/a.jpg          <root>/<split>/images/a.jpg
    <root>/labels/<split>/a.txt          <root>/<split>/labels/a.txt
    <root>/data.yaml                     <root>/data.yaml

Each label line is one object, ``class x1 y1 x2 y2 ...``, coordinates normalised to 0..1;
``data.yaml`` names the classes (``names: [a, b]`` or ``names: {0: a, 1: b}``). Its split
paths often come from another machine (``C:\\Users\\...``, ``../train/images``): a path
that does not exist is matched by its trailing folder names under ``root``
(``.../valid/images`` -> ``<root>/valid/images``), and ``val`` and ``valid`` name one split.
Without a split, ``<root>/images`` + ``<root>/labels``.

Class ids: 0 is background, YOLO class ``k`` is class ``k + 1``. Objects are painted largest
first (polygon area), a smaller one over a larger one, as ultralytics' own overlap masks
are. An image without a label file (or with an empty one) is all background, as ultralytics
reads it; a label file without an image is skipped; both are reported in one note.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.data.base import Sample, SegmentationDataset, _natural_key, select_ids, unique_keys
from segkit.data.formats.rasterize import prepare_export
from segkit.data.formats.shapes import check_inside, fill_polygons, number, points_array
from segkit.data.io import IMAGE_EXTENSIONS, DataNotFoundError, list_files, name_some, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: other names of a split in data.yaml and on disk
SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "valid": ("valid", "val", "validation")}


def read_data_yaml(path: str | Path) -> dict[str, Any]:
    """A YOLO ``data.yaml`` as a dict.

    Raises:
        DataError: not YAML, or not a mapping (names the file).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{str(path)!r} is not YAML ({first}); fix the file.") from None
    if not isinstance(data, dict):
        raise DataError(f"{str(path)!r} is not a YOLO data.yaml (a mapping with 'names').")
    return data


def yaml_names(data: dict[str, Any], path: Path) -> list[str]:
    """The class names of a data.yaml, in class order (``names`` as a list or an id map).

    Raises:
        DataError: no ``names``, ids not 0..n-1, or ``nc`` that disagrees (names the file).
    """
    names = data.get("names")
    if isinstance(names, dict):
        ids = sorted(number(k, f"{path} names key", int) for k in names)
        if ids != list(range(len(ids))):
            raise DataError(
                f"{str(path)!r}: names has the class ids {name_some(ids, 8)}; give ids 0..n-1."
            )
        by_id = {number(k, "", int): v for k, v in names.items()}
        names = [by_id[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise DataError(
            f"{str(path)!r} has no 'names' list of classes; add names: [class0, class1, ...] "
            "(or give data.options.classes)."
        )
    nc = data.get("nc")
    if nc is not None and number(nc, f"{path} nc", int) != len(names):
        raise DataError(f"{str(path)!r}: nc is {nc} but names lists {len(names)}; make them agree.")
    return [str(n) for n in names]


def _trailing_match(value: str, root: Path) -> Path | None:
    """The folder a foreign path means: itself if it exists, else its trailing folder names
    under ``root`` (longest first)."""
    parts = [p for p in value.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if Path(value).is_dir():
        return Path(value)
    for k in range(len(parts)):
        if ":" in parts[k]:  # a drive letter
            continue
        candidate = root.joinpath(*parts[k:])
        if candidate.is_dir():
            return candidate
    return None


def find_split(root: Path, split: str | None, data: dict[str, Any] | None) -> tuple[Path, Path]:
    """The image and label folders of ``split`` (module docstring for the order).

    Raises:
        DataNotFoundError: none found (names what was looked for).
    """
    if split in (None, "", "."):
        images = root / "images"
        if images.is_dir():
            return images, root / "labels"
        raise DataNotFoundError(
            f"No {str(images)!r}: without a split the YOLO reader reads <root>/images + "
            "<root>/labels. Set the split (train, val, ...) for split folders."
        )
    names = SPLIT_ALIASES.get(split, (split,))
    looked = []
    for name in names:
        value = (data or {}).get(name)
        if isinstance(value, str) and value.strip():
            looked.append(f"data.yaml's {name}: {value}")
            found = _trailing_match(value.strip(), root)
            if found is not None and (found / "images").is_dir():
                found = found / "images"  # "train: train" names the split folder
            if found is not None:
                return found, labels_folder(found)
    for name in names:
        for images in (root / "images" / name, root / name / "images"):
            looked.append(str(images))
            if images.is_dir():
                return images, labels_folder(images)
    raise DataNotFoundError(
        f"No images for split {split!r} under {str(root)!r}: looked for {'; '.join(looked)}. "
        "Use <root>/images/<split> + <root>/labels/<split>, or <root>/<split>/images + "
        "<root>/<split>/labels."
    )


def labels_folder(images: Path) -> Path:
    """The label folder of an image folder: its last ``images`` part replaced by ``labels``
    (ultralytics' rule); a folder without one: ``labels`` beside it."""
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def read_label_file(
    path: Path, classes: int, shape: tuple[int, int]
) -> list[tuple[int, np.ndarray]]:
    """The objects of one label file: ``(YOLO class, N x 2 pixel points)`` per line.

    Raises:
        DataError: a class id outside ``0..classes-1``, a line of fewer than 3 points (a
            detection box), points outside 0..1 (names the file, the line and the fix).
    """
    height, width = shape
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{str(path)!r} is not a text label file; re-export the labels.") from None
    objects = []
    scale = np.array([width, height], np.float64)
    for n, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        where = f"{path} line {n}"
        fix = "fix or delete the line (re-export the segmentation format, not detection)."
        cls = number(words[0], f"{where} class", int)
        if not 0 <= cls < classes:
            raise DataError(
                f"{where}: class {cls}, but data.yaml names {classes} class(es) (0..{classes - 1}); "
                "fix the line or add the class to names."
            )
        points = points_array(words[1:], where, fix) * scale
        check_inside(points, height, width, f"{where} (normalised x {width}, y {height})", fix)
        objects.append((cls, points))
    return objects


def yolo_mask(objects: Sequence[tuple[int, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Class ids (HxW uint8: YOLO class ``k`` -> ``k + 1``), largest object first."""
    canvas = np.zeros(shape, np.uint8)
    areas = [abs(cv2.contourArea(points.astype(np.float32))) for _, points in objects]
    for i in sorted(range(len(objects)), key=lambda i: (-areas[i], i)):
        cls, points = objects[i]
        fill_polygons(canvas, [points], cls + 1)
    return canvas


def _prepare(
    src: str | Path,
    dst: str | Path,
    split: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    data_yaml: str | None = None,
) -> tuple[str, list[str]]:
    """``segkit prepare yolo_seg``: the export rasterised once to PNG label maps in the folder
    layout (:func:`~segkit.data.formats.rasterize.prepare_export`; data_yaml: as the reader's option)."""
    return prepare_export(
        YoloSegDataset,
        "yolo_seg",
        src,
        dst,
        split=split,
        workers=workers,
        overwrite=overwrite,
        data_yaml=data_yaml,
    )


def _synth(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth yolo_seg``: a small Roboflow-style export; the message to show."""
    from segkit.data.formats.synth_annotations import synth_yolo_seg

    synth_yolo_seg(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote train/ and valid/ ({n} images each) with labels/ and data.yaml to {dst}"


@register_dataset("yolo_seg")
class YoloSegDataset(SegmentationDataset):
    """YOLO segmentation labels (normalised polygons) read as class-id masks.

    Args:
        root: the export's folder (holding ``data.yaml``).
        split: ``train``, ``val`` (or ``valid``), ``test``; None or ".": ``<root>/images``.
        transform: albumentations pipeline, or None.
        data_yaml: the class file (relative to ``root``).
        classes: the class names in YOLO's order, instead of data.yaml's ``names``.
        ids: keep only these ids (image file stems), in this order.
    """

    meta = DatasetMeta(flip_pairs=None, synth=_synth, prepare=_prepare)

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        data_yaml: str = "data.yaml",
        classes: Sequence[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        root = require_dir(root, "Data root")
        yaml_path = root / data_yaml
        data = read_data_yaml(yaml_path) if yaml_path.is_file() else None
        if classes is not None:
            names = [str(c) for c in classes]
        elif data is not None:
            names = yaml_names(data, yaml_path)
        else:
            raise DataNotFoundError(
                f"No {str(yaml_path)!r} to name the classes: give data.options.classes (YOLO's "
                "class 0, 1, ... in order) or put data.yaml in the root."
            )
        image_dir, self.label_dir = find_split(root, split, data)
        images = unique_keys(list_files(image_dir, IMAGE_EXTENSIONS), lambda p: p.stem, image_dir)
        labels = list_files(self.label_dir, (".txt",)) if self.label_dir.is_dir() else []
        self.unlabelled = sorted(set(images) - {p.stem for p in labels}, key=_natural_key)
        self.orphans = sorted(p.name for p in labels if p.stem not in images)
        self._note(image_dir)
        samples = [
            Sample(k, images[k], self.label_dir / f"{k}.txt")
            for k in sorted(images, key=_natural_key)
        ]
        if not samples:
            raise DataError(f"No images in {str(image_dir)!r}; put the split's images there.")
        self.split, self.yolo_names = split, names
        labels = {"rule": "background 0; YOLO class k -> class k + 1",
                  "class_ids": {str(k): k + 1 for k in range(len(names))}}  # fmt: skip
        super().__init__(select_ids(samples, ids, image_dir), transform, ["background", *names],
                         root, facts={"labels": labels})  # fmt: skip

    def _note(self, image_dir: Path) -> None:
        """One note for images without labels (background) and labels without images."""
        parts = []
        if self.unlabelled:
            parts.append(f"{len(self.unlabelled)} image(s) in {image_dir} have no label file and "
                         f"are read as background ({name_some(self.unlabelled, 3)})")  # fmt: skip
        if self.orphans:
            parts.append(f"{len(self.orphans)} label file(s) in {self.label_dir} have no image "
                         f"and are skipped ({name_some(self.orphans, 3)})")  # fmt: skip
        if parts:
            warnings.warn("; ".join(parts) + ".", stacklevel=3)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The label file's polygons as class ids; no label file: all background."""
        if not sample.mask_path.is_file():
            return np.zeros(shape, np.uint8)
        return yolo_mask(read_label_file(sample.mask_path, len(self.yolo_names), shape), shape)
