"""``segkit demo``: the whole path on synthetic data, in a few minutes on a laptop CPU.

synthetic data in the real layout -> preparation -> training -> evaluation -> full-resolution
prediction with overlays (and a Kaggle RLE file for Carvana) -> a short summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from segkit.config import Config, DataConfig, LossConfig, ModelConfig, TrainConfig, save_config

#: the example tasks the demo runs (``segkit demo --task``)
DEMO_TASKS = ("carvana", "helen")


def demo_config(task: str, data_root: Path, run_dir: Path, epochs: int | None = None) -> Config:
    """The demo's config: the Carvana example's recipe, or Helen's with the smp ResNet18 U-Net."""
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
        loss = LossConfig(name="soft_dice")
        train = TrainConfig(epochs=epochs or 15, accumulate=2, monitor="val_soft_dice")
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
        model=ModelConfig(arch="smp.Unet", encoder="resnet18"),
        loss=loss,
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
        print(f"[demo] writing {cars} synthetic cars x 16 views (1918x1280 JPEG + GIF) to {root}")
        synth_carvana(root, cars=cars, seed=0)
    else:
        print(f"[demo] writing {faces} synthetic faces (Helen split layout) to {root}")
        synth_helen(root, n=faces, seed=0, size=128)


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
    _make_data(task, data_root, cars or 8, faces)
    cfg = demo_config(task, data_root, out / "run", epochs)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "demo-config.yaml")
    print(
        f"[demo] training smp U-Net ResNet18 for {cfg.train.epochs} epochs (config: {out / 'demo-config.yaml'})"
    )
    result = train(cfg, overwrite=True)  # the demo's own run folder: re-runnable
    best = Path(result["best"])
    metrics = evaluate(best, split="val", json_out=out / "metrics.json", num_workers=0)
    _, val_set = build_datasets(cfg)  # predict on held-out images, never on training ones
    held_out = val_set.samples[:4]
    if task == "carvana":  # the full-size originals of the prepared validation images
        inputs = [data_root / "train" / f"{s.id}.jpg" for s in held_out]
        rle = out / "predictions" / "submission.csv"
    else:
        inputs = [s.image_path for s in held_out]
        rle = None
    pred = predict(
        best, inputs, out / "predictions", overlay=True, rle_csv=rle, batch_size=4, overwrite=True
    )  # the demo's own folder: re-runnable
    seconds = time.perf_counter() - start
    key = "soft_dice" if task == "carvana" else "f1_overall"
    print("\n[demo] summary")
    print(
        f"  validation {key}: {metrics.get(key, float('nan')):.4f}   mIoU: {metrics.get('miou', float('nan')):.4f}"
    )
    print(
        f"  run folder:  {out / 'run'}  (best.pt, last.pt, history.csv, curves.png, predictions.png)"
    )
    print(f"  metrics:     {out / 'metrics.json'}")
    print(
        f"  predictions: {out / 'predictions'}  ({pred['count']} full-resolution label maps + overlays)"
    )
    if rle is not None:
        print(f"  Kaggle RLE:  {rle}")
    print(f"  took {seconds:.0f} s")
    return {"metrics": metrics, "train": result, "predict": pred, "seconds": seconds}
