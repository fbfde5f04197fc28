"""Prediction: ``segkit.inference.predict`` over full-size JPEGs against the model alone.

End to end (``predict``): read each 1918x1280 JPEG (reduced decode) and resize to 128,
normalise, model, resize the probabilities back to 1918x1280, threshold, Kaggle RLE row in
a CSV, and with ``save_masks=True`` the full-size label PNG as well. Model alone: the same
images pre-loaded as normalised 128x128 tensors, ``model(x)`` under ``inference_mode``. Same
batch size (8). Sides alternate in rounds after a warm-up round; medians are reported.

The model is the Carvana example's (smp U-Net ResNet18) trained for a few epochs on the
synthetic cars first, so that its masks are car-shaped: an untrained model's noisy masks
have many more RLE runs, which makes the RLE text (not the model) expensive.

``--photos DIR`` predicts on real photos instead (e.g. Kaggle's Carvana ``train/`` JPEGs),
copied in turn until there are as many as synthetic images; the model is still trained on
the synthetic cars. Real Carvana JPEGs are about 100 KB, the synthetic ones about 320 KB
(their pixel noise costs bits), and decoding time follows the file size.

Run: ``python benchmarks/bench_predict.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import csv
import shutil
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
    workdir,
)

from segkit.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CarvanaDataset,
    build_transforms,
    prepare_carvana,
    read_mask,
    rle_encode,
)
from segkit.data.io import image_size
from segkit.inference import predict
from segkit.losses import build_loss
from segkit.metrics import soft_dice

BATCH = 8


def train_briefly(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, epochs: int
) -> float:
    """A few epochs of Adam + soft Dice on in-memory tensors; returns the final mean soft Dice."""
    loss_fn = build_loss("soft_dice")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(images), 16):
            index = order[first : first + 16]
            loss_fn(model(images[index]), masks[index]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.inference_mode():
        probs = torch.cat([torch.sigmoid(model(x)) for x in images.split(BATCH)])
    return float(soft_dice(probs[:, 0], masks).mean())


def model_only(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Images per second of the model alone over pre-loaded tensors."""
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for x in images.split(BATCH):
            model(x)
    return len(images) / (time.perf_counter() - start)


def rle_runs(path: Path) -> float:
    """Mean number of runs per mask in a Kaggle RLE CSV."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return sum(len(r["rle_mask"].split()) // 2 for r in rows) / max(1, len(rows))


def real_photos(source: Path, dst: Path, count: int) -> list[Path]:
    """``count`` copies of the JPEGs in ``source``, taken in turn, under ``dst``."""
    photos = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        raise SystemExit(f"--photos {str(source)!r} holds no .jpg files.")
    dst.mkdir(parents=True)
    copies = [dst / f"{i:04d}_{photos[i % len(photos)].name}" for i in range(count)]
    for i, path in enumerate(copies):
        shutil.copyfile(photos[i % len(photos)], path)
    return copies


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        cars=(int, 4, "synthetic cars, 16 views each (4 = 64 images)"),
        rounds=(int, 5, "timed rounds after the warm-up"),
        train_epochs=(int, 6, "epochs of training before timing (0: untrained model)"),
        size=(int, 128, "model input size"),
        photos=(str, "", "folder of real JPEGs to predict on instead of the synthetic ones"),
    )
    cars, rounds = option(args, "cars", 1), option(args, "rounds", 1)
    epochs, size = option(args, "train_epochs", 1), option(args, "size", 64)
    photo = (480, 320) if args.quick else (1918, 1280)
    views = 4 if args.quick else 16
    with workdir() as tmp:
        raw = carvana_images(tmp / "raw", cars, photo, views=views)
        prepare_carvana(raw, tmp / "prepared", size=size)
        plain = CarvanaDataset(
            tmp / "prepared",
            transform=build_transforms(None, size, False, IMAGENET_MEAN, IMAGENET_STD),
        )
        items = [plain[i] for i in range(len(plain))]
        images = torch.stack([it["image"] for it in items])
        masks = torch.stack([it["mask"] for it in items]).long()
        model = carvana_model()
        dice = train_briefly(model, images, masks, epochs)
        jpegs = sorted((raw / "train").glob("*.jpg"))
        if args.photos:
            jpegs = real_photos(Path(args.photos), tmp / "photos", len(jpegs))
        kib = sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1024
        source = "x".join(map(str, image_size(jpegs[0])))
        mask_dir = Path(args.photos).parent / "train_masks" if args.photos else raw / "train_masks"
        truth = [len(rle_encode(read_mask(p)).split()) // 2 for p in mask_dir.glob("*_mask.gif")]
        runs: dict[str, Any] = {"n": 0, "rle_runs": []}

        def end_to_end(save_masks: bool) -> float:
            runs["n"] += 1
            out = tmp / f"pred{runs['n']}"
            result = predict(
                model, jpegs, out, batch_size=BATCH, size=size, rle_csv=out / "rle.csv",
                save_masks=save_masks,
            )  # fmt: skip
            runs["rle_runs"].append(rle_runs(out / "rle.csv"))
            shutil.rmtree(out)
            return result["count"] / result["seconds"]

        sides = {
            "model_only": lambda: model_only(model, images),
            "predict_rle": lambda: end_to_end(False),
            "predict_rle_png": lambda: end_to_end(True),
        }
        if not args.quick:
            alternate(sides, 1)  # warm-up
        rates = alternate(sides, rounds)

    alone = median(rates["model_only"])
    ratio = {
        "save_masks_false": paired_ratio(rates, "predict_rle", "model_only"),
        "save_masks_true": paired_ratio(rates, "predict_rle_png", "model_only"),
    }
    rle, png = median(rates["predict_rle"]), median(rates["predict_rle_png"])
    emit(
        "predict",
        {
            "images": len(jpegs),
            "photos": args.photos or "synthetic",
            "mean_jpeg_kib": round(kib, 1),
            "source_size": source,
            "model_size": size,
            "batch": BATCH,
            "rounds": rounds,
            "model": f"smp.Unet resnet18 trained {epochs} epochs on the synthetic cars",
            "train_soft_dice": round(dice, 3),
            "mean_rle_runs_per_mask": round(sum(runs["rle_runs"]) / len(runs["rle_runs"]), 1),
            "truth_rle_runs_per_mask": round(sum(truth) / len(truth), 1) if truth else None,
            "model_only_images_per_s": alone,
            "predict_images_per_s": {"save_masks_false": rle, "save_masks_true": png},
            "ratio": ratio,
            "target_ratio": 0.75,
            "target_met": {k: v >= 0.75 for k, v in ratio.items()},
            "raw_rates": {k: [round(v, 2) for v in vals] for k, vals in rates.items()},
        },
    )


if __name__ == "__main__":
    main()
