"""Trainer hooks: evaluation, LR stepping, early stopping, history, plots, progress, checkpoints.

Each hook is a small object with ``before_train / before_epoch / after_step / after_epoch /
after_train`` methods that read and write the trainer's attributes (detectron2's design). The
Trainer runs its built-in hooks in the order of :func:`default_hooks`, then any extra hooks,
then :class:`CheckpointHook` last so that ``last.pt`` captures every hook's state.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segkit._files import write_bytes_atomic
from segkit.errors import ConfigError, suggest

if TYPE_CHECKING:
    from segkit.engine.trainer import Trainer


class HookBase:
    """A hook does nothing unless it overrides a method; ``trainer`` is set on registration."""

    trainer: Trainer

    def before_train(self) -> None:
        """Called once before the first epoch (after a resume has been loaded)."""

    def before_epoch(self) -> None:
        """Called at the start of every epoch."""

    def after_step(self) -> None:
        """Called after every batch (``trainer.stepped`` says whether the optimizer stepped)."""

    def after_epoch(self) -> None:
        """Called at the end of every epoch, after training on all of its batches."""

    def after_train(self) -> None:
        """Called when training completes, stops early or is interrupted (not after errors)."""

    def close(self) -> None:
        """Called always, errors included: release what the hook holds open."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in a checkpoint (plain values) to resume this hook."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


class EvalHook(HookBase):
    """Validate every ``val_every`` epochs (and at the last one), track the monitored value.

    Sets ``trainer.metrics`` (``val_*`` values), ``trainer.monitored`` (None when this epoch
    was not validated), ``trainer.improved``, ``trainer.best`` and ``trainer.best_epoch``.
    """

    def before_train(self) -> None:
        """Check ``train.monitor`` against the metric names before training, when they are known."""
        t = self.trainer
        names = t.class_names
        if not t.monitor.startswith("val_") or t.val_loader is None or not names:
            return
        from segkit.metrics import ConfusionMatrix

        cm = ConfusionMatrix(len(names), class_names=names)
        cm.matrix[0, 0] = 1
        known = ["val_loss", *(f"val_{k}" for k in cm.compute(t.groups))]
        if len(names) == 2:
            known += ["val_soft_dice", "val_soft_dice_global"]
        self.check(t.monitor, known)

    @staticmethod
    def check(monitor: str, known: list[str]) -> None:
        """Raise ConfigError when ``monitor`` is not among ``known``, suggesting close names."""
        if monitor not in known:
            raise ConfigError(
                f"train.monitor={monitor!r} is not among the values this run computes."
                f"{suggest(monitor, known)} Available: {', '.join(known)}."
            )

    def after_epoch(self) -> None:
        t = self.trainer
        t.improved, t.monitored = False, None
        epoch = t.epoch + 1
        if epoch % t.cfg.val_every != 0 and epoch != t.cfg.epochs:
            return
        if t.val_loader is not None:
            t.metrics = t.validate()
            t.log.update(t.metrics)
        self.check(t.monitor, [k for k in t.log if k.startswith(("val_", "train_"))])
        t.monitored = float(t.log[t.monitor])
        if _better(t.monitored, t.best, t.mode):
            t.best, t.best_epoch, t.improved = t.monitored, epoch, True


class LRSchedulerHook(HookBase):
    """Step the LR schedule after optimizer steps, epochs or validations, as it needs."""

    def after_step(self) -> None:
        t = self.trainer
        if t.stepped and t.schedule.interval == "batch":
            t.schedule.scheduler.step()

    def after_epoch(self) -> None:
        t = self.trainer
        if t.schedule.interval == "epoch":
            t.schedule.scheduler.step()
        elif t.schedule.interval == "validation" and t.monitored is not None:
            t.schedule.scheduler.step(t.monitored)


