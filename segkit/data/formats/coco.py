"""COCO instance annotations (polygons and RLE) read as semantic masks: ``coco``.

Three layouts, found in this order (or name the JSON with ``annotations=``)::

    CVAT "COCO 1.0" / COCO's own         <root>/annotations/instances_<split>.json
                                         <root>/images/<file_name>   (or <root>/<split>/...)
    Roboflow                             <root>/<split>/_annotations.coco.json, images beside
    one JSON, no split (labelme2coco)    <root>/annotations.json (the only *.json in <root>),
                                         <file_name> taken relative to the JSON's folder

The JSON is parsed once into a compact index (:class:`CocoIndex`: a few flat numpy arrays,
images' sizes and names, annotations' class, crowd flag and segmentation as float64 polygon
coordinates or compressed RLE bytes, no Python object per annotation); the parsed file itself
is dropped, so a loader worker process shares the index's arrays with its parent
(copy-on-write pages that reading never writes) instead of holding a copy of the file.
Masks are drawn with pycocotools (``pip install 'segkit[coco]'``), exactly as its
``COCO.annToMask`` draws them.

Category ids -> class ids (the rule, :data:`CATEGORY_RULE`, is recorded with the mapping):
class 0 is ``background``; then each category in ascending id order (id 0 included) gets
the next class id, except (a) a category no annotation uses that another category names as
its ``supercategory`` (Roboflow's umbrella category), which is dropped; (b) a category named
``background`` or ``_background_``, which is class 0; (c) categories with one name and one
supercategory, which share one class; two of one name under different supercategories
become ``"<name> (<supercategory>)"``. Categories no annotation uses otherwise stay classes
(CVAT exports every label of the task), so every split of one export has the same classes.

Overlaps: objects are painted largest first (pixel count), so a smaller object on top of a
larger one (a knob on a console) stays visible; ties keep the file's order. ``iscrowd: 1``
annotations are objects like any other (CVAT writes brush masks so); with
``crowd="ignore"`` their pixels become the ignore index 255 unless an object covers them.
An image without annotations is all background.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.formats.multilabel import MultiLabelDataset
from segkit.data.formats.rasterize import prepare_export
from segkit.data.formats.shapes import check_inside, number, points_array
from segkit.data.io import DataNotFoundError, name_some, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: the rule that maps category ids to class ids, as recorded in the metadata
CATEGORY_RULE = (
    "class 0 = background; then categories in ascending id order, one class each; dropped: "
    "an unused category that is another's supercategory; 'background'/'_background_' -> 0; "
    "same name and supercategory -> one class; same name, other supercategory -> "
    "'name (supercategory)'"
)
CROWD = ("object", "ignore")
MODES = ("semantic", "multilabel")
BACKGROUND_NAMES = ("background", "_background_")


def coco_api() -> Any:
    """``pycocotools.mask``, or a DataError saying how to install it."""
    try:
        from pycocotools import mask
    except ImportError:
        raise DataError(
            "Reading COCO annotations needs pycocotools: pip install 'segkit[coco]' "
            "(or pip install pycocotools)."
        ) from None
    return mask


@dataclass(frozen=True, slots=True)
class CocoAnnotation:
    """One object, as :meth:`CocoIndex.image` hands it out: its id (-1 when not a number),
    class id, crowd flag and segmentation (a tuple of N x 2 float64 polygons, or a compressed
    RLE ``{"size": [h, w], "counts": bytes}``)."""

    id: Any
    cls: int
    crowd: bool
    segmentation: tuple[np.ndarray, ...] | dict[str, Any]


@dataclass(frozen=True, slots=True)
class CocoImage:
    """One image, as :meth:`CocoIndex.image` hands it out: file name (as the JSON writes
    it), size, annotations."""

    file_name: str
    height: int
    width: int
    annotations: tuple[CocoAnnotation, ...]


@dataclass(frozen=True)
class CocoIndex:
    """What segkit keeps of a COCO JSON: the classes, the category mapping and, for every
    image and annotation, a few flat numpy arrays (no Python object per annotation, so a
    loader worker process shares them with its parent instead of copying them as it reads;
    :meth:`image` builds one image's entry when a sample is read).

    Attributes:
        path: the JSON file.
        classes: class names, ``background`` first.
        category_ids: category id -> class id (every category the file lists, except dropped
            ones).
        names, name_start: the images' file names, UTF-8 in one buffer; image ``i``'s is
            ``names[name_start[i]:name_start[i + 1]]``.
        heights, widths: each image's size.
        image_start, image_annotations: image ``i``'s annotations (file order) are
            ``image_annotations[image_start[i]:image_start[i + 1]]``.
        ids, cls, crowd, is_rle, part_start: per annotation its id (-1: not a number), class
            id, crowd flag, kind, and its parts ``part_start[a]:part_start[a + 1]``.
        spans, coords, rle: part ``k`` is ``coords[start:stop]`` (a polygon's x, y float64
            pairs) or, for an RLE annotation, ``rle[start:stop]`` (compressed RLE bytes),
            where ``start, stop = spans[k]``.
        boxes: how many annotations had no segmentation and were drawn as their ``bbox``.
    """

    path: Path
    classes: tuple[str, ...]
    category_ids: Mapping[int, int]
    names: np.ndarray
    name_start: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    image_start: np.ndarray
    image_annotations: np.ndarray
    ids: np.ndarray
    cls: np.ndarray
    crowd: np.ndarray
    is_rle: np.ndarray
    part_start: np.ndarray
    spans: np.ndarray
    coords: np.ndarray
    rle: np.ndarray
    boxes: int = 0

    def __len__(self) -> int:
        return len(self.heights)

    def file_name(self, i: int) -> str:
        """Image ``i``'s ``file_name`` as the JSON writes it."""
        return self.names[self.name_start[i] : self.name_start[i + 1]].tobytes().decode()

    def annotation(self, a: int, height: int, width: int) -> CocoAnnotation:
        """Annotation ``a`` (file order) of an image of ``height x width``."""
        spans = self.spans[self.part_start[a] : self.part_start[a + 1]]
        if self.is_rle[a]:
            start, stop = spans[0]
            seg: Any = {"size": [height, width], "counts": self.rle[start:stop].tobytes()}
        else:
            seg = tuple(self.coords[start:stop].reshape(-1, 2) for start, stop in spans)
        return CocoAnnotation(int(self.ids[a]), int(self.cls[a]), bool(self.crowd[a]), seg)

    def image(self, i: int) -> CocoImage:
        """Image ``i``: its file name, size and annotations (file order)."""
        anns = self.image_annotations[self.image_start[i] : self.image_start[i + 1]]
        height, width = int(self.heights[i]), int(self.widths[i])
        objects = tuple(self.annotation(int(a), height, width) for a in anns)
        return CocoImage(self.file_name(i), height, width, objects)

    @property
    def images(self) -> list[CocoImage]:
        """Every image (built on demand: for tests and small files)."""
        return [self.image(i) for i in range(len(self))]


def read_coco_json(path: str | Path) -> dict[str, Any]:
    """The parsed JSON, checked to be COCO (``images``, ``annotations``, ``categories``).

    Raises:
        DataError: not JSON, or not a COCO instances file (names the file and the fix).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"COCO annotation file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{str(path)!r} is not JSON ({exc}); give the COCO instances file the tool exported."
        ) from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(
        data.get(k) if isinstance(data, dict) else None, list)]  # fmt: skip
    if missing:
        raise DataError(
            f"{str(path)!r} is not a COCO instances file: no {' / '.join(missing)} list. "
            "Export 'COCO' (instances, with segmentation) from the annotation tool."
        )
    return data


def map_categories(
    categories: list[dict[str, Any]], used: set[int], path: Path
) -> tuple[list[str], dict[int, int]]:
    """Class names and category id -> class id by :data:`CATEGORY_RULE`.

    Args:
        categories: the JSON's ``categories``.
        used: the category ids annotations use.

    Raises:
        DataError: a category without an id or name, or one id listed twice.
    """
    cats: dict[int, tuple[str, str]] = {}
    for n, cat in enumerate(categories):
        where = f"{path}: category {n + 1}"
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{where} has no id or name; give each category both.")
        cid = number(cat["id"], f"{where} id", int)
        if cid in cats:
            raise DataError(f"{path}: category id {cid} is listed twice; give each its own id.")
        cats[cid] = (str(cat["name"]).strip(), str(cat.get("supercategory") or "").strip())
    supers = {sup for _, sup in cats.values()}
    kept = {i: c for i, c in cats.items() if i in used or c[0] not in supers}
    names_of = defaultdict(set)
    for name, sup in kept.values():
        names_of[name].add(sup)
    classes, ids, by_key = ["background"], {}, {}
    for cid in sorted(kept):
        name, sup = kept[cid]
        if name.lower() in BACKGROUND_NAMES:
            ids[cid] = 0
            continue
        key = (name, sup if len(names_of[name]) > 1 else "")
        if key not in by_key:
            by_key[key] = len(classes)
            classes.append(f"{name} ({sup})" if key[1] else name)
        ids[cid] = by_key[key]
    return classes, ids


def _segmentation(
    seg: Any, bbox: Any, image: tuple[int, int], where: str
) -> tuple[np.ndarray, ...] | dict[str, Any] | None:
    """An annotation's segmentation in compact form (None: nothing to draw)."""
    height, width = image
    fix = "fix or delete the annotation in the tool and export again."
    if isinstance(seg, dict):
        return _rle(seg, height, width, where)
    if seg in (None, [], ""):
        if bbox is None or len(bbox) != 4:
            return None
        x, y, w, h = (number(v, f"{where} bbox") for v in bbox)
        seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]  # a rectangle (CVAT's boxes)
    if not isinstance(seg, list):
        raise DataError(f"{where}: segmentation {str(seg)[:40]} is neither polygons nor RLE; {fix}")
    if seg and not isinstance(seg[0], (list, tuple)):
        seg = [seg]  # one polygon, not wrapped in a list
    polygons = []
    for k, poly in enumerate(seg):
        part = f"{where} polygon {k + 1}" if len(seg) > 1 else where
        points = points_array(poly, part, fix)
        check_inside(points, height, width, part, fix)
        polygons.append(points)
    return tuple(polygons)


