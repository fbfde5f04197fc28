"""labelme annotations (one JSON per image) read as semantic masks: ``labelme``.

::

    <root>/[<split>/]<name>.json     labelme 3.x-5.x: shapes, imagePath and/or imageData
    <root>/[<split>/]<name>.jpg      the image imagePath names (relative to the JSON), or
                                     none: the JSON's embedded imageData alone
    <root>/labels.txt                optional class list, as labelme's examples write it:
                                     __ignore__, _background_, then the classes

Shapes: ``polygon`` (also files without ``shape_type``, as labelme 3.x wrote them),
``rectangle`` (two corners), ``circle`` (centre and a point on the rim) and ``mask``
(labelme 5.x: a PNG over the box of its two points) are painted with OpenCV in the file's
order, a later shape over an earlier one (as labelme's own ``labelme2voc.py``); ``point``,
``line`` and ``linestrip`` shapes hold no area and are skipped (one note per data set).
Several shapes of one object (one ``group_id``) are painted each with the object's label.
The label ``__ignore__`` paints the ignore index 255 (left out of loss and metrics).

Classes: the ``classes`` option, else ``labels.txt`` in the folder (or ``labels=``), else
every label the files use, sorted; ``background`` (``_background_`` in labels.txt) is
class 0 in each case, and the list is recorded in the checkpoint.
"""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.formats.rasterize import prepare_export
from segkit.data.formats.shapes import (
    check_inside,
    fill_circle,
    fill_polygons,
    fill_rectangle,
    number,
    points_array,
)
from segkit.data.io import (
    IMAGE_EXTENSIONS,
    DataNotFoundError,
    decode_image,
    list_files,
    name_some,
    require_dir,
)
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

IGNORE_LABEL = "__ignore__"
BACKGROUND_LABELS = ("_background_", "background")
AREA_SHAPES = ("polygon", "rectangle", "circle", "mask")
SKIPPED_SHAPES = ("point", "points", "line", "linestrip")
IGNORE = 255


def read_labelme(path: str | Path) -> dict[str, Any]:
    """A labelme JSON, checked to hold a ``shapes`` list.

    Raises:
        DataError: not JSON, or not a labelme file (names the file and the fix).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not JSON ({exc}); save it again from labelme.") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        raise DataError(
            f"{str(path)!r} is not a labelme file (no 'shapes' list). Keep only labelme JSONs "
            "in the folder, or move this one out."
        )
    return data


def read_labels_txt(path: str | Path) -> list[str]:
    """Class names of a labelme ``labels.txt``: ``__ignore__`` dropped, ``_background_`` (or
    ``background``) first as ``background``, added when missing.

    Raises:
        DataError: a class listed twice (names the file and the line).
    """
    path = Path(path)
    names = ["background"]
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = line.strip()
        if not name or name == IGNORE_LABEL or name.startswith("#"):
            continue
        if name in BACKGROUND_LABELS:
            if len(names) > 1:
                raise DataError(
                    f"{str(path)!r} line {n}: {name} comes after classes; list it first (it "
                    "is class 0) or leave it out."
                )
            continue
        if name in names:
            raise DataError(f"{str(path)!r} line {n}: {name!r} is listed twice; keep one line.")
        names.append(name)
    return names


def shape_type(shape: dict[str, Any]) -> str:
    """The shape's type; ``polygon`` for files written before labelme had ``shape_type``."""
    return str(shape.get("shape_type") or "polygon")


def file_labels(data: dict[str, Any]) -> set[str]:
    """The labels of the area shapes of one parsed file (not ``__ignore__`` or background)."""
    return {
        str(s.get("label", "")).strip()
        for s in data["shapes"]
        if isinstance(s, dict) and shape_type(s) in AREA_SHAPES
    } - {IGNORE_LABEL, *BACKGROUND_LABELS}


def image_size(data: dict[str, Any], path: Path) -> tuple[int, int] | None:
    """``(height, width)`` from ``imageHeight`` / ``imageWidth`` (None when absent)."""
    h, w = data.get("imageHeight"), data.get("imageWidth")
    if h is None or w is None:
        return None
    return number(h, f"{path} imageHeight", int), number(w, f"{path} imageWidth", int)


