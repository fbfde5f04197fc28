"""Trainer overhead: segkit's Carvana training against a bare PyTorch loop, side by side.

segkit side: prepared 128x128 PNGs (from 384x256 synthetic pairs: the source size does not
enter training) -> ``CarvanaDataset`` + ``build_transforms`` (hflip 0.5,
ImageNet normalisation) -> ``make_loader`` -> ``Trainer.fit`` (no validation, monitor
``train_loss``, every built-in hook: history, plots, best.pt/last.pt checkpoints). Bare side:
the same images held in memory as normalised tensors, shuffled by index, forward / soft Dice
/ backward / Adam step. Both: smp U-Net ResNet18 from the same initial weights, batch 16,
gradient accumulation 2 (the example's), no LR schedule, fp32 on the CPU, and the same
memory format (``--channels-last``: 1, what ``train.channels_last: auto`` picks on the CPU,
or 0 for contiguous NCHW as before that default).

Rates are images per second over the epochs, taken in rounds that alternate the sides
(segkit with 0 and 2 loader workers, bare), after a one-epoch warm-up round; rates are
medians over rounds, ratios medians of each round's pair. For the Trainer two rates: ``fit``
(wall time of ``fit()``, checkpoints and plots included) and ``train_phase``
(``history.csv``'s ``images_per_s``: the batches only). The seconds ``fit()`` spends outside
the batches (mostly writing best.pt + last.pt, 164 MiB each, every epoch) do not grow with
the epoch, so the script also projects the fit ratio to a Kaggle-sized epoch (4070 images).

Run: ``python benchmarks/bench_trainer.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import copy
import csv
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import (
    alternate,
    carvana_images,
    carvana_model,
    emit,
    median,
    option,
    paired_ratio,
    parse_args,
    quiet,
    workdir,
)

from segkit.config import AugmentConfig, SchedulerConfig, TrainConfig
from segkit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CarvanaDataset,
    build_transforms,
    prepare_carvana,
)
from segkit.engine import Trainer, TrainerOptions, make_loader
from segkit.losses import build_loss

BATCH = 16
ACCUMULATE = 2
LR = 1e-3
KAGGLE_EPOCH = 4070  # Kaggle's 5088 training images less a 20% validation split by car


def bare_loop(
    model: torch.nn.Module,
    images: torch.Tensor,
    masks: torch.Tensor,
    epochs: int,
    channels_last: bool,
) -> float:
    """Train ``model`` on in-memory tensors for ``epochs``; returns images per second."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    loss_fn = build_loss("soft_dice")
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(0)
    model.train()
    n = len(images)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for i, first in enumerate(range(0, n, BATCH)):
            index = order[first : first + BATCH]
            loss = loss_fn(model(images[index].contiguous(memory_format=fmt)), masks[index])
            total += loss.item() * len(index)  # the epoch's loss, as any loop that logs it
            (loss / ACCUMULATE).backward()
            if (i + 1) % ACCUMULATE == 0 or first + BATCH >= n:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    return n * epochs / (time.perf_counter() - start)