def _rle(seg: dict[str, Any], height: int, width: int, where: str) -> dict[str, Any]:
    """Compressed RLE (counts as bytes) of an uncompressed or compressed RLE segmentation."""
    size, counts = seg.get("size"), seg.get("counts")
    try:
        size = [number(v, f"{where} size", int) for v in size]
    except TypeError:
        size = None
    if size != [height, width] or counts is None:
        raise DataError(
            f"{where}: RLE of size {seg.get('size')!r} for an image of height {height}, width "
            f"{width}; give 'size': [{height}, {width}] and 'counts' (re-export the masks)."
        )
    if isinstance(counts, list):  # uncompressed: compress once, here
        counts = [number(c, f"{where} counts", int) for c in counts]
        if sum(counts) != height * width:
            raise DataError(
                f"{where}: the RLE counts add up to {sum(counts)} pixels, not {height}x{width} = "
                f"{height * width}; re-export the mask."
            )
        rle = coco_api().frPyObjects({"size": size, "counts": counts}, height, width)
        return {"size": size, "counts": rle["counts"]}
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": size, "counts": bytes(counts)}


def _images(data: dict[str, Any], path: Path) -> dict[Any, tuple[str, int, int]]:
    """image id -> (file_name, height, width); ids as numbers when they are numbers."""
    images: dict[Any, tuple[str, int, int]] = {}
    for n, im in enumerate(data["images"]):
        where = f"{path}: image {n + 1}"
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise DataError(f"{where} has no id or file_name; give each image both.")
        key = _key(im["id"])
        if key in images:
            raise DataError(f"{path}: image id {im['id']!r} is listed twice; give each its own id.")
        h, w = im.get("height"), im.get("width")
        if h is None or w is None:
            raise DataError(f"{where} ({im['file_name']}) has no height/width; add them.")
        size = (number(h, f"{where} height", int), number(w, f"{where} width", int))
        images[key] = (str(im["file_name"]), *size)
    return images


