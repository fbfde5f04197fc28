"""Small synthetic sets as annotation tools export them (``segkit synth coco``): CVAT's COCO
1.0, labelme, a Roboflow YOLO segmentation export and CVAT's Segmentation mask 1.1.

Each image holds a rectangle and a polygonal disc of two classes on a background whose
colour follows the labels; the last image has no annotation (all background).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from segkit.data.formats.synth import SIZE, _photo
from segkit.data.synth import _check_destination

CLASSES = ("box", "disc")
_COLORS = ((0, 0, 0), (250, 50, 83), (51, 221, 255))


def _objects(rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """``(class index, N x 2 points)``: a rectangle left, a disc polygon right."""
    w, h = SIZE
    x0, y0 = rng.integers(2, w // 4), rng.integers(2, h // 3)
    box = np.array([[x0, y0], [x0 + w // 4, y0], [x0 + w // 4, y0 + h // 2], [x0, y0 + h // 2]])
    cx, cy, r = rng.uniform(0.62, 0.78) * w, rng.uniform(0.4, 0.6) * h, h / 4
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    disc = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    return [(0, box.astype(np.float64)), (1, np.round(disc, 2))]


def _draw(objects: list[tuple[int, np.ndarray]]) -> np.ndarray:
    mask = np.zeros(SIZE[::-1], np.uint8)
    for cls, points in objects:
        cv2.fillPoly(mask, [np.round(points - 0.5).astype(np.int32)], cls + 1)
    return mask


def _images(dst: Path, folder: Path, n: int, seed: int, suffix: str = ".jpg"):
    """Write ``n`` photos into ``folder``; yields ``(index, name, objects)`` (the last
    image's objects are empty)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        objects = _objects(rng) if i < n - 1 or n == 1 else []
        name = f"s{i}{suffix}"
        cv2.imwrite(str(folder / name), _photo(rng, _draw(objects))[..., ::-1])
        yield i, name, objects


def synth_coco(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """CVAT's "COCO 1.0": ``annotations/instances_default.json`` + ``images/``; category ids
    start at 1, and one unused category (as CVAT exports every label of a task)."""
    dst = Path(dst)
    _check_destination("synth_coco", [dst / "images", dst / "annotations"], overwrite=overwrite)
    images, anns = [], []
    for i, name, objects in _images(dst, dst / "images", n, seed):
        images.append({"id": i + 1, "file_name": name, "width": SIZE[0], "height": SIZE[1]})
        for cls, points in objects:
            x, y = points.min(axis=0)
            w, h = points.max(axis=0) - points.min(axis=0)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1,
                         "segmentation": [points.reshape(-1).tolist()], "area": float(w * h),
                         "bbox": [float(x), float(y), float(w), float(h)], "iscrowd": 0})  # fmt: skip
    cats = [{"id": k + 1, "name": c, "supercategory": ""} for k, c in enumerate(CLASSES)]
    cats.append({"id": 3, "name": "unused", "supercategory": ""})
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    data = {"images": images, "annotations": anns, "categories": cats}
    (dst / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return dst


def synth_labelme(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """A flat folder of labelme 5 JSONs beside their images, with ``labels.txt``."""
    dst = Path(dst)
    _check_destination("synth_labelme", [dst], overwrite=overwrite)
    for _, name, objects in _images(dst, dst, n, seed):
        shapes = [
            {"label": CLASSES[cls], "points": points.tolist(), "group_id": None,
             "shape_type": "polygon", "flags": {}}
            for cls, points in objects
        ]  # fmt: skip
        data = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name,
                "imageData": None, "imageHeight": SIZE[1], "imageWidth": SIZE[0]}  # fmt: skip
        (dst / name).with_suffix(".json").write_text(json.dumps(data, indent=2))
    (dst / "labels.txt").write_text("\n".join(["__ignore__", "_background_", *CLASSES]) + "\n")
    return dst


def synth_yolo_seg(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """Roboflow's YOLO export: ``train/`` and ``valid/`` with ``images/`` + ``labels/`` and a
    ``data.yaml`` whose paths are another machine's."""
    dst = Path(dst)
    _check_destination("synth_yolo_seg", [dst / "train", dst / "valid"], overwrite=overwrite)
    scale = np.array(SIZE, np.float64)
    for split, offset in (("train", 0), ("valid", 1000)):
        labels = dst / split / "labels"
        labels.mkdir(parents=True, exist_ok=True)
        for _, name, objects in _images(dst, dst / split / "images", n, seed + offset):
            lines = [" ".join([str(cls), *(f"{v:.6f}" for v in (points / scale).reshape(-1))])
                     for cls, points in objects]  # fmt: skip
            if lines:  # an image without objects has no label file, as Roboflow writes it
                (labels / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")
    (dst / "data.yaml").write_text(
        "path: C:\\Users\\someone\\Desktop\\export\\\ntrain: ../train/images\n"
        f"val: ../valid/images\n\nnc: {len(CLASSES)}\nnames: {list(CLASSES)}\n"
    )
    return dst


def synth_cvat_mask(dst: str | Path, n: int = 4, seed: int = 0, overwrite: bool = False) -> Path:
    """CVAT's "Segmentation mask 1.1": labelmap.txt, colour masks, the subset list
    ``default.txt`` and ``JPEGImages/``."""
    dst = Path(dst)
    subs = [dst / s for s in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation")]
    _check_destination("synth_cvat_mask", subs, overwrite=overwrite)
    for sub in subs[1:]:
        sub.mkdir(parents=True, exist_ok=True)
    names = []
    for _, name, objects in _images(dst, subs[0], n, seed):
        rgb = np.array(_COLORS, np.uint8)[_draw(objects)]
        cv2.imwrite(str(subs[1] / f"{Path(name).stem}.png"), rgb[..., ::-1])
        names.append(Path(name).stem)
    (subs[2] / "default.txt").write_text("\n".join(names) + "\n")
    lines = ["# label:color_rgb:parts:actions"]
    lines += [
        f"{c}:{','.join(map(str, rgb))}::" for c, rgb in zip(("background", *CLASSES), _COLORS)
    ]
    (dst / "labelmap.txt").write_text("\n".join(lines) + "\n")
    return dst
