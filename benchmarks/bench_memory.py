"""Scaling: peak resident memory of training and prediction at N and 4N images stays flat.

Each measurement runs in a fresh Python process (this script with ``--child``) so that peaks
do not mix; the child reports its own peak (``VmHWM``) at its end. Training: one epoch of the Carvana
example (smp U-Net ResNet18, batch 16, prepared 128x128 PNGs, loader workers 0 so that the
data's memory is in the measured process, checkpoints written), once on the prepared PNGs
and once on the full-size (1918x1280) JPEG + GIF pairs (each 7 MiB decoded: keeping them
would show at once). Prediction: ``predict`` over the full-size JPEGs at 128 with label PNGs
and an RLE CSV. A baseline child only imports segkit and builds the model (the fixed part).
N = 32 by default: two batches, so that both runs reach their steady state (the optimizer's
state appears at the first step; the peak comes with the second).

Run: ``python benchmarks/bench_memory.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import carvana_images, emit, option, parse_args, peak_rss_mib, quiet, workdir

BATCH = 16
KINDS = {
    "train": "1 epoch on prepared 128x128 PNGs (the Carvana example)",
    "train_full_size": "1 epoch on the full-size JPEG + GIF pairs, resized by the transform",
    "predict": "predict() on full-size JPEGs at 128: label PNGs + RLE CSV",
}


def child(kind: str, n: int, prepared: Path, raw: Path, size: int, out: Path) -> float:
    """Run one measurement in this process; returns the peak resident memory in MiB."""
    import torch
    from _common import carvana_model

    torch.set_num_threads(1)  # children may run side by side; memory does not depend on it
    model = carvana_model()
    if kind in ("train", "train_full_size"):
        from segkit.config import AugmentConfig, SchedulerConfig, TrainConfig
        from segkit.data import IMAGENET_MEAN, IMAGENET_STD, CarvanaDataset, build_transforms
        from segkit.engine import Trainer, TrainerOptions, make_loader
        from segkit.losses import build_loss

        transform = build_transforms(AugmentConfig(), size, True, IMAGENET_MEAN, IMAGENET_STD)
        ids = [p.stem for p in sorted((prepared / "images").glob("*.png"))][:n]
        root = prepared if kind == "train" else raw  # raw: full-size JPEG + GIF, resized per item
        dataset = CarvanaDataset(root, transform=transform, ids=ids)
        loader = make_loader(dataset, BATCH, shuffle=True, num_workers=0)
        cfg = TrainConfig(
            epochs=1,
            device="cpu",
            amp="off",
            monitor="train_loss",
            out_dir=str(out),
            progress=False,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        with quiet():
            trainer = Trainer(model, build_loss("soft_dice"), optimizer, loader, None, cfg,
                              TrainerOptions(SchedulerConfig("none")))  # fmt: skip
            trainer.fit()
    elif kind == "predict":
        from segkit.inference import predict

        jpegs = sorted((raw / "train").glob("*.jpg"))[:n]
        predict(model, jpegs, out, batch_size=8, size=size, rle_csv=out / "rle.csv")
    return peak_rss_mib()


def run_children(specs: list[tuple[str, int]], paths: dict[str, Path], size: int, jobs: int):
    """Run each ``(kind, n)`` in its own process (``jobs`` at a time); returns their peaks."""

    def one(spec: tuple[str, int]) -> float:
        kind, n = spec
        out = paths["tmp"] / f"{kind}{n}"
        cmd = [sys.executable, __file__, "--child", kind, str(n), str(paths["prepared"]),
               str(paths["raw"]), str(size), str(out)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"child {spec} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mib"]

    with ThreadPoolExecutor(jobs) as pool:
        return dict(zip(specs, pool.map(one, specs)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        parser = argparse.ArgumentParser(prog="bench_memory.py --child")
        for name in ("kind", "n", "prepared", "raw", "size", "out"):
            parser.add_argument(name)
        a = parser.parse_args(sys.argv[2:])
        peak = child(a.kind, int(a.n), Path(a.prepared), Path(a.raw), int(a.size), Path(a.out))
        print(json.dumps({"peak_rss_mib": round(peak, 1)}))
        return
    args = parse_args(
        __doc__.splitlines()[0],
        n=(int, 32, "N: the smaller run's images (the larger has 4N)"),
        jobs=(int, 1, "children run at the same time"),
    )
    n, jobs = option(args, "n", 2), option(args, "jobs", 4)
    size = 64 if args.quick else 128
    photo = (480, 320) if args.quick else (1918, 1280)
    with workdir() as tmp:
        from segkit.data import prepare_carvana

        views = 16 if 4 * n >= 16 else 4 * n
        raw = carvana_images(tmp / "raw", -(-4 * n // views), photo, views=views)
        prepare_carvana(raw, tmp / "prepared", size=size)
        paths = {"tmp": tmp, "raw": raw, "prepared": tmp / "prepared"}
        kinds = {k: KINDS[k] for k in ("train", "predict")} if args.quick else KINDS
        specs = [] if args.quick else [("baseline", 0)]
        specs += [(kind, k) for kind in kinds for k in (n, 4 * n)]
        peaks = run_children(specs, paths, size, jobs)
    figures: dict[str, Any] = {
        "n": n,
        "batch": BATCH,
        "model_size": size,
        "source_size": f"{photo[0]}x{photo[1]}",
        "baseline_peak_rss_mib": peaks.get(("baseline", 0)),
    }
    for kind, what in kinds.items():
        small, large = peaks[(kind, n)], peaks[(kind, 4 * n)]
        # the decoded uint8 RGB images the 3N extra samples are read as, were they all kept
        side = size * size if kind == "train" else photo[0] * photo[1]
        held = 3 * n * side * 3 / 2**20
        figures[kind] = {
            "what": what,
            f"peak_rss_mib_{n}": small,
            f"peak_rss_mib_{4 * n}": large,
            "growth_mib": round(large - small, 1),
            "extra_images_if_kept_mib": round(held, 1),
            "flat": large - small < max(0.02 * small, 0.1 * held),
        }
    figures["flat"] = all(figures[kind]["flat"] for kind in kinds)
    emit("memory", figures)


if __name__ == "__main__":
    main()
