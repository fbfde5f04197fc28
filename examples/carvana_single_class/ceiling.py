"""The resolution ceiling of a 128x128 Carvana model, each target way, on Kaggle-layout data.

For every mask: the Dice at full size of a *perfect* low-resolution prediction of the binary
target (``prepare carvana``'s ``masks/``) and of the soft coverage target (``--soft``), each
resized back as ``segkit predict`` does. The maths is segkit's
(:mod:`segkit.inference.ceiling`); this script only prints it.

    python examples/carvana_single_class/ceiling.py --data ../shared/data/carvana_real5 --size 128
"""

from __future__ import annotations

import argparse
import sys

from segkit.data import build_dataset
from segkit.errors import SegkitError
from segkit.inference.ceiling import WAYS, dataset_ceilings, mean_row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="Kaggle folder: train/, train_masks/")
    parser.add_argument("--size", type=int, default=128, help="training resolution (square)")
    parser.add_argument("--split", default="train", help="split folder (default: train)")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be a positive integer, got {args.size}")
    try:
        rows = dataset_ceilings(build_dataset("carvana", args.data, split=args.split), args.size)
    except SegkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Dice at full size of a perfect {args.size}x{args.size} prediction")
    print(f"{'id':<20} {'size':>10} " + " ".join(f"{w:>8}" for w in WAYS))
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        print(f"{r['id']:<20} {size:>10} " + " ".join(f"{r[w]:8.5f}" for w in WAYS))
    mean = mean_row(rows)
    print(f"{'mean':<20} {'':>10} " + " ".join(f"{mean[w]:8.5f}" for w in WAYS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
