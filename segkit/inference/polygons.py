"""Predicted masks as polygons that annotation tools open: labelme JSONs and COCO JSON.

Pure functions first (:func:`mask_regions`, :func:`labelme_shapes`, :func:`coco_annotations`,
:func:`labelme_document`), then :class:`CocoCollector`, which gathers one run's images into
one COCO file.

How a mask becomes polygons (``docs/data.md``, "Predictions as polygons"):

- Each 8-connected component of a class is one object. Components of fewer than
  ``min_area`` pixels are dropped (default 0: none are).
- Its outline is traced by OpenCV's ``findContours`` (``RETR_CCOMP``: outer outlines and their
  holes) on the mask enlarged twice, so the outline runs a quarter pixel inside the pixels'
  outer edges: every pixel centre of the object is inside it and no other, and a one-pixel
  object is a small square rather than a point. The outline is then simplified with
  ``approxPolyDP`` (``epsilon`` pixels, default 1; 0 keeps every corner).
- Holes: COCO polygons cannot hold holes, so with ``coco`` an object with holes is written
  as RLE (``coco-rle`` writes every object as RLE); labelme has no holes either, so a hole is
  written as a polygon labelled ``_background_`` after the shape it cuts (shapes are written
  largest first, so labelme, ``labelme2voc`` and segkit's ``labelme`` reader paint the hole
  over the object and anything inside the hole over the hole). Holes of fewer than
  ``min_area`` pixels are filled.

Coordinates are in the tools' convention: pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from segkit.errors import ConfigError, option

#: what ``polygons`` may be: labelme JSONs per image, or one COCO JSON (polygons, or RLE)
POLYGON_FORMATS = ("labelme", "coco", "coco-rle")
#: the COCO file a run writes in its output folder (the ``coco`` reader finds it with no split)
COCO_FILE = "annotations.json"
#: the class list a labelme run writes beside its JSONs (read by the ``labelme`` reader)
LABELS_FILE = "labels.txt"
#: the labelme file version written (labelme 5.x fields)
LABELME_VERSION = "5.4.1"
HOLE_LABEL = "_background_"


def check_polygons(value: str | None, epsilon: float, min_area: int) -> None:
    """Refuse an unknown polygon format, a negative epsilon or minimum area (ConfigError)."""
    if value is not None and value not in POLYGON_FORMATS:
        raise ConfigError(
            f"Unknown {option('polygons', repr(value))}; use one of {', '.join(POLYGON_FORMATS)} "
            "(or leave it out)."
        )
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
        raise ConfigError(f"{option('polygon_epsilon', epsilon)}: must be a number >= 0 (pixels).")
    if isinstance(min_area, bool) or not isinstance(min_area, int) or min_area < 0:
        raise ConfigError(
            f"{option('polygon_min_area', min_area)}: must be a whole number >= 0 (pixels)."
        )


@dataclass(frozen=True)
class Region:
    """One object of a class: its outline, its holes (N x 2 float64 arrays in the tools'
    pixel-corner coordinates), its pixel count and its component label."""

    outline: np.ndarray
    holes: tuple[np.ndarray, ...]
    area: int
    component: int  # its label in cv2.connectedComponentsWithStats(mask, connectivity=8)


def _simplify(contour: np.ndarray, epsilon: float) -> np.ndarray:
    """A contour of the twice-enlarged mask as image coordinates, simplified."""
    if epsilon > 0:
        simpler = cv2.approxPolyDP(contour, 2 * epsilon, True)
        contour = simpler if len(simpler) >= 3 else contour
    points = contour.reshape(-1, 2).astype(np.float64)
    return (points + 0.5) / 2.0  # sub-pixel centres of the enlarged mask, in image coordinates


def _outlines(crop: np.ndarray, corner: tuple[int, int], epsilon: float) -> list[np.ndarray]:
    """The outer outlines of the components of ``crop`` (0/1, padded by one pixel; ``corner``:
    its top left in the image, padding excluded), traced on it enlarged twice."""
    big = cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    offset = np.array(corner, np.float64) - 1
    return [_simplify(c, epsilon) + offset for c in contours]


def _holes(crop: np.ndarray, min_area: int) -> np.ndarray:
    """The holes of one component (``crop`` padded by one pixel): pixels its outline encloses
    that are not its own, holes of fewer than ``min_area`` pixels left out."""
    outside = crop.copy()
    cv2.floodFill(outside, None, (0, 0), 2)  # everything the padding reaches
    holes = (outside == 0).astype(np.uint8)
    if min_area > 1 and holes.any():
        count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
        small = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] < min_area)
        holes[np.isin(labels, small[small > 0])] = 0
    return holes


def mask_regions(mask: np.ndarray, epsilon: float = 1.0, min_area: int = 0) -> list[Region]:
    """The objects of a 0/1 (or boolean) ``H x W`` mask, largest first (module docstring).

    Args:
        mask: the class's pixels.
        epsilon: ``approxPolyDP``'s tolerance in pixels (0: every corner kept).
        min_area: components (and holes) of fewer pixels are dropped (holes filled).
    """
    binary = (np.asarray(mask) > 0).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    regions = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < min_area:
            continue
        crop = np.zeros((h + 2, w + 2), np.uint8)
        crop[1:-1, 1:-1] = labels[y : y + h, x : x + w] == k
        outline = _outlines(crop, (x, y), epsilon)[0]
        holes = _holes(crop, min_area)
        traced = tuple(_outlines(holes, (x, y), epsilon)) if holes.any() else ()
        regions.append(Region(outline, traced, area, k))
    regions.sort(key=lambda r: -r.area)
    return regions


def class_masks(
    labels: np.ndarray, names: Sequence[str], background: int | None
) -> list[tuple[int, np.ndarray]]:
    """``(class id, 0/1 mask)`` of each class present: ``labels`` is an ``H x W`` label map
    (the background class left out) or a multi-label model's ``C x H x W`` masks (each
    written)."""
    if labels.ndim == 3:
        return [(c, labels[c]) for c in range(min(len(labels), len(names))) if labels[c].any()]
    present = np.unique(labels)
    return [
        (int(c), labels == c)
        for c in present
        if int(c) != background and int(c) < len(names)  # ids past the classes: not written
    ]


def labelme_shapes(
    labels: np.ndarray,
    names: Sequence[str],
    background: int | None,
    epsilon: float = 1.0,
    min_area: int = 0,
) -> list[dict[str, Any]]:
    """labelme 5.x ``shapes`` of a label map (or a multi-label model's masks): one polygon
    per object labelled with its class name, each hole a ``_background_`` polygon; largest
    first, so painting in order gives the mask back."""
    items: list[tuple[float, bool, int, dict[str, Any]]] = []
    for cls, mask in class_masks(labels, names, background):
        for region in mask_regions(mask, epsilon, min_area):
            parts = [(region.outline, str(names[cls]))]
            parts += [(hole, HOLE_LABEL) for hole in region.holes]
            for points, label in parts:
                size = abs(cv2.contourArea(points.astype(np.float32)))
                shape = _labelme_shape(points, label)
                items.append((-size, label != HOLE_LABEL, len(items), shape))
    items.sort(key=lambda item: item[:3])  # largest first; a hole before an object that fills it
    return [item[3] for item in items]


def _labelme_shape(points: np.ndarray, label: str) -> dict[str, Any]:
    return {
        "label": label,
        "points": [[round(float(x), 2), round(float(y), 2)] for x, y in points],
        "group_id": None,
        "description": "",
        "shape_type": "polygon",
        "flags": {},
        "mask": None,
    }


def labelme_document(
    shapes: list[dict[str, Any]], image_path: str, height: int, width: int
) -> dict[str, Any]:
    """A labelme 5.x file: the shapes over the image at ``image_path`` (relative to the JSON's
    folder), no embedded image data."""
    return {
        "version": LABELME_VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
    }


def labels_txt(names: Sequence[str], background: int | None) -> str:
    """labelme's ``labels.txt`` for these classes (``__ignore__``, ``_background_``, classes):
    with a background class 0 the ``labelme`` reader gives the model's class ids back; without
    one, each class id is one higher (the reader's class 0 is background)."""
    classes = [n for i, n in enumerate(names) if i != background]
    return "\n".join(["__ignore__", HOLE_LABEL, *map(str, classes)]) + "\n"


def category_ids(names: Sequence[str], background: int | None) -> dict[int, int]:
    """Class id -> COCO category id: the class id itself where class 0 is background (left
    out), else one higher (ids start at 1), so the ``coco`` reader's class ids are the model's
    where it has a background class."""
    shift = 0 if background == 0 else 1
    return {c: c + shift for c in range(len(names)) if c != background}


def _coco_api() -> Any:
    from segkit.data.formats.coco import coco_api

    return coco_api()


def coco_annotations(
    labels: np.ndarray,
    names: Sequence[str],
    background: int | None,
    rle: bool = False,
    epsilon: float = 1.0,
    min_area: int = 0,
) -> list[dict[str, Any]]:
    """COCO annotations (without ``id`` and ``image_id``) of a label map or multi-label
    masks: ``segmentation`` polygons (an object with holes, or every object with ``rle``:
    compressed RLE of its pixels), ``area`` and ``bbox`` as pycocotools computes them,
    ``category_id`` by :func:`category_ids`, ``iscrowd`` 0."""
    api = _coco_api()
    ids = category_ids(names, background)
    height, width = labels.shape[-2:]
    out = []
    for cls, mask in class_masks(labels, names, background):
        regions = mask_regions(mask, epsilon, min_area)
        objects = None
        if rle or any(r.holes for r in regions):
            objects = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)[1]
        for region in regions:
            if rle or region.holes:
                pixels = (objects == region.component).astype(np.uint8)
                code = api.encode(np.asfortranarray(pixels))
            else:
                flat = region.outline.reshape(-1).tolist()
                code = api.frPyObjects([flat], height, width)[0]
            segmentation = (
                {"size": [int(height), int(width)], "counts": code["counts"].decode("ascii")}
                if rle or region.holes
                else [[round(v, 2) for v in flat]]
            )
            bbox = [round(float(v), 2) for v in api.toBbox(code)]
            out.append({"category_id": ids[cls], "segmentation": segmentation,
                        "area": int(api.area(code)), "bbox": bbox, "iscrowd": 0})  # fmt: skip
    return out


@dataclass
class CocoCollector:
    """One run's images and annotations, in input order, written as one COCO JSON at the end
    (to a temporary name, renamed into place once every image is in).

    Attributes:
        path: the COCO JSON to write.
        names: the model's class names.
        background: the class left out (None: none).
    """

    path: Path
    names: Sequence[str]
    background: int | None
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, image: Path, size: tuple[int, int], annotations: list[dict[str, Any]]) -> None:
        """Add one image (its file, ``(height, width)``) and its annotations."""
        image_id = len(self.images) + 1
        name = Path(os.path.relpath(Path(image).resolve(), self.path.parent.resolve())).as_posix()
        self.images.append({"id": image_id, "file_name": name, "height": int(size[0]),
                            "width": int(size[1])})  # fmt: skip
        for ann in annotations:
            self.annotations.append({"id": len(self.annotations) + 1, "image_id": image_id, **ann})

    def document(self) -> dict[str, Any]:
        """The COCO file's content."""
        ids = category_ids(self.names, self.background)
        categories = [{"id": cid, "name": str(self.names[c]), "supercategory": ""}
                      for c, cid in ids.items()]  # fmt: skip
        return {
            "info": {"description": "segkit predictions"},
            "licenses": [],
            "images": self.images,
            "categories": categories,
            "annotations": self.annotations,
        }

    def write(self) -> None:
        """Write the file (a temporary name first, then renamed into place)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.document()), encoding="utf-8")
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class PolygonWriter:
    """Turns one image's label map (a multi-label model's masks) into polygons, in a writer
    thread: labelme writes ``<stem>.json`` at once, COCO hands its annotations back (the
    run's :class:`CocoCollector` gathers them in input order).

    Attributes:
        kind: one of :data:`POLYGON_FORMATS`.
        out_dir: the output folder.
        names: the model's class names.
        background: the class left out (None: none).
        epsilon: ``approxPolyDP``'s tolerance (pixels).
        min_area: objects and holes of fewer pixels are left out.
    """

    kind: str
    out_dir: Path
    names: tuple[str, ...]
    background: int | None
    epsilon: float = 0.5
    min_area: int = 0

    def __call__(self, labels: np.ndarray, image: Path) -> list[dict[str, Any]] | None:
        """Write ``<stem>.json`` (labelme; returns None) or return the COCO annotations."""
        if self.kind == "labelme":
            shapes = labelme_shapes(labels, self.names, self.background, self.epsilon,
                                    self.min_area)  # fmt: skip
            where = os.path.relpath(Path(image).resolve(), self.out_dir.resolve())
            doc = labelme_document(shapes, Path(where).as_posix(), *labels.shape[-2:])
            target = self.out_dir / f"{Path(image).stem}.json"
            target.write_text(json.dumps(doc, indent=2), encoding="utf-8")
            return None
        return coco_annotations(labels, self.names, self.background, self.kind == "coco-rle",
                                self.epsilon, self.min_area)  # fmt: skip

    def run_files(self) -> list[str]:
        """The files written once per run (``labels.txt`` or ``annotations.json``)."""
        return [LABELS_FILE] if self.kind == "labelme" else [COCO_FILE]

    def image_files(self, stem: str) -> list[str]:
        """The files written per image (labelme: ``<stem>.json``)."""
        return [f"{stem}.json"] if self.kind == "labelme" else []

    def start(self) -> CocoCollector | None:
        """Begin a run: labelme writes ``labels.txt`` now; COCO returns the collector."""
        if self.kind == "labelme":
            text = labels_txt(self.names, self.background)
            (self.out_dir / LABELS_FILE).write_text(text, encoding="utf-8")
            return None
        return CocoCollector(self.out_dir / COCO_FILE, self.names, self.background)