class EarlyStopHook(HookBase):
    """Stop after ``cfg.early_stop`` validations without improvement of the monitored value."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.bad = 0

    def after_epoch(self) -> None:
        t = self.trainer
        if t.monitored is None:
            return
        self.bad = 0 if t.improved else self.bad + 1
        if self.patience is not None and self.bad >= self.patience:
            t.request_stop(
                "early_stopped",
                f"early stop: {t.monitor} has not improved for {self.bad} validations "
                f"(best {t.best:.4f} at epoch {t.best_epoch})",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = int(state.get("bad", 0))


def _write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


class HistoryHook(HookBase):
    """``history.csv``: a row per epoch (epoch, lr, train_loss, val_loss, val metrics, seconds,
    images_per_s). A resumed run keeps the rows up to its checkpoint and continues the file.

    For an epoch resumed in its middle, ``seconds`` and ``images_per_s`` cover only the part
    run after the resume (``train_loss`` covers the whole epoch).
    """

    FIRST = ("epoch", "lr", "train_loss", "val_loss")
    LAST = ("seconds", "images_per_s")

    def before_train(self) -> None:
        t = self.trainer
        rows = t.history  # a later fit() of the same trainer goes on with its rows
        path = t.out_dir / "history.csv"
        if t.resumed and path.is_file():
            with open(path, newline="") as f:
                rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        t.history = [row for row in rows if int(row["epoch"]) <= t.epoch]

    def after_epoch(self) -> None:
        t = self.trainer
        row = dict(t.log)
        row["seconds"] = time.perf_counter() - t.epoch_start
        t.history.append(row)
        if t.dist.is_main:
            _write_atomic(t.out_dir / "history.csv", self.to_csv(t.history))

    def to_csv(self, rows: list[dict[str, Any]]) -> str:
        """The rows as CSV text, columns in a stable order, blanks where a value is missing."""
        middle: list[str] = []
        for row in rows:
            middle += [k for k in row if k not in self.FIRST + self.LAST and k not in middle]
        columns = [*self.FIRST, *middle, *self.LAST]
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
        return out.getvalue()


def _number(text: str) -> float | int | None:
    if text == "":
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text else value


#: first line of the ``config.yaml`` a run writes; a file without it is not segkit's to replace
CONFIG_HEADER = "# segkit: the resolved settings of this run, rewritten whenever it starts"


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.yaml`` that a segkit run wrote (and may rewrite).

    Copies from before the header existed are recognised as complete dumps of every section
    without comments; a hand-written config (comments, or some sections only) is not.
    """
    import dataclasses

    import yaml

    from segkit.config import Config

    text = path.read_text(errors="replace")
    if text.startswith(CONFIG_HEADER):
        return True
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    sections = {f.name for f in dataclasses.fields(Config)}
    return "#" not in text and isinstance(data, dict) and sections <= set(data)


class ConfigHook(HookBase):
    """Write the run's resolved configuration as ``config.yaml`` (not when nothing will train:
    a resume of a finished run leaves the file as the epochs that ran wrote it)."""

    def before_train(self) -> None:
        t = self.trainer
        if t.full_config is not None and t.dist.is_main and t.epoch < t.cfg.epochs:
            import yaml

            text = yaml.safe_dump(t.full_config, sort_keys=False)
            _write_atomic(t.out_dir / "config.yaml", f"{CONFIG_HEADER}\n{text}")


class PlotHook(HookBase):
    """``curves.png`` (loss curves and the monitored metric) and ``predictions.png`` (image /
    ground truth / prediction for the preview samples at the best epoch).

    Curves are redrawn at most every ``every_s`` seconds and at the end; predictions are
    kept when the monitored value improves and drawn at the end. An interrupted run exits at
    once without drawing; the kept predictions travel in ``last.pt``, so its resumed run
    draws both.
    """

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.last_draw = 0.0
        self.best_preview: dict[str, Any] | None = None

    def before_train(self) -> None:
        self.last_draw = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"best_preview": self.best_preview} if self.best_preview else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_preview = state.get("best_preview")

    def after_epoch(self) -> None:
        t = self.trainer
        if t.improved and t.preview is not None:
            self.best_preview = dict(t.preview, epoch=t.epoch + 1)
        if t.dist.is_main and time.perf_counter() - self.last_draw > self.every_s:
            self.draw_curves()

    def draw_curves(self) -> None:
        from segkit import viz

        t = self.trainer
        if t.history:
            viz.plot_curves(t.history, t.out_dir / "curves.png", monitor=t.monitor)
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
            )


class ProgressHook(HookBase):
    """A tqdm bar per epoch (loss, lr, images/s) on a terminal, and one summary line per epoch."""

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

            total = len(t.train_loader)
            self.bar = tqdm(
                total=total,
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

    def after_epoch(self) -> None:
        self.close()
        t = self.trainer
        if not t.dist.is_main:
            return
        parts = [f"epoch {t.epoch + 1}/{t.cfg.epochs}", f"lr {t.log['lr']:.2e}"]
        headline = ["train_loss", "val_loss", t.monitor, "val_miou", "val_soft_dice"]
        headline += [f"val_f1_{g}" for g in t.groups or {}]
        for key in dict.fromkeys(headline):
            if t.log.get(key) is not None:
                parts.append(f"{key} {t.log[key]:.4f}")
        parts.append(f"{time.perf_counter() - t.epoch_start:.1f}s")
        parts.append(f"{t.log.get('images_per_s') or 0:.1f} img/s")
        if t.improved:
            parts.append(f"* best {t.monitor}")
        print("  ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointHook(HookBase):
    """``last.pt`` after every epoch and ``best.pt`` when the monitored value improves (rank 0).

    The state is serialised once: on improvement ``best.pt`` becomes a link to (or copy of) the
    new ``last.pt``, which halves the time spent writing checkpoints.
    """

    def after_epoch(self) -> None:
        t = self.trainer
        last = t.out_dir / "last.pt"
        t.save(last, t.state_dict(complete=True))
        if t.improved:
            t.copy(last, t.out_dir / "best.pt")


def default_hooks(trainer: Trainer) -> list[HookBase]:
    """The built-in hooks in their running order, without the final :class:`CheckpointHook`."""
    return [
        ConfigHook(),
        EvalHook(),
        LRSchedulerHook(),
        EarlyStopHook(trainer.cfg.early_stop),
        HistoryHook(),
        PlotHook(),
        ProgressHook(),
    ]