def _key(value: Any) -> Any:
    """An id as a key: ``3``, ``3.0`` and ``"3"`` are one id; other strings stay strings."""
    try:
        return number(value, "", int)
    except DataError:
        return str(value)


class _Arrays:
    """The lists :func:`build_index` fills, annotation by annotation, as flat arrays."""

    def __init__(self) -> None:
        self.image, self.ids, self.cls, self.crowd, self.is_rle = [], [], [], [], []
        self.part_start, self.spans = [0], []
        self.coords: list[np.ndarray] = []
        self.rle: list[bytes] = []
        self.sizes = {"coords": 0, "rle": 0}

    def add(self, image: int, aid: Any, cls: int, crowd: bool, seg: Any) -> None:
        self.image.append(image)
        self.ids.append(aid if isinstance(aid, int) else -1)
        self.cls.append(cls)
        self.crowd.append(crowd)
        self.is_rle.append(isinstance(seg, dict))
        parts = [seg["counts"]] if isinstance(seg, dict) else [p.reshape(-1) for p in seg]
        store = self.rle if isinstance(seg, dict) else self.coords
        key = "rle" if isinstance(seg, dict) else "coords"
        for part in parts:
            store.append(part)
            self.spans.append((self.sizes[key], self.sizes[key] + len(part)))
            self.sizes[key] += len(part)
        self.part_start.append(len(self.spans))

    def index(self, path: Path, classes: list[str], ids: dict[int, int], images: dict,
              boxes: int) -> CocoIndex:  # fmt: skip
        names = [f.encode() for f, _, _ in images.values()]
        image = np.asarray(self.image, np.int64)
        order = np.argsort(image, kind="stable")  # each image's annotations, in file order
        counts = np.bincount(image, minlength=len(images))
        return CocoIndex(
            path, tuple(classes), ids,
            names=np.frombuffer(b"".join(names), np.uint8).copy(),
            name_start=np.cumsum([0, *map(len, names)], dtype=np.int64),
            heights=np.asarray([h for _, h, _ in images.values()], np.int32),
            widths=np.asarray([w for _, _, w in images.values()], np.int32),
            image_start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            image_annotations=order.astype(np.int64),
            ids=np.asarray(self.ids, np.int64), cls=np.asarray(self.cls, np.int32),
            crowd=np.asarray(self.crowd, bool), is_rle=np.asarray(self.is_rle, bool),
            part_start=np.asarray(self.part_start, np.int64),
            spans=np.asarray(self.spans, np.int64).reshape(-1, 2),
            coords=np.concatenate(self.coords) if self.coords else np.zeros(0),
            rle=np.frombuffer(b"".join(self.rle), np.uint8).copy(), boxes=boxes,
        )  # fmt: skip