def segkit_fit(
    model: torch.nn.Module,
    dataset: CarvanaDataset,
    epochs: int,
    workers: int,
    out_dir: Path,
    channels_last: bool,
) -> tuple[float, float, float]:
    """Train with segkit's loader and Trainer; returns (fit images/s, train-phase images/s,
    seconds of fit() outside the training batches: checkpoints, history, plots, workers)."""
    loader = make_loader(dataset, BATCH, shuffle=True, num_workers=workers, seed=0)
    cfg = TrainConfig(
        epochs=epochs,
        accumulate=ACCUMULATE,
        device="cpu",
        amp="off",
        channels_last=channels_last,
        monitor="train_loss",
        out_dir=str(out_dir),
        progress=False,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    with quiet():  # the Trainer prints one line per epoch; this script prints one JSON line
        trainer = Trainer(
            model,
            build_loss("soft_dice"),
            optimizer,
            loader,
            None,
            cfg,
            TrainerOptions(SchedulerConfig("none")),
        )
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    with open(out_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    phase = statistics.median(float(r["images_per_s"]) for r in rows)
    in_batches = sum(len(dataset) / float(r["images_per_s"]) for r in rows)
    return len(dataset) * epochs / seconds, phase, seconds - in_batches


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        cars=(int, 4, "synthetic cars (16 views each) = images per epoch / 16"),
        epochs=(int, 2, "epochs per timed run"),
        rounds=(int, 5, "timed rounds after the warm-up (3 proved too few on a noisy machine)"),
        size=(int, 128, "square training size"),
        workers=(str, "0,2", "segkit sides to run, as loader num_workers values"),
        channels_last=(int, 1, "1: both sides channels_last (the CPU's auto), 0: NCHW"),
    )
    channels_last = bool(option(args, "channels_last", 1))
    cars = option(args, "cars", 1)
    epochs, rounds = option(args, "epochs", 1), option(args, "rounds", 1)
    size = option(args, "size", 64)
    workers = [int(w) for w in option(args, "workers", "0,2").split(",")]
    views = 4 if args.quick else 16
    with workdir() as tmp:
        carvana_images(tmp / "raw", cars, (3 * size, 2 * size), views=views)
        prepare_carvana(tmp / "raw", tmp / "prepared", size=size)
        transform = build_transforms(
            AugmentConfig(hflip=0.5), size, True, IMAGENET_MEAN, IMAGENET_STD
        )
        dataset = CarvanaDataset(tmp / "prepared", transform=transform)
        plain = CarvanaDataset(
            tmp / "prepared",
            transform=build_transforms(None, size, False, IMAGENET_MEAN, IMAGENET_STD),
        )
        items = [plain[i] for i in range(len(plain))]
        images = torch.stack([it["image"] for it in items])
        masks = torch.stack([it["mask"] for it in items]).long()
        initial = carvana_model()

        extra: dict[str, list[float]] = {}
        run = {"n": 0}

        def segkit_side(workers: int, n_epochs: int) -> float:
            run["n"] += 1
            out = tmp / f"run{run['n']}"
            fit, phase, outside = segkit_fit(
                copy.deepcopy(initial), dataset, n_epochs, workers, out, channels_last
            )
            extra.setdefault(f"train_phase_w{workers}", []).append(phase)
            extra.setdefault(f"outside_batches_s_w{workers}", []).append(outside)
            return fit

        def sides(n_epochs: int) -> dict[str, Any]:
            runs: dict[str, Any] = {
                f"segkit_w{w}": (lambda w=w: segkit_side(w, n_epochs)) for w in workers
            }
            runs["bare"] = lambda: bare_loop(
                copy.deepcopy(initial), images, masks, n_epochs, channels_last
            )
            return runs

        if not args.quick:
            alternate(sides(1), 1)  # warm-up: allocator, matplotlib import, first-call costs
            extra.clear()
        rates = alternate(sides(epochs), rounds)

    bare = median(rates["bare"])
    figures: dict[str, Any] = {
        "images_per_epoch": len(dataset),
        "image_size": size,
        "batch": BATCH,
        "accumulate": ACCUMULATE,
        "epochs_per_run": epochs,
        "channels_last": channels_last,
        "rounds": rounds,
        "bare_images_per_s": bare,
    }
    for w in workers:
        phases, outsides = extra[f"train_phase_w{w}"], extra[f"outside_batches_s_w{w}"]
        # checkpoints + history each epoch, curves once: spread over a Kaggle-sized epoch
        projected = [
            KAGGLE_EPOCH / (KAGGLE_EPOCH / p + o / epochs) for p, o in zip(phases, outsides)
        ]
        paired = {"phase": phases, "projected": projected, **rates}
        figures[f"num_workers_{w}"] = {
            "fit_images_per_s": median(rates[f"segkit_w{w}"]),
            "train_phase_images_per_s": median(phases),
            "fit_ratio": paired_ratio(rates, f"segkit_w{w}", "bare"),
            "train_phase_ratio": paired_ratio(paired, "phase", "bare"),
            "seconds_outside_batches_per_epoch": median([o / epochs for o in outsides]),
            f"projected_fit_ratio_{KAGGLE_EPOCH}_images_per_epoch": paired_ratio(
                paired, "projected", "bare"
            ),
        }
    best = max(workers, key=lambda w: figures[f"num_workers_{w}"]["fit_ratio"])
    figures["num_workers_used"] = best
    figures["fit_ratio"] = figures[f"num_workers_{best}"]["fit_ratio"]
    figures["train_phase_ratio"] = figures[f"num_workers_{best}"]["train_phase_ratio"]
    figures["target_ratio"] = 0.95
    figures["target_met"] = figures["fit_ratio"] >= 0.95
    figures["raw_rates"] = {
        k: [round(v, 2) for v in vals] for k, vals in {**rates, **extra}.items()
    }
    emit("trainer", figures)


if __name__ == "__main__":
    main()
