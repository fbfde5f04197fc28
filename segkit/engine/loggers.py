"""Hooks that report a run: ``history.csv``, figures, TensorBoard, progress on the terminal.

Each can be switched off from the config (``train.hooks: {history: false, plot: false,
progress: false}``) and TensorBoard on (``train.hooks: {tensorboard: true}``); see
:mod:`segkit.engine.hooks` for the order they run in.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

from segkit.engine.hooks import EpochLog, HookBase, _write_atomic
from segkit.errors import ConfigError

logger = logging.getLogger(__name__)

#: history.csv's first and last columns; the metrics go between them
FIRST_COLUMNS = ("epoch", "lr", "train_loss", "val_loss")
LAST_COLUMNS = ("seconds", "images_per_s")


def read_history(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The rows of a ``history.csv`` up to ``up_to_epoch``, numbers parsed (blanks: None)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return [row for row in rows if int(row["epoch"]) <= up_to_epoch]


def _number(text: str) -> float | int | None:
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's log, for scalar logs (a blank, None, is not a value)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def history_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV text, columns in a stable order, blanks where a value is missing."""
    middle: list[str] = []
    for row in rows:
        middle += [k for k in row if k not in FIRST_COLUMNS + LAST_COLUMNS and k not in middle]
    columns = [*FIRST_COLUMNS, *middle, *LAST_COLUMNS]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return out.getvalue()