def build_index(data: dict[str, Any], path: str | Path) -> CocoIndex:
    """The compact index of a parsed COCO JSON (see the module docstring for the rules).

    Raises:
        DataError: an annotation of an unknown image or category, a polygon of fewer than 3
            points, points outside the image, a malformed RLE (each names the file, the
            annotation id and the fix).
    """
    path = Path(path)
    images = _images(data, path)
    position = {key: i for i, key in enumerate(images)}
    anns = data["annotations"]
    used = set()
    for n, ann in enumerate(anns):
        if not isinstance(ann, dict) or "category_id" not in ann or "image_id" not in ann:
            raise DataError(
                f"{path}: annotation {n + 1} has no image_id or category_id; give it both."
            )
        used.add(_key(ann["category_id"]))
    classes, ids = map_categories(data["categories"], used, path)
    arrays, boxes = _Arrays(), 0
    for n, ann in enumerate(anns):
        aid = ann.get("id", f"#{n + 1}")
        where = f"{path}: annotation {aid}"
        image = images.get(_key(ann["image_id"]))
        if image is None:
            raise DataError(
                f"{where} names image_id {ann['image_id']!r}, which the file's images do not "
                "list; add the image or delete the annotation."
            )
        where += f" (image {image[0]})"
        cat = _key(ann["category_id"])
        if cat not in ids:
            have = sorted(i for i in ids)
            raise DataError(
                f"{where} names category_id {ann['category_id']!r}, which no category has "
                f"(ids: {name_some(have, 8)}); add the category or fix the annotation."
            )
        seg = _segmentation(ann.get("segmentation"), ann.get("bbox"), image[1:], where)
        boxes += ann.get("segmentation") in (None, [], "") and seg is not None
        if seg is not None:
            crowd = bool(number(ann.get("iscrowd", 0), f"{where} iscrowd", int))
            arrays.add(position[_key(ann["image_id"])], _key(aid), ids[cat], crowd, seg)
    return arrays.index(path, classes, ids, images, boxes)


