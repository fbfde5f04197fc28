"""Carvana preparation: a thread pool over full-size JPEG + GIF pairs, and two decoding strategies.

``prepare_carvana`` reads each 1918x1280 JPEG and palette GIF, resizes both to 128x128 and
writes two PNGs. Timed side by side in alternating rounds (after a warm-up round), every
run into a fresh folder with ``overwrite=True``:

- ``workers=1`` against ``workers=os.cpu_count()`` (both with the default ``decode="reduced"``);
- ``decode="reduced"`` (libjpeg DCT scaling, 1/8 size here) against ``decode="full"`` (every
  pixel decoded, then INTER_AREA), both on all cores; then the two outputs are compared:
  masks identical?, images' mean / max absolute difference.

Run: ``python benchmarks/bench_prepare.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    alternate,
    carvana_images,
    emit,
    median,
    option,
    paired_ratio,
    parse_args,
    workdir,
)

from segkit.data import prepare_carvana, read_image, read_mask


def compare_outputs(a: Path, b: Path) -> dict[str, Any]:
    """Masks identical? and the images' absolute differences, between two prepared folders."""
    names = sorted(p.name for p in (a / "images").iterdir())
    masks_equal = all(
        np.array_equal(read_mask(a / "masks" / n), read_mask(b / "masks" / n)) for n in names
    )
    diffs = [
        np.abs(
            read_image(a / "images" / n).astype(np.int16)
            - read_image(b / "images" / n).astype(np.int16)
        )
        for n in names
    ]
    return {
        "masks_identical": masks_equal,
        "image_mean_abs_diff": round(float(np.mean([d.mean() for d in diffs])), 3),
        "image_max_abs_diff": int(max(d.max() for d in diffs)),
    }


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        cars=(int, 4, "synthetic cars, 16 views each (4 = 64 pairs)"),
        rounds=(int, 5, "timed rounds after the warm-up"),
        size=(int, 128, "prepared square size"),
    )
    cars, rounds = option(args, "cars", 1), option(args, "rounds", 1)
    size = option(args, "size", 32)
    photo = (480, 320) if args.quick else (1918, 1280)
    views = 4 if args.quick else 16
    cores = os.cpu_count() or 1
    with workdir() as tmp:
        raw = carvana_images(tmp / "raw", cars, photo, views=views)
        n = cars * views
        runs = {"n": 0}

        def prepare(workers: int, decode: str, keep: str | None = None) -> float:
            runs["n"] += 1
            dst = tmp / (keep or f"out{runs['n']}")
            start = time.perf_counter()
            prepare_carvana(raw, dst, size=size, workers=workers, overwrite=True, decode=decode)
            seconds = time.perf_counter() - start
            if keep is None:
                shutil.rmtree(dst)
            return n / seconds

        workers = {
            "workers_1": lambda: prepare(1, "reduced"),
            f"workers_{cores}": lambda: prepare(cores, "reduced"),
        }
        decodes = {
            "reduced": lambda: prepare(cores, "reduced"),
            "full": lambda: prepare(cores, "full"),
        }
        if not args.quick:
            alternate(workers, 1)  # warm-up: page cache, thread start-up, first-call costs
        by_workers = alternate(workers, rounds)
        by_decode = alternate(decodes, rounds)
        prepare(cores, "reduced", keep="kept_reduced")
        prepare(cores, "full", keep="kept_full")
        same = compare_outputs(tmp / "kept_reduced", tmp / "kept_full")

    one, many = median(by_workers["workers_1"]), median(by_workers[f"workers_{cores}"])
    reduced, full = median(by_decode["reduced"]), median(by_decode["full"])
    speedup = paired_ratio(by_workers, f"workers_{cores}", "workers_1")
    emit(
        "prepare",
        {
            "pairs": n,
            "source_size": f"{photo[0]}x{photo[1]}",
            "prepared_size": size,
            "rounds": rounds,
            "workers_1_images_per_s": one,
            f"workers_{cores}_images_per_s": many,
            "speedup": speedup,
            "target_speedup": 1.7,
            "target_met": speedup >= 1.7,
            "decode_reduced_images_per_s": reduced,
            "decode_full_images_per_s": full,
            "reduced_over_full": paired_ratio(by_decode, "reduced", "full"),
            **same,
            "raw_rates": {
                k: [round(v, 2) for v in vals] for k, vals in {**by_workers, **by_decode}.items()
            },
        },
    )


if __name__ == "__main__":
    main()
