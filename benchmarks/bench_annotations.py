"""Annotation exports: reading a COCO sample directly and prepared, against PNG masks.

A synthetic COCO export of N images (default 1,000 JPEGs of 640x480, as COCO's photos are,
with about seven objects each, as COCO averages: polygons of 16-40 points, some with two
parts, one in ten a crowd RLE; ten categories) is read three ways, untransformed
(``dataset.read(i)``: the image decoded and its mask drawn or read):

* ``direct``: the ``coco`` reader, rasterising with pycocotools as each sample is read;
* ``prepared``: ``segkit prepare coco`` (thread pool) wrote the ``folder`` layout (the JPEGs
  copied + PNG label maps + dataset.json); the ``folder`` reader reads it. This is the same
  images with PNG masks: the reference the budget (1.5x) is stated against;
* ``jpeg_only``: decoding the JPEG alone (the floor).

Each side is timed in alternating rounds over the same sample order; the ratios are paired
per round. Memory: one fresh process per side (``--child``) builds the data set (the whole
JSON's index for ``direct``), trains one epoch of a small U-Net on the first images with
loader workers 0, so that the data's memory is in the measured process, and reports its peak
RSS (VmHWM, :func:`_common.peak_rss_mib`); then it reads every sample through a DataLoader
with 2 worker processes (each running the garbage collector once, as a long epoch does) and
reports each worker's private memory (pages it does not share with the parent); for scale,
``direct`` does it once more with the parsed JSON kept beside the index (what a reader that
kept the file's dicts and lists would have each worker copy).

Run: ``python benchmarks/bench_annotations.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import (
    alternate,
    emit,
    median,
    option,
    paired_ratio,
    parse_args,
    peak_rss_mib,
    quiet,
    reset_peak_rss,
    workdir,
)

CATEGORIES = 10


def _polygon(rng: np.random.Generator, w: int, h: int) -> list[float]:
    """A star-shaped polygon of 16-40 points inside a ``w x h`` image, flat x, y list."""
    n = int(rng.integers(16, 41))
    r = rng.uniform(0.05, 0.2) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = r * rng.uniform(0.6, 1.0, n)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
    return np.round(pts, 2).reshape(-1).tolist()


def synth_export(root: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """COCO's layout (``annotations/instances_train.json`` + ``images/``); returns root."""
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8), (w, h))
    images, anns = [], []
    for i in range(n):
        photo = np.roll(base, int(rng.integers(0, w)), axis=1)
        cv2.imwrite(str(root / "images" / f"{i:06d}.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i + 1, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(4, 11))):
            cat = int(rng.integers(1, CATEGORIES + 1))
            ann = {"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0}
            if rng.random() < 0.1:  # a crowd region as compressed RLE
                drawn = np.zeros((h, w), np.uint8)
                cv2.fillPoly(drawn, [np.array(_polygon(rng, w, h)).reshape(-1, 2).astype(int)], 1)
                rle = mask_api.encode(np.asfortranarray(drawn))
                ann.update(
                    iscrowd=1, segmentation={"size": [h, w], "counts": rle["counts"].decode()}
                )
            else:
                ann["segmentation"] = [_polygon(rng, w, h) for _ in range(1 + (rng.random() < 0.2))]
            anns.append(ann)
    cats = [{"id": k, "name": f"class_{k}", "supercategory": ""} for k in range(1, CATEGORIES + 1)]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def build(side: str, paths: dict[str, Path], transform: Any = None, ids: Any = None) -> Any:
    from segkit.data import build_dataset

    if side == "direct":
        return build_dataset("coco", paths["export"], "train", transform=transform, ids=ids)
    return build_dataset("folder", paths["prepared"], "train", transform=transform, ids=ids)


def _private_mib(pid: int) -> float:
    """Memory a process does not share (Private_Clean + Private_Dirty of smaps_rollup)."""
    total = 0
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total / 1024


def _collect(_: int) -> None:
    gc.collect()  # as a long epoch's allocations would: the collector writes every tracked
    # container's header, so a worker copies each page of Python objects it inherited


def worker_private(dataset: Any) -> list[float]:
    """Read every sample through 2 loader workers; each worker's private MiB at the end."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=2,
                                         collate_fn=len, worker_init_fn=_collect)  # fmt: skip
    it = iter(loader)
    for _ in range(len(loader) - 1):  # the workers stay alive until the last batch
        next(it)
    mib = [_private_mib(w.pid) for w in it._workers]
    del it
    return [round(m, 1) for m in mib]


def child(side: str, paths: dict[str, Path], train_n: int, size: int, out: Path) -> dict:
    """One side's memory, measured in this (fresh) process."""
    import torch

    from segkit.config import AugmentConfig, SchedulerConfig, TrainConfig
    from segkit.data import build_transforms
    from segkit.engine import Trainer, TrainerOptions, make_loader
    from segkit.losses import build_loss
    from segkit.models import build_model

    torch.set_num_threads(1)
    reset_peak_rss()
    full = build(side, paths)
    ids = [s.id for s in full.samples][:train_n]
    transform = build_transforms(AugmentConfig(), size, True)
    dataset = build(side, paths, transform, ids)
    torch.manual_seed(0)
    model = build_model(arch="smp.Unet", encoder="resnet18", classes=full.num_classes,
                        encoder_weights=None)  # fmt: skip
    cfg = TrainConfig(epochs=1, device="cpu", amp="off", monitor="train_loss",
                      out_dir=str(out), progress=False)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with quiet():
        Trainer(model, build_loss("ce"), optimizer, make_loader(dataset, 8, True), None, cfg,
                TrainerOptions(SchedulerConfig("none"))).fit()  # fmt: skip
    peak = peak_rss_mib()
    figures = {"peak_rss_mib": round(peak, 1), "worker_private_mib": worker_private(full)}
    if side == "direct":  # for scale: the same with the parsed JSON kept, as dicts and lists
        from segkit.data.formats.coco import read_coco_json

        full.parsed_json = read_coco_json(full.index.path)
        figures["worker_private_mib_if_json_kept"] = worker_private(full)
    return figures


def index_bytes(paths: dict[str, Path]) -> dict[str, float]:
    """The COCO index's arrays against the JSON file, in MiB."""
    ds = build("direct", paths)
    arrays = [v for v in vars(ds.index).values() if isinstance(v, np.ndarray)]
    size = (paths["export"] / "annotations" / "instances_train.json").stat().st_size
    return {"json_mib": round(size / 2**20, 2),
            "index_arrays_mib": round(sum(a.nbytes for a in arrays) / 2**20, 2),
            "annotations": int(len(ds.index.cls))}  # fmt: skip


def time_reads(paths: dict[str, Path], reads: int, rounds: int) -> dict[str, Any]:
    from segkit.data.io import read_image

    sets = {"direct": build("direct", paths), "prepared": build("prepared", paths)}
    order = np.random.default_rng(1).permutation(len(sets["direct"]))[:reads]
    by_id = {s: {x.id: i for i, x in enumerate(d.samples)} for s, d in sets.items()}
    ids = [sets["direct"].samples[i].id for i in order]

    def side(name: str):
        def run() -> float:
            ds = sets.get(name, sets["prepared"])
            start = time.perf_counter()
            for sid in ids:
                if name == "jpeg_only":
                    read_image(ds.samples[by_id["prepared"][sid]].image_path)
                else:
                    ds.read(by_id[name][sid])
            return (time.perf_counter() - start) / len(ids) * 1000  # ms per sample

        return run

    ms = alternate({n: side(n) for n in ("jpeg_only", "direct", "prepared")}, rounds)
    return {
        "ms_per_sample": {n: median(v) for n, v in ms.items()},
        "ratio_direct_to_png": paired_ratio(ms, "direct", "prepared"),
        "ratio_prepared_to_png": 1.0,  # prepared IS the images with PNG masks
        "ratio_direct_to_jpeg": paired_ratio(ms, "direct", "jpeg_only"),
        "ratio_png_to_jpeg": paired_ratio(ms, "prepared", "jpeg_only"),
    }


def run_child(side: str, paths: dict[str, Path], train_n: int, size: int) -> dict:
    cmd = [sys.executable, __file__, "--child", side, str(paths["export"]),
           str(paths["prepared"]), str(train_n), str(size), str(paths["tmp"] / side)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        parser = argparse.ArgumentParser(prog="bench_annotations.py --child")
        for name in ("side", "export", "prepared", "train_n", "size", "out"):
            parser.add_argument(name)
        a = parser.parse_args(sys.argv[2:])
        paths = {"export": Path(a.export), "prepared": Path(a.prepared)}
        print(json.dumps(child(a.side, paths, int(a.train_n), int(a.size), Path(a.out))))
        return
    args = parse_args(
        __doc__.splitlines()[0],
        n=(int, 1000, "images in the export"),
        reads=(int, 300, "samples read per round and side"),
        rounds=(int, 3, "timing rounds"),
        train_n=(int, 64, "images trained on (one epoch, batch 8) in the memory runs"),
    )
    n, reads = option(args, "n", 16), option(args, "reads", 16)
    rounds, train_n = option(args, "rounds", 1), option(args, "train_n", 8)
    photo, size = ((160, 120), 32) if args.quick else ((640, 480), 128)
    with workdir() as tmp:
        from segkit.data.registry import run_dataset_step

        paths = {"tmp": tmp, "export": synth_export(tmp / "export", n, photo),
                 "prepared": tmp / "prepared"}  # fmt: skip
        start = time.perf_counter()
        with quiet():
            run_dataset_step("prepare", "coco", paths["export"], paths["prepared"],
                             split="train", workers=2)  # fmt: skip
        prepare_s = time.perf_counter() - start
        figures: dict[str, Any] = {"n": n, "image_size": f"{photo[0]}x{photo[1]}"}
        figures.update(index_bytes(paths))
        figures["prepare_s"] = round(prepare_s, 2)
        figures["prepare_images_per_s"] = round(n / prepare_s, 1)
        figures.update(time_reads(paths, min(reads, n), rounds))
        figures["within_budget_1_5x"] = figures["ratio_prepared_to_png"] <= 1.5
        figures["train"] = {"images": min(train_n, n), "model_size": size, "batch": 8}
        for side in ("direct", "prepared"):
            figures["train"][side] = run_child(side, paths, train_n, size)
    emit("annotations", figures)


if __name__ == "__main__":
    main()