def annotation_rle(ann: CocoAnnotation, height: int, width: int) -> dict[str, Any]:
    """One annotation as one compressed RLE (polygons joined, as ``annToMask`` joins them)."""
    seg = ann.segmentation
    if isinstance(seg, dict):
        return seg
    api = coco_api()
    return api.merge(api.frPyObjects([p.reshape(-1).tolist() for p in seg], height, width))


def annotation_mask(ann: CocoAnnotation, height: int, width: int) -> np.ndarray:
    """One annotation's pixels as HxW uint8 0/1, drawn by pycocotools (as ``annToMask``)."""
    return coco_api().decode(annotation_rle(ann, height, width))


def _object_masks(image: CocoImage) -> list[tuple[CocoAnnotation, np.ndarray]]:
    """Each annotation with its mask (Fortran order, as pycocotools decodes), largest first
    (pixel count, from the RLE; ties in file order)."""
    api = coco_api()
    rles = [annotation_rle(ann, image.height, image.width) for ann in image.annotations]
    areas = [int(api.area(rle)) for rle in rles]
    order = sorted(range(len(rles)), key=lambda i: (-areas[i], i))
    return [(image.annotations[i], api.decode(rles[i])) for i in order]


def semantic_mask(image: CocoImage, ignore_crowd: bool = False, ignore: int = 255) -> np.ndarray:
    """The image's class ids (HxW uint8): objects largest first, smaller on top; with
    ``ignore_crowd`` crowd regions are ``ignore`` where no object covers them."""
    out = np.zeros((image.height, image.width), np.uint8, order="F")  # the masks' order: fast
    objects = _object_masks(image)
    if ignore_crowd:
        for ann, mask in objects:
            if ann.crowd:
                np.copyto(out, ignore, where=mask.view(bool))
        objects = [(a, m) for a, m in objects if not a.crowd]
    for ann, mask in objects:
        np.copyto(out, ann.cls, where=mask.view(bool))
    return np.ascontiguousarray(out)


def class_planes(image: CocoImage, classes: int) -> np.ndarray:
    """One 0/1 plane per class (``classes`` planes, background's first: C x H x W uint8)."""
    out = np.zeros((classes, image.height, image.width), np.uint8)
    for ann, mask in _object_masks(image):
        out[ann.cls] |= mask
    return out


def find_coco_json(root: Path, split: str | None) -> Path:
    """The JSON of ``split`` in one of the three layouts (module docstring).

    Raises:
        DataNotFoundError: none found (lists what was looked for and the JSONs there are).
    """
    if split in (None, "", "."):
        found = sorted((root / "annotations").glob("instances_*.json")) or sorted(
            root.glob("*.json")
        )
        if len(found) == 1:
            return found[0]
        where = [str(root / "annotations" / "instances_*.json"), str(root / "*.json")]
    else:
        candidates = [
            root / "annotations" / f"instances_{split}.json",
            root / split / "_annotations.coco.json",
            root / "annotations" / f"{split}.json",
            root / f"{split}.json",
        ]
        for path in candidates:
            if path.is_file():
                return path
        where = [str(p) for p in candidates]
        found = sorted(root.glob("annotations/*.json")) + sorted(
            root.glob("*/_annotations.coco.json")
        )
    there = (
        f" JSONs there: {name_some([str(p.relative_to(root)) for p in found], 6)}." if found else ""
    )
    raise DataNotFoundError(
        f"No COCO annotation file for split {split!r} in {str(root)!r}: looked for "
        f"{', '.join(where)}.{there} Set the split to the part after instances_ (CVAT: "
        "default), or give the file as data.options.annotations."
    )