class _Rows(HookBase):
    """A hook that keeps the run's rows: a resumed run reads the earlier ones from history.csv,
    a second ``fit()`` of the same trainer goes on with its own."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def before_train(self) -> None:
        t = self.trainer
        if t.resumed:
            self.rows = read_history(t.out_dir / "history.csv", t.epoch) or self.rows
        self.rows = [row for row in self.rows if int(row["epoch"]) <= t.epoch]

    def add_row(self, log: EpochLog) -> dict[str, Any]:
        row = {"epoch": log.epoch, **log.values}
        row["seconds"] = time.perf_counter() - self.trainer.epoch_start
        self.rows.append(row)
        return row


class HistoryHook(_Rows):
    """``history.csv``: a row per epoch (epoch, lr, train_loss, val_loss, val metrics, seconds,
    images_per_s). A resumed run keeps the rows up to its checkpoint and continues the file.

    For an epoch resumed in its middle, ``seconds`` and ``images_per_s`` cover only the part
    run after the resume (``train_loss`` covers the whole epoch).
    """

    name = "history"

    def after_epoch(self, log: EpochLog) -> None:
        self.add_row(log)
        if self.trainer.dist.is_main:
            _write_atomic(self.trainer.out_dir / "history.csv", history_csv(self.rows))


class PlotHook(_Rows):
    """``curves.png`` (loss curves and the monitored metric) and ``predictions.png`` (image /
    ground truth / prediction for the preview samples at the best epoch).

    Curves are redrawn at most every ``every_s`` seconds and at the end; predictions are
    kept when the monitored value improves and drawn at the end. An interrupted run exits at
    once without drawing; the kept predictions travel in ``last.pt``, so its resumed run
    draws both. State: the kept predictions.
    """

    name = "plot"

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last_draw = 0.0
        self.best_preview: dict[str, Any] | None = None

    def before_train(self) -> None:
        super().before_train()
        self.last_draw = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"best_preview": self.best_preview} if self.best_preview else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_preview = state.get("best_preview")

    def after_epoch(self, log: EpochLog) -> None:
        self.add_row(log)
        if log.improved and log.preview is not None:
            self.best_preview = dict(log.preview, epoch=log.epoch)
        if self.trainer.dist.is_main and time.perf_counter() - self.last_draw > self.every_s:
            self.draw_curves()

    def draw_curves(self) -> None:
        from segkit import viz

        t = self.trainer
        if self.rows:
            viz.plot_curves(self.rows, t.out_dir / "curves.png", monitor=t.monitor)
        self.last_draw = time.perf_counter()

    def after_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main or t.status == "interrupted":
            return
        self.draw_curves()
        p = self.best_preview
        if p is not None and "image" in p:
            from segkit import viz

            spec = getattr(t.model, "spec", None)
            viz.prediction_grid(
                p["image"],
                p["mask"],
                p["pred"],
                t.out_dir / "predictions.png",
                class_names=t.class_names,
                mean=getattr(spec, "mean", None),
                std=getattr(spec, "std", None),
                title=f"epoch {p['epoch']}: image / ground truth / prediction",
                background=viz.background_label(t.class_names, _multilabel(spec)),
            )


class ProgressHook(HookBase):
    """A tqdm bar per epoch (loss, lr, images/s) on a terminal, one summary line per epoch and
    the reason a run stopped early, printed to ``stream`` (stdout)."""

    name = "progress"

    def __init__(self, bar: bool | None = None, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.want_bar = bar
        self.bar: Any = None
        self.last_post = 0.0

    def before_epoch(self) -> None:
        t = self.trainer
        show = self.want_bar
        if show is None:
            show = t.cfg.progress and sys.stderr.isatty()
        if show and t.dist.is_main:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=t.n_batches,
                initial=t.batch_in_epoch,
                desc=f"epoch {t.epoch + 1}/{t.cfg.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def after_step(self) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last_post > 0.5:
            t = self.trainer
            rate = t.images_seen / max(now - t.epoch_start, 1e-9)
            post = f"loss={t.loss_value:.4f} lr={t.lr:.2e} {rate:.1f} img/s"
            self.bar.set_postfix_str(post, refresh=False)
            self.last_post = now

    def after_epoch(self, log: EpochLog) -> None:
        self.close()
        t = self.trainer
        if not t.dist.is_main:
            return
        values = log.values
        parts = [f"epoch {log.epoch}/{t.cfg.epochs}", f"lr {values['lr']:.2e}"]
        headline = ["train_loss", "val_loss", t.monitor, "val_miou", "val_soft_dice"]
        headline += [f"val_f1_{g}" for g in t.groups or {}]
        for key in dict.fromkeys(headline):
            if values.get(key) is not None:
                parts.append(f"{key} {values[key]:.4f}")
        parts.append(f"{time.perf_counter() - t.epoch_start:.1f}s")
        parts.append(f"{values.get('images_per_s') or 0:.1f} img/s")
        if log.improved:
            parts.append(f"* best {t.monitor}")
        print("  ".join(parts), file=self.stream, flush=True)
        if t.stop_reason:
            print(t.stop_reason, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TensorBoardHook(HookBase):
    """TensorBoard event files in ``<out_dir>/tensorboard`` (``tensorboard --logdir RUN``).

    Per epoch: every number of the log as a scalar (``train_loss``, ``val_*``, ``lr``, ...;
    the step is the epoch) and the preview predictions as images; per optimizer step:
    ``step/loss`` and ``step/lr`` (the step is the optimizer step). Needs the ``tensorboard``
    package (``pip install segkit[tensorboard]``); rank 0 writes.
    """

    name = "tensorboard"

    def __init__(self, folder: str = "tensorboard") -> None:
        self.folder = folder
        self.writer: Any = None

    def before_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.hooks.tensorboard=true needs the tensorboard package: pip install "
                "'segkit[tensorboard]' (or tensorboard), or switch it off."
            ) from None
        # a resumed run continues: TensorBoard drops the events after the resumed step
        self.writer = SummaryWriter(str(t.out_dir / self.folder), purge_step=t.epoch + 1)

    def after_step(self) -> None:
        t = self.trainer
        if self.writer is not None and t.stepped:
            self.writer.add_scalar("step/loss", t.loss_value, t.step)
            self.writer.add_scalar("step/lr", t.lr, t.step)

    def after_epoch(self, log: EpochLog) -> None:
        if self.writer is None:
            return
        for key, value in numbers(log.values).items():
            self.writer.add_scalar(key, value, log.epoch)
        if log.preview is not None and "image" in log.preview:
            self._add_preview(log.preview, log.epoch)
        self.writer.flush()

    def _add_preview(self, preview: dict[str, Any], epoch: int) -> None:
        from segkit import viz

        t = self.trainer
        spec = getattr(t.model, "spec", None)
        grid = viz.preview_panels(
            preview["image"],
            preview["mask"],
            preview["pred"],
            num_classes=len(t.class_names or []) or None,
            mean=getattr(spec, "mean", None),
            std=getattr(spec, "std", None),
            background=viz.background_label(t.class_names, _multilabel(spec)),
        )
        self.writer.add_image("predictions", grid, epoch, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _multilabel(spec: Any) -> bool:
    """Whether the model predicts overlapping classes (its previews draw 0 as "none")."""
    return getattr(spec, "task", None) == "multilabel"
