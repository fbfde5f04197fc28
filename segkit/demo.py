"""``segkit demo``: the whole path on synthetic data, in a few minutes on a laptop CPU.

synthetic data in the real layout -> preparation -> training -> evaluation -> full-resolution
prediction of every held-out image with overlays (and a Kaggle RLE file for Carvana) -> a
report page of the held-out images (``report/index.html``) -> a
summary: the best epoch, what validation held out and, for Carvana, each held-out car's Dice
at full resolution.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from segkit.config import (
    AugmentConfig,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    SchedulerConfig,
    TrainConfig,
    save_config,
)

#: the synthetic Carvana set: cars x views (Kaggle has 16 views a car; fewer views of more
#: cars give the network more colours to learn from in the same time)
DEMO_CARS, DEMO_VIEWS = 16, 8

#: the example tasks the demo runs (``segkit demo --task``)
DEMO_TASKS = ("carvana", "helen")


def demo_config(task: str, data_root: Path, run_dir: Path, epochs: int | None = None) -> Config:
    """The demo's config: the Carvana example's recipe, or Helen's with the smp ResNet18 U-Net."""
    augment = AugmentConfig(hflip=0.5)
    scheduler = SchedulerConfig()
    if task == "carvana":
        data = DataConfig(
            dataset="carvana",
            root=str(data_root),
            prepare_size=128,
            image_size=128,
            batch_size=8,
            num_workers=0,
            val_fraction=0.34,
            test_split="val",  # synthetic Carvana, like Kaggle's, has no test masks
        )
        # colour jitter over the whole hue wheel: a held-out car has a colour no training car has
        augment.color, augment.hue = 0.8, 0.5
        augment.normalize = "imagenet"
        loss = LossConfig(name="soft_dice")
        train = TrainConfig(epochs=epochs or 20, accumulate=2, monitor="val_soft_dice")
    elif task == "helen":
        data = DataConfig(
            dataset="helen",
            root=str(data_root),
            image_size=128,
            batch_size=8,
            num_workers=0,
            val_fraction=0.2,
        )
        loss = LossConfig(name="ce + dice")
        train = TrainConfig(epochs=epochs or 8, monitor="val_f1_overall")
    else:
        raise ValueError(f"Unknown demo task {task!r}: use carvana or helen.")
    train.out_dir = str(run_dir)
    train.progress = False
    cfg = Config(
        name=f"demo-{task}",
        data=data,
        augment=augment,
        model=ModelConfig(arch="smp.Unet", encoder="resnet18"),
        loss=loss,
        scheduler=scheduler,
        train=train,
    )
    cfg.optim.lr = 1e-3
    return cfg


def _make_data(task: str, root: Path, cars: int, faces: int) -> None:
    from segkit.data import synth_carvana, synth_helen

    if root.exists() and any(root.iterdir()):
        print(f"[demo] reusing synthetic data in {root}")
        return
    if task == "carvana":
        print(
            f"[demo] writing {cars} synthetic cars x {DEMO_VIEWS} views (1918x1280 JPEG + GIF) "
            f"to {root}"
        )
        synth_carvana(root, cars=cars, views=DEMO_VIEWS, seed=0)
    else:
        print(f"[demo] writing {faces} synthetic faces (Helen split layout) to {root}")
        synth_helen(root, n=faces, seed=0, size=128)


def dice_per_car(pred_dir: Path, data_root: Path, ids: list[str]) -> dict[str, float]:
    """Each car's Dice of the predicted label PNGs in ``pred_dir`` against the Kaggle masks at
    full resolution, pooled over the car's views: 2|P∩T| / (|P| + |T|)."""
    from segkit.data import CarvanaDataset, parse_carvana_id
    from segkit.data.io import read_mask

    truth = CarvanaDataset(data_root, ids=ids)
    sums: dict[str, list[int]] = {}
    for sample in truth.samples:
        pred = read_mask(pred_dir / f"{sample.id}.png") > 0
        mask = truth.load_mask(sample, pred.shape) > 0
        both = sums.setdefault(parse_carvana_id(sample.id)[0], [0, 0])
        both[0] += 2 * int((pred & mask).sum())
        both[1] += int(pred.sum() + mask.sum())
    return {car: (num / den if den else 1.0) for car, (num, den) in sorted(sums.items())}