def image_folder(index: CocoIndex, root: Path, split: str | None, images: str | None) -> Path:
    """The folder the images' ``file_name`` is relative to: ``images`` when given, else the
    first of the JSON's folder, ``<root>/images``, ``<root>/images/<split>``,
    ``<root>/<split>``, ``<root>`` that holds the first image.

    Raises:
        DataNotFoundError: none holds it (names the file and where it was looked for).
    """
    json_dir = index.path.parent
    if images is not None:
        bases = [root / images]
    else:
        bases = [json_dir, root / "images"]
        if split not in (None, "", "."):
            bases += [root / "images" / split, root / split]
        bases.append(root)
    first = index.file_name(0) if len(index) else None
    if first is None:
        raise DataError(f"{str(index.path)!r} lists no images; export the images' annotations.")
    for base in bases:
        if (base / first).is_file():
            return base
    raise DataNotFoundError(
        f"{str(index.path)!r} names the image {first!r}, which is in none of "
        f"{', '.join(repr(str(b)) for b in dict.fromkeys(bases))}. Put the images there, or give "
        "their folder as data.options.images (relative to data.root)."
    )


def check_images(index: CocoIndex, base: Path) -> list[Path]:
    """Each image's file under ``base``, in the index's order.

    Raises:
        DataNotFoundError: an image the JSON names is missing (names it, with the fix).
    """
    paths = [base / index.file_name(i) for i in range(len(index))]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataNotFoundError(
            f"{str(index.path)!r} names {len(missing)} image(s) that are not in {str(base)!r}: "
            f"{name_some(p.name for p in missing)}. Add them, or delete them from the JSON."
        )
    return paths


def unique_stems(paths: Iterable[Path], where: Path) -> list[str]:
    """Sample ids (file stems); two images with one stem is an error naming both."""
    seen: dict[str, Path] = {}
    for p in paths:
        if p.stem in seen:
            raise DataError(
                f"{str(where)!r} names two images with the stem {p.stem!r} ({seen[p.stem]} and "
                f"{p}); predictions are written by stem: rename one."
            )
        seen[p.stem] = p
    return list(seen)


def _prepare(
    src: str | Path,
    dst: str | Path,
    split: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    crowd: str = "object",
    annotations: str | None = None,
    images: str | None = None,
) -> tuple[str, list[str]]:
    """``segkit prepare coco``: the export rasterised once to PNG label maps in the folder
    layout (:func:`~segkit.data.formats.rasterize.prepare_export`; crowd (``--crowd``), annotations, images: as the reader's options)."""
    return prepare_export(
        CocoDataset,
        "coco",
        src,
        dst,
        split=split,
        workers=workers,
        overwrite=overwrite,
        crowd=crowd,
        annotations=annotations,
        images=images,
    )