def find_image(data: dict[str, Any], path: Path) -> Path | None:
    """The image file of a labelme JSON: ``imagePath`` relative to the JSON's folder (a
    Windows path too), else a file with the JSON's stem beside it; None: none exists."""
    named = str(data.get("imagePath") or "").replace("\\", "/")
    if named:
        for candidate in (path.parent / named, path.parent / Path(named).name):
            if candidate.is_file():
                return candidate
    for ext in IMAGE_EXTENSIONS:
        for candidate in (path.with_suffix(ext), path.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def embedded_image(data: dict[str, Any], path: Path) -> np.ndarray:
    """The image embedded in the JSON (``imageData``, base64) as HxWx3 uint8 RGB.

    Raises:
        DataError: no usable ``imageData`` (names the file and what to do).
    """
    raw = data.get("imageData")
    if not raw:
        raise DataNotFoundError(
            f"{str(path)!r}: its image {data.get('imagePath')!r} is not beside it and the file "
            "embeds no imageData. Put the image beside the JSON (or fix imagePath)."
        )
    try:
        buffer = np.frombuffer(base64.b64decode(raw, validate=False), np.uint8)
    except (ValueError, TypeError):
        raise DataError(
            f"{str(path)!r}: imageData is not base64; save it again from labelme."
        ) from None
    return decode_image(buffer, f"{path} (imageData)")


def class_ids(
    shapes: Sequence[tuple[int, dict[str, Any]]], classes: dict[str, int], path: Path
) -> list[int]:
    """The class id of each ``(shape number, shape)`` (``__ignore__``: 255, background: 0).

    Raises:
        DataError: a label not in the class list (names the file, the shape and the fix).
    """
    ids = []
    for n, shape in shapes:
        label = str(shape.get("label", "")).strip()
        if label == IGNORE_LABEL:
            ids.append(IGNORE)
        elif label in BACKGROUND_LABELS:
            ids.append(0)
        elif label in classes:
            ids.append(classes[label])
        else:
            raise DataError(
                f"{path}: shape {n} has the label {label!r}, which is not a class "
                f"({name_some(list(classes)[1:], 8)}). Add it to labels.txt (or the classes "
                "option), or fix the label in labelme."
            )
    return ids


def _mask_shape(shape: dict[str, Any], canvas: np.ndarray, value: int, where: str) -> None:
    """Paint a labelme 5.x ``mask`` shape: a base64 PNG over the box of its two points."""
    points = np.asarray(shape.get("points") or [], dtype=np.float64).reshape(-1, 2)
    try:
        raw = np.frombuffer(base64.b64decode(shape["mask"]), np.uint8)
        mask = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
    except (KeyError, TypeError, ValueError, cv2.error):
        mask = None
    if mask is None or len(points) != 2:
        raise DataError(f"{where}: a mask shape without a readable 'mask' PNG and two points; "
                        "draw it again in labelme.")  # fmt: skip
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    h = min(mask.shape[0], canvas.shape[0] - y0)
    w = min(mask.shape[1], canvas.shape[1] - x0)
    region = canvas[y0 : y0 + h, x0 : x0 + w]
    region[mask[:h, :w] > 0] = value


def paint_shape(shape: dict[str, Any], canvas: np.ndarray, value: int, where: str) -> bool:
    """Paint one shape into ``canvas`` (in place); False for shapes without area (skipped).

    Raises:
        DataError: too few points for its type, points outside the image, an unknown type.
    """
    kind = shape_type(shape)
    if kind in SKIPPED_SHAPES:
        return False
    fix = "fix the shape in labelme (or delete it)."
    if kind == "mask":
        _mask_shape(shape, canvas, value, where)
        return True
    if kind not in AREA_SHAPES:
        raise DataError(
            f"{where}: shape_type {kind!r} is not one segkit reads (polygon, rectangle, circle, "
            f"mask; {', '.join(SKIPPED_SHAPES)} are skipped); {fix}"
        )
    raw = shape.get("points") or []
    if kind in ("rectangle", "circle"):
        if len(raw) != 2:
            raise DataError(f"{where}: a {kind} needs 2 points, it has {len(raw)}; {fix}")
        points = np.asarray(points_array([*raw, raw[-1]], where, fix)[:2])
    else:
        points = points_array(raw, where, fix)
    height, width = canvas.shape
    check_inside(points, height, width, where, fix)
    if kind == "rectangle":
        fill_rectangle(canvas, points, value)
    elif kind == "circle":
        fill_circle(canvas, points, value)
    else:
        fill_polygons(canvas, [points], value)
    return True


def labelme_mask(
    data: dict[str, Any], classes: dict[str, int], shape: tuple[int, int], path: Path
) -> tuple[np.ndarray, int]:
    """A labelme file's class ids (HxW uint8, ``shape`` is the image's) in file order, later
    shapes on top; also how many shapes were skipped (points and lines).

    Raises:
        DataError: see :func:`class_ids` and :func:`paint_shape`, or ``imageHeight`` /
            ``imageWidth`` that differ from the image.
    """
    size = image_size(data, path)
    if size is not None and size != tuple(shape):
        raise DataError(
            f"{path}: imageHeight x imageWidth {size[0]}x{size[1]} but its image is "
            f"{shape[0]}x{shape[1]} (height x width); annotate the image it names again, or "
            "fix imagePath."
        )
    shapes = [(n, s) for n, s in enumerate(data["shapes"], 1) if isinstance(s, dict)]
    drawn = [(n, s) for n, s in shapes if shape_type(s) not in SKIPPED_SHAPES]
    canvas = np.zeros(shape, np.uint8)
    for (n, s), value in zip(drawn, class_ids(drawn, classes, path)):
        paint_shape(s, canvas, value, f"{path}: shape {n} ({s.get('label')!r})")
    return canvas, len(shapes) - len(drawn)


def _prepare(
    src: str | Path,
    dst: str | Path,
    split: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    labels: str | None = None,
) -> tuple[str, list[str]]:
    """``segkit prepare labelme``: the export rasterised once to PNG label maps in the folder
    layout (:func:`~segkit.data.formats.rasterize.prepare_export`; labels: as the reader's option)."""
    return prepare_export(
        LabelmeDataset,
        "labelme",
        src,
        dst,
        split=split,
        workers=workers,
        overwrite=overwrite,
        labels=labels,
    )


def _synth(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth labelme``: a flat folder of labelme files; the message to show."""
    from segkit.data.formats.synth_annotations import synth_labelme

    synth_labelme(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} images with labelme JSONs and labels.txt to {dst}"


@register_dataset("labelme")
class LabelmeDataset(SegmentationDataset):
    """labelme JSONs (one per image) read as class-id masks; ``__ignore__`` is 255.

    Args:
        root: the folder of JSONs (or of split folders).
        split: sub-folder holding the JSONs; None or ".": ``root`` itself (a flat folder).
        transform: albumentations pipeline, or None.
        classes: class names, background first (``background``/``_background_`` added as
            class 0 when missing); default: ``labels`` if it exists, else every label used.
        labels: labelme's ``labels.txt`` (relative to ``root``; looked for in the split
            folder first).
        ids: keep only these ids (JSON file stems), in this order.
    """

    meta = DatasetMeta(flip_pairs=None, ignore_index=IGNORE, synth=_synth, prepare=_prepare)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        classes: Sequence[str] | None = None,
        labels: str = "labels.txt",
        ids: Iterable[str] | None = None,
    ) -> None:
        root = require_dir(root, "Data root")
        folder = root if split in (None, "", ".") else require_dir(root / split, "Split folder")
        files = list_files(folder, (".json",))
        if not files:
            raise DataError(
                f"No labelme .json files in {str(folder)!r}. Point data.root at the folder of "
                "labelme files (or set the split to the sub-folder holding them)."
            )
        self._embedded: set[str] = set()
        self._used: set[str] = set()
        samples = [self._sample(path) for path in files]
        names, self.class_source = self._classes(classes, folder, root, labels, self._used)
        self.split, self._skipped = split, 0
        labels = {"rule": f"class list from {self.class_source}; background 0, __ignore__ 255",
                  "label_ids": {n: i for i, n in enumerate(names)}}  # fmt: skip
        super().__init__(select_ids(samples, ids, folder), transform, names, root,
                         facts={"labels": labels})  # fmt: skip

    def _sample(self, path: Path) -> Sample:
        data = read_labelme(path)
        self._used |= file_labels(data)
        image = find_image(data, path)
        if image is None:
            if not data.get("imageData"):
                embedded_image(data, path)  # raises, naming the file and the fix
            self._embedded.add(path.stem)
            image = path  # the image is inside the JSON
        return Sample(path.stem, image, path)

    @staticmethod
    def _classes(
        classes: Sequence[str] | None, folder: Path, root: Path, labels: str, used: set[str]
    ) -> tuple[list[str], str]:
        if classes is not None:
            if isinstance(classes, (str, int)):
                raise DataError(f"classes must be a list of class names, got {classes!r}.")
            names = [str(c) for c in classes if str(c) not in (IGNORE_LABEL, *BACKGROUND_LABELS)]
            return ["background", *names], "the classes option"
        for candidate in (folder / labels, root / labels):
            if candidate.is_file():
                return read_labels_txt(candidate), str(candidate.relative_to(root))
        return ["background", *sorted(used)], "the labels the files use (sorted)"

    def load_image(self, sample: Sample) -> np.ndarray:
        """The image file, or the image embedded in the JSON (``imageData``)."""
        if sample.id in self._embedded:
            return embedded_image(read_labelme(sample.mask_path), sample.mask_path)
        return super().load_image(sample)

    def label_shape(self, sample: Sample) -> tuple[int, int]:
        """The image's ``(height, width)``; an image inside the JSON is decoded for it."""
        if sample.id in self._embedded:
            return tuple(self.load_image(sample).shape[:2])  # type: ignore[return-value]
        return super().label_shape(sample)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The shapes painted as class ids; point and line shapes noted once and skipped."""
        ids = {name: i for i, name in enumerate(self.class_names)}
        mask, skipped = labelme_mask(read_labelme(sample.mask_path), ids, shape, sample.mask_path)
        if skipped and not self._skipped:
            warnings.warn(
                f"{sample.mask_path}: {skipped} point/line shape(s) skipped (they hold no area); "
                "segkit reads polygons, rectangles, circles and masks. This note is shown once.",
                stacklevel=2,
            )
        self._skipped += skipped
        return mask
