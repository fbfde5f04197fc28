"""segkit beside its peers: the same data and network trained and predicted three ways.

Data: the real Carvana photos of ``--photos`` (1918x1280 JPEG + GIF masks, Kaggle layout;
5 synthetic ones of that size where the folder is absent),
each copied ``--copies`` times under new car ids, prepared once to ``--size`` squares
(``prepare_carvana``: the tutorial's GIF -> PNG and resize with a thread pool). Network: smp
U-Net ResNet18, ``encoder_weights=None``, one output, the same initial weights on every side.

Training, batch ``--batch``, the tutorial's soft Dice ``1 - (2 sum(p t) + 1) / (sum(p^2) +
sum(t^2) + 1)``, Adam lr 1e-3, horizontal flips (p 0.5), ImageNet normalisation, DataLoaders
with ``--workers`` workers, ``--epochs`` epochs per run:

- ``plain``: the Carvana tutorial's loop: a ``Dataset`` reading the PNGs with OpenCV,
  albumentations flip + Normalize + ToTensorV2, ``DataLoader``, a ``for`` loop with Adam.
- ``lightning``: smp's own examples (``examples/binary_segmentation_intro.ipynb``): a
  ``LightningModule`` around the smp model that normalises in ``forward`` (the loader
  carries uint8), ``training_step`` / ``configure_optimizers``, ``Trainer(max_epochs,
  log_every_n_steps=1)`` with its default logger and checkpointing (progress bar off).
- ``segkit``: ``CarvanaDataset`` + ``build_transforms`` + ``make_loader`` + ``Trainer.fit``
  with its defaults (history, plots, last.pt / best.pt each epoch; on the CPU channels_last,
  and bfloat16 autocast where the CPU has native bfloat16, as ``train.amp: auto`` decides).
- ``segkit_fp32``: the same with ``amp="off", channels_last=False``: the peers' arithmetic
  (float32, contiguous), so that the loop and loader are compared alone.

Every side's loader is wrapped in the same :class:`TimedLoader` (time blocked in ``next``)
and every optimizer step is timed by one global step hook. Train images/s: the epochs' batch
phases (first ``next`` of an epoch to its last optimizer step; what runs between epochs,
checkpoints and logs, left out) after the first ``--warmup`` steps of each run; loader
wait: the share of that time spent blocked in ``next``. Sides alternate (plain, lightning,
segkit, segkit_fp32, plain, ...) for ``--rounds`` rounds after a warm-up round; medians are
reported, and the ratios as medians of each round's pair.

Prediction, with the segkit side's trained weights (a segkit checkpoint; the same weights as
a plain ``state_dict`` file for the plain side), the whole thing timed, loading included:

- ``jpeg``: ``--predict-images`` JPEG copies of the photos to full-size PNG label files.
  Plain: PIL read, ``cv2.resize`` (area) to ``--size``, normalise, the model one image at a
  time, bilinear resize of the logits back, sigmoid > 0.5, PIL PNG write. segkit:
  ``Predictor(checkpoint).predict([folder], out)`` (defaults: ``runtime="auto"``, onnxruntime
  on the CPU where installed), and ``segkit_torch`` with ``runtime="torch"``.
- ``tiled``: one ``--large`` x ``--large`` JPEG assembled from the photos, in ``--tile``
  windows (overlap 0.25) at native scale. Plain: windows one at a time, probabilities
  averaged where they overlap, > 0.5, PIL PNG. segkit: ``Predictor`` with ``tile`` (its
  default window batch of 8), ``segkit_batch1`` with ``batch_size=1``, and both again
  with ``runtime="torch"``.
  The labels of each side are compared with the plain side's (share of pixels that agree).

Needs PyTorch Lightning: ``pip install 'segkit[bench]'`` (or ``pip install lightning``).
Run: ``python benchmarks/bench_peers.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import copy
import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import carvana_model, emit, median, option, parse_args, quiet, workdir
from _peers import LR, plain_predict, plain_tiled, train_lightning, train_plain

from segkit.data import prepare_carvana

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "carvana_real5" / "train"


def require_lightning() -> Any:
    """``lightning``, or exit with one line saying how to install it."""
    try:
        import lightning
    except ImportError:
        sys.exit("bench_peers.py needs PyTorch Lightning: pip install 'segkit[bench]'")
    return lightning


# ------------------------------------------------------------------ timing, shared by the sides


class StepClock:
    """When each optimizer step ended (a global hook: every side's optimizer is timed alike)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(self._record)

    def _record(self, *_: Any) -> None:
        self.ends.append(time.perf_counter())


class TimedLoader:
    """A loader whose ``next`` calls are timed; other attributes are the loader's own (segkit
    reseeds ``sampler`` / ``generator`` through them)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epochs: list[list[tuple[float, float, int]]] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        calls: list[tuple[float, float, int]] = []  # (asked, got, images) per ``next``
        self.epochs.append(calls)
        iterator = None
        while True:
            asked = time.perf_counter()
            if iterator is None:  # workers start here: their start-up is loader time
                iterator = iter(self.loader)
            try:
                batch = next(iterator)
            except StopIteration:
                calls.append((asked, time.perf_counter(), 0))
                return
            images = batch["image"] if isinstance(batch, dict) else batch[0]
            calls.append((asked, time.perf_counter(), len(images)))
            yield batch


def train_figures(timed: TimedLoader, ends: list[float], warmup: int) -> dict:
    """Images/s and loader-wait share of the batch phases after ``warmup`` steps: each epoch
    from its first ``next`` (or the end of the last warm-up step) to its last step's end."""
    seconds = waited = images = 0.0
    done = 0  # steps of the epochs before
    for calls in timed.epochs:
        sizes = [n for _, _, n in calls if n]
        steps = ends[done : done + len(sizes)]
        skip = max(0, warmup - done)
        done += len(sizes)
        if skip >= len(steps):
            continue
        start = calls[0][0] if skip == 0 else steps[skip - 1]
        stop = steps[-1]
        seconds += stop - start
        images += sum(sizes[skip:])
        waited += sum(got - asked for asked, got, _ in calls if asked >= start and got <= stop)
    return {"images_per_s": images / seconds, "loader_wait": waited / seconds}


# ------------------------------------------------------------------ data


def copy_photos(photos: Path, dst: Path, copies: int) -> Path:
    """The Kaggle layout under ``dst`` with each photo (and mask) ``copies`` times, new car ids."""
    (dst / "train").mkdir(parents=True)
    (dst / "train_masks").mkdir()
    jpegs = sorted(photos.glob("*.jpg"))
    for k in range(copies):
        for jpg in jpegs:
            view = jpg.stem.rpartition("_")[2]
            shutil.copy(jpg, dst / "train" / f"copy{k:03d}_{view}.jpg")
            gif = photos.parent / "train_masks" / f"{jpg.stem}_mask.gif"
            shutil.copy(gif, dst / "train_masks" / f"copy{k:03d}_{view}_mask.gif")
    return dst


def source_photos(photos: Path, tmp: Path, quick: bool) -> tuple[Path, str]:
    """``photos`` when it holds JPEGs, else 5 synthetic views in the Kaggle layout (full size,
    or small under ``--quick``); and which of the two it is."""
    if any(photos.glob("*.jpg")):
        return photos, "real"
    from segkit.data import synth_carvana

    size = (480, 320) if quick else (1918, 1280)
    synth_carvana(tmp / "synth", cars=1, views=5, size=size)
    return tmp / "synth" / "train", "synthetic"


def pairs(prepared: Path) -> list[tuple[Path, Path]]:
    """(image, mask) PNG pairs of a prepared Carvana folder."""
    return [(p, prepared / "masks" / p.name) for p in sorted((prepared / "images").glob("*.png"))]


def large_image(photos: Path, size: int, path: Path) -> Path:
    """A ``size`` x ``size`` JPEG of the photos side by side, row after row."""
    from PIL import Image

    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.jpg"))]
    h, w = tiles[0].shape[:2]
    canvas = np.zeros((size, size, 3), np.uint8)
    for i, (y, x) in enumerate((y, x) for y in range(0, size, h) for x in range(0, size, w)):
        part = tiles[i % len(tiles)][: size - y, : size - x]
        canvas[y : y + part.shape[0], x : x + part.shape[1]] = part
    Image.fromarray(canvas).save(path, quality=95)
    return path


# ------------------------------------------------------------------ segkit's training


def train_segkit(
    model: torch.nn.Module,
    prepared: Path,
    batch: int,
    workers: int,
    epochs: int,
    out: Path,
    **settings: Any,
) -> Any:
    """segkit's data set, transforms, loader and Trainer (``settings``: TrainConfig fields
    other than the defaults); returns its TimedLoader."""
    from segkit.config import AugmentConfig, SchedulerConfig, TrainConfig
    from segkit.data import IMAGENET_MEAN, IMAGENET_STD, CarvanaDataset, build_transforms
    from segkit.engine import Trainer, TrainerOptions, make_loader
    from segkit.losses import build_loss

    size = model.spec.options["image_size"]
    transform = build_transforms(AugmentConfig(hflip=0.5), size, True, IMAGENET_MEAN, IMAGENET_STD)
    dataset = CarvanaDataset(prepared, transform=transform)
    loader = TimedLoader(make_loader(dataset, batch, shuffle=True, num_workers=workers))
    cfg = TrainConfig(
        epochs=epochs,
        device="cpu",
        monitor="train_loss",
        out_dir=str(out),
        progress=False,
        **settings,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    options = TrainerOptions(SchedulerConfig("none"))
    with quiet():
        Trainer(model, build_loss("soft_dice"), optimizer, loader, None, cfg, options).fit()
    return loader


# ------------------------------------------------------------------ segkit's prediction


def segkit_predict(checkpoint: Path, inputs: list[Path], out: Path, **options: Any) -> None:
    """``segkit predict`` through the API: load the checkpoint, predict the inputs into ``out``
    (``options``: PredictOptions fields other than the defaults)."""
    from segkit.inference import PredictOptions, Predictor

    Predictor(checkpoint, PredictOptions(**options), "cpu").predict(inputs, out)


def agreement(a: Path, b: Path) -> float:
    """Share of pixels on which the label PNGs of two folders agree."""
    from PIL import Image

    same = total = 0
    for p in sorted(a.glob("*.png")):
        x, y = np.asarray(Image.open(p)), np.asarray(Image.open(b / p.name))
        same, total = same + int((x == y).sum()), total + x.size
    return same / total


# ------------------------------------------------------------------ the run


def alternate(sides: dict[str, Callable[[int], Any]], rounds: int, warmup: bool) -> dict:
    """Each side's result per round (``side(r)``), the sides in turn, each round starting one
    side further on (A B C, B C A, ...) so that no side always follows the same one; with
    ``warmup`` a first round (r = 0) is run and not kept."""
    results: dict[str, list] = {name: [] for name in sides}
    names = list(sides)
    for r in range(0 if warmup else 1, rounds + 1):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            value = sides[name](r)
            if r > 0:
                results[name].append(value)
    return results


def training(tmp: Path, args: Any, clock: StepClock, initial: torch.nn.Module) -> dict:
    """Train on every side in alternating rounds; each figure's median and its rounds."""
    prepared = tmp / "prepared"
    files = pairs(prepared)
    batch, workers = option(args, "batch", 4), option(args, "workers", 2)
    epochs, warmup = option(args, "epochs", 1), option(args, "warmup", 1)
    fits = {
        "plain": lambda r: train_plain(
            copy.deepcopy(initial.net), files, batch, workers, epochs, TimedLoader
        ),
        "lightning": lambda r: train_lightning(
            copy.deepcopy(initial.net), files, batch, workers, epochs, tmp / f"pl{r}", TimedLoader
        ),
        "segkit": lambda r: train_segkit(
            copy.deepcopy(initial), prepared, batch, workers, epochs, tmp / f"sk{r}"
        ),
        # the peers' arithmetic: float32 in the contiguous layout
        "segkit_fp32": lambda r: train_segkit(
            copy.deepcopy(initial),
            prepared,
            batch,
            workers,
            epochs,
            tmp / f"sk32_{r}",
            amp="off",
            channels_last=False,
        ),
    }

    def measured(fit: Callable[[int], TimedLoader]) -> Callable[[int], dict]:
        def side(r: int) -> dict:
            clock.ends.clear()
            start = time.perf_counter()
            timed = fit(r)
            wall = time.perf_counter() - start
            figures = train_figures(timed, list(clock.ends), warmup)
            return {**figures, "fit_images_per_s": len(files) * epochs / wall}

        return side

    results = alternate({k: measured(f) for k, f in fits.items()}, option(args, "rounds", 1), True)
    figures: dict[str, Any] = {}
    for name, runs in results.items():
        figures[name] = {k: median([r[k] for r in runs]) for k in runs[0]}
        figures[name]["rounds"] = [{k: round(v, 3) for k, v in r.items()} for r in runs]
    for side in ("segkit", "segkit_fp32"):
        for peer in ("plain", "lightning"):
            pairs_ = zip(results[side], results[peer])
            ratios = [s["images_per_s"] / p["images_per_s"] for s, p in pairs_]
            figures[f"{side}_vs_{peer}"] = median(ratios)
    figures.update(images_per_epoch=len(files), batch=batch, epochs_per_run=epochs)
    figures.update(warmup_steps=warmup, workers=workers)
    return figures


def compare(sides: dict[str, Callable[[Path], None]], n: int, rounds: int, tmp: Path) -> dict:
    """Images/s of each ``side(out)`` (the first is the reference) in alternating rounds, a
    warm-up round when ``n > 1``; the paired ratios to the reference, and the share of pixels
    on which the last round's label maps agree with the reference's."""

    def rate(fn: Callable[[Path], None], out: Path) -> float:
        start = time.perf_counter()
        fn(out)
        return n / (time.perf_counter() - start)

    def timed(name: str) -> Callable[[int], float]:
        return lambda r: rate(sides[name], tmp / f"{name}{r}")

    rates = alternate({name: timed(name) for name in sides}, rounds, warmup=n > 1)
    first, *others = sides
    figures: dict[str, Any] = {"images": n}
    figures.update({f"{k}_images_per_s": median(v) for k, v in rates.items()})
    for name in others:
        ratios = [a / b for a, b in zip(rates[name], rates[first])]
        figures[f"{name}_vs_{first}"] = median(ratios)
        figures[f"{name}_labels_agree"] = round(
            agreement(tmp / f"{first}{rounds}", tmp / f"{name}{rounds}"), 5
        )
    figures["rounds"] = {k: [round(x, 3) for x in v] for k, v in rates.items()}
    return figures


def prediction(tmp: Path, args: Any, photos: Path, checkpoint: Path) -> dict:
    """JPEG -> PNG and tiled prediction, plain against segkit."""
    from segkit.engine.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)["model"]
    weights = tmp / "plain.pth"  # what the tutorial saves: the bare network's state_dict
    torch.save({k.removeprefix("net."): v for k, v in state.items()}, weights)
    folder = copy_photos(photos, tmp / "jpegs", option(args, "predict_copies", 1)) / "train"
    files = sorted(folder.glob("*.jpg"))
    size, tile, side = (
        option(args, "size", 64),
        option(args, "tile", 256),
        option(args, "large", 512),
    )
    big = large_image(photos, side, tmp / "large.jpg")
    rounds = option(args, "rounds", 1)
    jpeg = compare(
        {
            "plain": lambda out: plain_predict(weights, files, out, size),
            "segkit": lambda out: segkit_predict(checkpoint, [folder], out),
            "segkit_torch": lambda out: segkit_predict(checkpoint, [folder], out, runtime="torch"),
        },
        len(files),
        rounds,
        tmp / "jpeg",
    )
    tiled = compare(
        {
            "plain": lambda out: plain_tiled(weights, big, out, tile, 0.25),
            "segkit": lambda out: segkit_predict(checkpoint, [big], out, tile=tile),
            # windows one at a time, as the plain loop runs them (--batch-size 1)
            "segkit_batch1": lambda out: segkit_predict(
                checkpoint, [big], out, tile=tile, batch_size=1
            ),
            "segkit_torch": lambda out: segkit_predict(
                checkpoint, [big], out, tile=tile, runtime="torch"
            ),
            "segkit_torch_batch1": lambda out: segkit_predict(
                checkpoint, [big], out, tile=tile, runtime="torch", batch_size=1
            ),
        },
        1,
        option(args, "large_rounds", 1),
        tmp / "tiled",
    )
    return {"jpeg": jpeg, "tiled": {"size": side, "tile": tile, **tiled}}


def main() -> None:
    args = parse_args(
        __doc__.splitlines()[0],
        photos=(str, str(PHOTOS), "Carvana train/ folder (JPEGs; GIF masks in ../train_masks)"),
        copies=(int, 16, "copies of each photo for training (5 photos: 80 images an epoch)"),
        size=(int, 128, "training size (the tutorial's 128)"),
        batch=(int, 16, "batch size"),
        workers=(int, 2, "DataLoader workers on every side"),
        epochs=(int, 3, "epochs per training run"),
        warmup=(int, 3, "steps left out at the start of each training run"),
        rounds=(int, 3, "timed rounds after the warm-up round"),
        predict_copies=(int, 8, "copies of each photo to predict (JPEG -> PNG)"),
        large=(int, 4096, "side of the large image predicted in windows"),
        tile=(int, 512, "window side for the large image"),
        large_rounds=(int, 1, "timed rounds of the large image (no warm-up round)"),
    )
    lightning = require_lightning()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    clock = StepClock()
    with workdir() as tmp:
        photos, kind = source_photos(Path(option(args, "photos", str(PHOTOS))), tmp, args.quick)
        copy_photos(photos, tmp / "raw", option(args, "copies", 2))
        size = option(args, "size", 64)
        with quiet():
            prepare_carvana(tmp / "raw", tmp / "prepared", size=size)
        initial = carvana_model()
        initial.spec.options["image_size"] = size
        train = training(tmp, args, clock, initial)
        # the last segkit run's weights (trained epochs x images), as a segkit checkpoint
        checkpoint = tmp / f"sk{option(args, 'rounds', 1)}" / "last.pt"
        predict = prediction(tmp, args, photos, checkpoint)
    figures = {"photos": kind, "train": train, "predict": predict}
    emit("peers", {**figures, "lightning": lightning.__version__})


if __name__ == "__main__":
    main()