def _synth(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth coco``: a small CVAT "COCO 1.0" export; the message to show."""
    from segkit.data.formats.synth_annotations import synth_coco

    synth_coco(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} images and annotations/instances_default.json (CVAT's COCO 1.0) to {dst}"


@register_dataset("coco")
class CocoDataset(SegmentationDataset):
    """COCO instance annotations (polygons, RLE) as class-id masks, or one mask per class.

    Args:
        root: the export's folder.
        split: ``instances_<split>.json`` (CVAT: ``default``) or Roboflow's ``<split>/``;
            None or ".": the one COCO JSON in ``root``.
        transform: albumentations pipeline, or None.
        annotations: the JSON file itself (relative to ``root``); overrides the search.
        images: the folder ``file_name`` is relative to (relative to ``root``); default:
            found (the JSON's folder, ``images/``, ``images/<split>``, ``<split>/``, root).
        crowd: ``object`` (``iscrowd`` annotations are objects, as CVAT's brush masks are)
            or ``ignore`` (their pixels are 255, left out, where no object covers them).
        mode: ``semantic`` (one class id per pixel) or ``multilabel`` (one 0/1 mask per
            category, overlaps kept; no background class).
        ids: keep only these ids (image file stems), in this order.
    """

    meta = DatasetMeta(flip_pairs=None, synth=_synth, prepare=_prepare)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        annotations: str | None = None,
        images: str | None = None,
        crowd: str = "object",
        mode: str = "semantic",
        ids: Iterable[str] | None = None,
    ) -> None:
        for key, value, valid in (("crowd", crowd, CROWD), ("mode", mode, MODES)):
            if value not in valid:
                raise DataError(f"{key} must be one of {', '.join(valid)}, got {value!r}.")
        if crowd == "ignore" and mode == "multilabel":
            raise DataError("crowd='ignore' needs mode='semantic' (a 0/1 mask cannot leave out).")
        root = require_dir(root, "Data root")
        path = root / annotations if annotations else find_coco_json(root, split)
        self.index = build_index(read_coco_json(path), path)  # the parsed JSON is dropped here
        if self.index.boxes:
            warnings.warn(
                f"{path}: {self.index.boxes} annotation(s) have no segmentation and are drawn as "
                "their bbox (CVAT's rectangles); export polygons or masks for object outlines.",
                stacklevel=2,
            )
        paths = check_images(self.index, image_folder(self.index, root, split, images))
        stems = unique_stems(paths, path)
        self._position = {stem: i for i, stem in enumerate(stems)}
        samples = [Sample(stem, p, path) for stem, p in zip(stems, paths)]
        self.split, self.crowd, self.mode = split, crowd, mode
        names = self.index.classes[1:] if mode == "multilabel" else self.index.classes
        facts: dict[str, Any] = {"labels": self._labels()}
        if crowd == "ignore":
            facts["ignore_index"] = 255
        if mode == "multilabel":  # one plane per category: a flip keeps the planes as they are
            facts.update(multilabel=True, flip_pairs=())
        super().__init__(select_ids(samples, ids, path), transform, names, root, facts=facts)

    def _labels(self) -> dict[str, Any]:
        """The category rule and mapping, as recorded (multi-label: without background)."""
        shift = self.mode == "multilabel"
        ids = {str(k): v - shift for k, v in self.index.category_ids.items() if v or not shift}
        return {"rule": CATEGORY_RULE, "category_ids": ids}

    def image_entry(self, sample: Sample) -> CocoImage:
        """The index's entry of a sample (built from the index's arrays)."""
        return self.index.image(self._position[sample.id])

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """Class ids (HxW uint8), or in multi-label mode one 0/1 plane per category."""
        image = self.image_entry(sample)
        if tuple(shape) != (image.height, image.width):
            raise DataError(
                f"Image {str(sample.image_path)!r} is {shape[1]}x{shape[0]}, but "
                f"{str(self.index.path)!r} gives it as {image.width}x{image.height} (width x "
                "height); export the annotations of this image again (or fix width/height)."
            )
        if self.mode == "multilabel":
            return class_planes(image, len(self.index.classes))[1:]
        return semantic_mask(image, self.crowd == "ignore", 255)

    def check_pair(self, image: np.ndarray, mask: np.ndarray, sample: Sample) -> np.ndarray:
        """Multi-label mode: the planes as they are (drawn 0/1 at the image's size)."""
        if self.mode == "multilabel":
            return mask
        return super().check_pair(image, mask, sample)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "multilabel":  # the multi-label data set's item: C x H x W planes
            return MultiLabelDataset.__getitem__(self, index)  # type: ignore[arg-type]
        return super().__getitem__(index)