def _held_out_text(task: str, ids: list[str]) -> str:
    if task != "carvana":
        return f"{len(ids)} faces never trained on (data.val_fraction of the synthetic set)"
    from segkit.data import parse_carvana_id

    cars = sorted({parse_carvana_id(i)[0] for i in ids})
    return (
        f"{len(cars)} cars never trained on, all {len(ids)} of their views (split by car: "
        f"{', '.join(cars)})"
    )


def run_demo(
    out: str | Path = "segkit-demo",
    task: str = "carvana",
    epochs: int | None = None,
    cars: int | None = None,
    faces: int = 60,
) -> dict[str, Any]:
    """Run the demo into ``out`` and return its summary."""
    from segkit.api import build_datasets, evaluate, train
    from segkit.inference import predict

    start = time.perf_counter()
    out = Path(out).resolve()
    data_root = out / "data" / task
    _make_data(task, data_root, cars or DEMO_CARS, faces)
    cfg = demo_config(task, data_root, out / "run", epochs)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo-config.yaml")
    print(
        f"[demo] training smp U-Net ResNet18 for {cfg.train.epochs} epochs (config: {out / 'demo-config.yaml'})"
    )
    started = time.perf_counter()
    result = train(cfg, overwrite=True)  # the demo's own run folder: re-runnable
    trained = time.perf_counter()
    best = Path(result["best"])
    metrics = evaluate(
        best, split="val", json_out=out / "metrics.json", num_workers=0, report=out / "report"
    )  # the report page of the held-out images: worst and best, confusion, curves
    _, val_set = build_datasets(cfg)  # predict on held-out images, never on training ones
    ids = [s.id for s in val_set.samples]
    if task == "carvana":  # the full-size originals of the prepared validation images
        inputs = [data_root / "train" / f"{i}.jpg" for i in ids]
        rle = out / "predictions" / "submission.csv"
    else:
        inputs = [s.image_path for s in val_set.samples]
        rle = None
    pred = predict(
        best, inputs, out / "predictions", overlay=True, rle_csv=rle, batch_size=4, overwrite=True
    )  # the demo's own folder: re-runnable
    per_car = dice_per_car(out / "predictions", data_root, ids) if task == "carvana" else {}
    seconds = time.perf_counter() - start
    summary = {"metrics": metrics, "train": result, "predict": pred, "seconds": seconds}
    summary.update(dice_per_car=per_car, held_out=ids, train_seconds=trained - started)
    _print_summary(task, out, cfg, summary, rle)
    return summary


def _print_summary(task: str, out: Path, cfg: Config, s: dict[str, Any], rle: Path | None) -> None:
    result, metrics = s["train"], s["metrics"]
    key = "soft_dice" if task == "carvana" else "f1_overall"
    print("\n[demo] summary")
    print(f"  validation:  {_held_out_text(task, s['held_out'])}")
    print(
        f"  best epoch:  {result['best_epoch']} of {result['epochs']} (highest "
        f"{result['monitor']}; best.pt holds it)"
    )
    print(
        f"  validation {key}: {metrics.get(key, float('nan')):.4f}   "
        f"mIoU: {metrics.get('miou', float('nan')):.4f}  (best.pt at {cfg.data.image_size}x"
        f"{cfg.data.image_size})"
    )
    if s["dice_per_car"]:
        print("  Dice per held-out car, full resolution (1918x1280), all its views:")
        for car, dice in s["dice_per_car"].items():
            print(f"    {car}: {dice:.4f}")
    print(
        f"  run folder:  {out / 'run'}  (best.pt, last.pt, history.csv, curves.png, predictions.png)"
    )
    print(f"  metrics:     {out / 'metrics.json'}")
    print(
        f"  report:      {out / 'report' / 'index.html'}  (open it in a browser: per-image "
        "scores, the worst and best held-out images, confusion matrix, curves)"
    )
    print(
        f"  predictions: {out / 'predictions'}  ({s['predict']['count']} full-resolution label "
        "maps + overlays of the held-out images)"
    )
    if rle is not None:
        print(f"  Kaggle RLE:  {rle}")
    print(f"  took {s['seconds']:.0f} s (training {s['train_seconds']:.0f} s of it)")
