"""The training loop: :class:`Trainer` runs epochs of :meth:`Trainer.run_step`; hooks do the rest.

Evaluation, LR stepping, early stopping, the history file, plots, progress and checkpoints
live in :mod:`segkit.engine.hooks`. Resume with ``Trainer(...).fit(resume=True)`` (the run
folder's ``last.pt``) or ``fit(resume="path/to/last.pt")``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segkit._files import remove_stale_temp_files
from segkit.config import SchedulerConfig, TrainConfig
from segkit.engine import distributed as D
from segkit.engine.checkpoint import (
    copy_checkpoint,
    restore_trainer,
    save_checkpoint,
    set_rng_state,
    to_plain,
    trainer_state,
)
from segkit.engine.evaluation import Evaluator, run_evaluation, unpack_batch
from segkit.engine.hooks import CheckpointHook, HookBase, default_hooks, is_run_config
from segkit.engine.loaders import release_workers, seed_everything, set_loader_epoch, worker_error
from segkit.engine.runtime import StopOnSignal, check_train_config, resolve_amp
from segkit.engine.schedulers import build_scheduler, current_lr
from segkit.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    SegkitError,
    TrainingError,
    command_line,
)

#: files whose presence marks a run folder as holding a run (a lone config.yaml does not:
#: a run that failed before its first epoch ended may simply be started again)
RUN_FILES = ("last.pt", "best.pt", "history.csv")
#: figures a run draws; removed with the run files when a run is overwritten
PLOT_FILES = ("curves.png", "predictions.png")


class Trainer:
    """Train a segmentation model: accumulation, AMP, LR schedules, validation, checkpoints.

    Args:
        model: network returning logits ``N x C x H x W`` (``C == 1``: binary task).
        loss_fn: ``loss_fn(logits, target)`` with ``target`` an ``N x H x W`` int64 label map.
        optimizer: optimizer over ``model``'s parameters (its LR is the schedule's peak).
        train_loader: yields ``{"image", "mask", ...}`` batches (see :func:`make_loader`).
        val_loader: validation batches; required unless ``cfg.monitor`` is ``train_loss``.
        cfg: the loop's settings.
        scheduler_cfg: the LR schedule.
        class_names: label names (default: ``model.spec.class_names`` or generated).
        groups: class groups whose F1 is reported, e.g. ``{"eyes": [4, 5]}``.
        out_dir: run folder (default ``cfg.out_dir``).
        full_config: the whole resolved config, written to ``config.yaml`` and checkpoints.
        hooks: extra :class:`HookBase` objects, run after the built-in ones.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        optimizer: torch.optim.Optimizer,
        train_loader: Any,
        val_loader: Any = None,
        cfg: TrainConfig | None = None,
        scheduler_cfg: SchedulerConfig | None = None,
        class_names: Sequence[str] | None = None,
        groups: dict[str, Sequence[int]] | None = None,
        out_dir: str | Path | None = None,
        full_config: dict[str, Any] | None = None,
        hooks: Sequence[HookBase] | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else TrainConfig()
        self.scheduler_cfg = scheduler_cfg if scheduler_cfg is not None else SchedulerConfig()
        check_train_config(cfg)
        self.dist = D.setup(cfg.device)
        self.device = self.dist.device
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
        self._autocast: Any = nullcontext()  # reused every step: entering it is not free
        if self.amp_dtype is not None:
            self._autocast = torch.autocast(self.device.type, dtype=self.amp_dtype)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.eval_net = torch.compile(self.model) if cfg.compile else self.model
        self.net = self.eval_net
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.eval_net, device_ids=ids)
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn
        self.optimizer = optimizer
        self.train_loader = D.shard_loader(train_loader, self.dist, cfg.seed, train=True)
        self.val_loader = None
        if val_loader is not None:
            self.val_loader = D.shard_loader(val_loader, self.dist, cfg.seed)
        self.n_batches = len(self.train_loader)
        if self.n_batches == 0:
            raise DataError(
                "The training loader yields no batches: the data set is empty or smaller than "
                "the batch size with drop_last. Add data or lower the batch size."
            )
        self.monitor = cfg.monitor
        # only val_loss / train_loss are losses: a class named e.g. "gloss" gives a score
        self.mode = cfg.mode or ("min" if cfg.monitor in ("val_loss", "train_loss") else "max")
        if self.val_loader is None and not self.monitor.startswith("train_"):
            raise ConfigError(
                f"train.monitor={self.monitor!r} needs a validation loader; pass val_loader or "
                "monitor train_loss."
            )
        if self.val_loader is not None and D.any_rank(_no_batches(self.val_loader), self.dist):
            # found now, not after a first epoch (and under torchrun no rank waits for another)
            raise DataError(
                "The validation loader yields no batches on at least one process: the "
                "validation set is empty or has fewer samples than processes. Add validation "
                "data (data.val_fraction), run fewer processes, or monitor train_loss without "
                "a val_loader."
            )
        steps = math.ceil(self.n_batches / cfg.accumulate)
        self.schedule = build_scheduler(optimizer, self.scheduler_cfg, cfg.epochs, steps, self.mode)
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.out_dir = Path(out_dir if out_dir is not None else cfg.out_dir)
        spec = getattr(model, "spec", None)
        names = class_names if class_names is not None else getattr(spec, "class_names", None)
        self.class_names = list(names) if names else None
        self.groups = groups
        self.full_config = to_plain(full_config) if full_config is not None else None
        ignore = getattr(loss_fn, "ignore_index", None)
        ignore = ignore if isinstance(ignore, int) and ignore >= 0 else None
        self.evaluator = Evaluator(self.class_names, groups, ignore, preview=cfg.preview)
        # printed after an interrupt, formatted with {path} (last.pt) and {config} (config.yaml)
        python_hint = "Trainer(...).fit(resume={path!r})"
        self.resume_hint = python_hint
        if self.full_config is not None:
            self.resume_hint = f"segkit train {{config}} --resume {{path}}  (Python: {python_hint})"
        self.epoch = self.step = self.iteration = self.batch_in_epoch = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.status, self.resumed, self.stepped, self.improved = "new", False, False, False
        self.monitored: float | None = None
        self.metrics: dict[str, float] = {}
        self.log: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.preview: dict[str, torch.Tensor] | None = None
        self.train_sums = [0.0, 0]  # sum of loss * images, images (this epoch)
        self.loss_value, self.images_seen, self.epoch_start = math.nan, 0, time.perf_counter()
        self.epoch_lr = self.lr
        self.pending_rng: dict[str, Any] | None = None
        self._signals = StopOnSignal()
        self.hooks = [*default_hooks(self), *(hooks or []), CheckpointHook()]
        for hook in self.hooks:
            hook.trainer = self
        base = HookBase.after_step
        self._step_hooks = [h for h in self.hooks if type(h).after_step is not base]

    @property
    def lr(self) -> float:
        """The current learning rate (first parameter group)."""
        return current_lr(self.optimizer)

    def fit(
        self, resume: str | Path | bool | None = None, overwrite: bool = False
    ) -> dict[str, Any]:
        """Train until ``cfg.epochs``, early stop or a signal.

        Args:
            resume: True to continue from the run folder's ``last.pt``, or a checkpoint path.
            overwrite: start afresh in a run folder that holds an earlier run, replacing its
                files; without it (and without ``resume``) such a folder is refused. A second
                ``fit()`` of the same Trainer continues its own run either way.

        Raises:
            ConfigError: the run folder holds an earlier run and neither ``resume`` nor
                ``overwrite`` was given.

        Returns:
            ``status`` (completed, early_stopped, interrupted), ``best`` / ``last`` /
            ``history`` paths, ``best_value``, ``best_epoch``, ``monitor``, ``mode``,
            ``epochs`` (completed) and ``metrics`` (the last validation's).
        """
        if self.status == "new":  # a second fit() goes on with the random streams as they are
            seed_everything(self.cfg.seed + self.dist.rank, self.cfg.deterministic)
        self.resumed = bool(resume)
        self._check_run_folder(resume, overwrite)
        if self.dist.is_main and (removed := remove_stale_temp_files(self.out_dir)):
            print(removed, flush=True)  # what a kill -9 during a write left behind
        if resume:
            self.load(self._resume_path(resume))
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(self.dist)
        self.status = "running"
        D.mark_finished(False)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            with self._signals:
                self._call("before_train")
                while self.status == "running" and self.epoch < self.cfg.epochs:
                    self.run_epoch()
                if self.status == "running":
                    self.status = "completed"
                if self.status == "interrupted":
                    self._report_interrupt()
                self._call("after_train")
        except SegkitError as exc:  # a loader worker's error: as one line, as without workers
            raise (worker_error(exc) or exc) from exc
        finally:
            for hook in self.hooks:
                hook.close()
            release_workers(self.train_loader)
            release_workers(self.val_loader)
        D.barrier(self.dist)
        D.mark_finished(True)
        return self.summary()

    def run_epoch(self) -> None:
        """Train one epoch (the rest of it when resuming inside one), then run the hooks."""
        self.net.train()
        set_loader_epoch(self.train_loader, self.epoch, self.cfg.seed)
        self.epoch_start, self.images_seen = time.perf_counter(), 0
        if self.batch_in_epoch == 0:  # else resuming inside the epoch: keep its starting LR
            self.epoch_lr = self.lr
        self._call("before_epoch")
        if self.batch_in_epoch == 0:
            self._restore_rng()
        batches = iter(self.train_loader)
        for _ in islice(batches, self.batch_in_epoch):
            pass  # resuming inside an epoch: the same order, so skip what was done
        self._restore_rng()
        for batch in batches:
            self.run_step(batch)
            if self.stepped and self.batch_in_epoch < self.n_batches and self._stop_requested():
                self.status = "interrupted"
                self.save(self.out_dir / "last.pt", self.state_dict(complete=False))
                return
        sums = D.all_reduce_sum(torch.tensor(self.train_sums, dtype=torch.float64), self.dist)
        seconds = time.perf_counter() - self.epoch_start
        self.log = {
            "epoch": self.epoch + 1,
            "lr": self.epoch_lr,
            "train_loss": float(sums[0] / sums[1]) if sums[1] else math.nan,
            "images_per_s": self.images_seen * self.dist.world_size / max(seconds, 1e-9),
        }
        self._call("after_epoch")
        if self.device.type == "cuda" and self.cfg.empty_cache:
            torch.cuda.empty_cache()
        self.epoch, self.batch_in_epoch, self.train_sums = self.epoch + 1, 0, [0.0, 0]
        if self.status == "running" and self._stop_requested():
            self.status = "interrupted"

    def _restore_rng(self) -> None:
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def _not_finite_message(self, value: float, n: int) -> str:
        where = f"epoch {self.epoch + 1}, step {n} of {self.n_batches}"
        what = (
            f"The loss is {value}"
            if not math.isfinite(value)
            else "Another rank's loss is not finite"
        )
        kept = (
            f"best.pt and last.pt in {self.out_dir} are from the last completed epoch"
            if (self.out_dir / "last.pt").is_file()
            else "no checkpoint had been written yet"
        )
        return (
            f"{what} at {where} (optimizer step {self.step}). Training stopped; {kept}. Lower the "
            "learning rate, set train.grad_clip (e.g. 1.0) or train.amp=off, or check the data."
        )

    def run_step(self, batch: Any) -> None:
        """Forward and backward one batch; step the optimizer every ``accumulate`` batches."""
        images, masks = unpack_batch(batch)
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        masks = masks.to(self.device, non_blocking=True).long()
        n = self.batch_in_epoch + 1
        self.stepped = n % self.cfg.accumulate == 0 or n == self.n_batches
        no_sync = self.dist.enabled and not self.stepped
        with self.net.no_sync() if no_sync else nullcontext():
            with self._autocast:
                loss = self.loss_fn(self.net(images), masks)
            value = loss.item()
            # decided together: a rank that stopped alone would leave the others waiting
            # for it in the next gradient all-reduce
            if D.any_rank(not math.isfinite(value), self.dist):
                raise TrainingError(self._not_finite_message(value, n))
            group = self._group_size(n)
            if group > 1:
                loss = loss / group
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        if self.stepped:
            self._optimizer_step()
        batch_size = images.shape[0]
        self.loss_value = value
        self.train_sums[0] += value * batch_size
        self.train_sums[1] += batch_size
        self.images_seen += batch_size
        self.batch_in_epoch, self.iteration = n, self.iteration + 1
        for hook in self._step_hooks:
            hook.after_step()

    def _group_size(self, n: int) -> int:
        """Batches in the accumulation group of batch ``n`` (1-based): ``accumulate``, or fewer
        for the epoch's last group, so that it too averages its gradients."""
        start = (n - 1) // self.cfg.accumulate * self.cfg.accumulate
        return min(self.cfg.accumulate, self.n_batches - start)

    def _optimizer_step(self) -> None:
        if self.cfg.grad_clip is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def validate(self) -> dict[str, float]:
        """Evaluate on the validation loader; returns ``val_loss`` and ``val_<metric>`` values.

        Under DDP every rank first takes rank 0's buffers (BatchNorm running statistics drift
        apart between ranks), so the metrics are those of the model that rank 0 saves.
        """
        D.broadcast_buffers(self.model, self.dist)
        result = run_evaluation(
            self.eval_net,
            self.val_loader,
            self.evaluator,
            self.device,
            self.loss_fn,
            self.amp_dtype,
            self.cfg.channels_last,
            self.dist,
        )
        self.class_names = self.evaluator.class_names
        self.preview = self.evaluator.preview_batch()
        return {f"val_{k}": v for k, v in result.items()}

    def request_stop(self, status: str, message: str = "") -> None:
        """Stop after the current epoch with ``status`` (e.g. ``early_stopped``)."""
        self.status = status
        if message and self.dist.is_main:
            print(message, flush=True)

    def _stop_requested(self) -> bool:
        return D.any_rank(self._signals.received is not None, self.dist)

    def _report_interrupt(self) -> None:
        if not self.dist.is_main:
            return
        path = self.out_dir / "last.pt"
        hint = self.resume_hint.format(path=str(path), config=self.out_dir / "config.yaml")
        where = f"epoch {self.epoch + 1}, step {self.batch_in_epoch}"
        if self.batch_in_epoch == 0:
            where = f"the end of epoch {self.epoch}"
        print(f"Training interrupted at {where}; saved {path}.\nResume with: {hint}", flush=True)

    def _call(self, method: str) -> None:
        for hook in self.hooks:
            getattr(hook, method)()

    def summary(self) -> dict[str, Any]:
        """What :meth:`fit` returns."""
        best = self.out_dir / "best.pt"
        return {
            "status": self.status,
            "best": best if self.best_epoch is not None and best.is_file() else None,
            "last": self.out_dir / "last.pt",
            "history": self.out_dir / "history.csv",
            "out_dir": self.out_dir,
            "monitor": self.monitor,
            "mode": self.mode,
            "best_value": self.best,
            "best_epoch": self.best_epoch,
            "epochs": self.epoch,
            "metrics": dict(self.metrics),
        }

    def state_dict(self, complete: bool = True) -> dict[str, Any]:
        """The checkpoint contents; ``complete=False`` marks a stop inside the epoch."""
        return trainer_state(self, complete)

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write a checkpoint from rank 0, with every rank waiting until it is written."""
        D.barrier(self.dist)
        if self.dist.is_main:
            save_checkpoint(path, state)
        D.barrier(self.dist)

    def copy(self, src: Path, dst: Path) -> None:
        """Copy a finished checkpoint from rank 0 (a hard link where the file system has them)."""
        if self.dist.is_main:
            copy_checkpoint(src, dst)
        D.barrier(self.dist)

    def _check_run_folder(self, resume: Any, overwrite: bool) -> None:
        """Refuse a run folder this run must not write into; clear it when overwriting."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ConfigError(
                f"train.out_dir {str(self.out_dir)!r} is a file, not a folder; choose a folder "
                "for the run (it is created if missing)."
            )
        if resume and overwrite:
            raise ConfigError(
                "resume and overwrite contradict each other: resume continues the run in "
                f"{str(self.out_dir)!r}, overwrite replaces it. Pass one of them."
            )
        self._refuse_foreign_config()
        if not resume and self.status == "new":
            self._clear_earlier_run() if overwrite else self._refuse_earlier_run()

    def _refuse_foreign_config(self) -> None:
        path = self.out_dir / "config.yaml"
        foreign = self.full_config is not None and path.is_file() and not is_run_config(path)
        if D.any_rank(foreign, self.dist):
            raise ConfigError(
                f"{str(path)!r} was not written by a segkit run (a config of your own?), and the "
                "run would replace it with its resolved settings. Choose another train.out_dir "
                "(e.g. runs/exp), or move that file."
            )

    def _clear_earlier_run(self) -> None:
        """Remove what an earlier run wrote here, so that none of it passes for the new run's."""
        if self.dist.is_main:
            for name in (*RUN_FILES, *PLOT_FILES):
                (self.out_dir / name).unlink(missing_ok=True)
        D.barrier(self.dist)

    def _no_checkpoint_message(self) -> str:
        """Why a run folder with a history but no checkpoint cannot be resumed, and the way on."""
        config = self.out_dir / "config.yaml"
        again = "Trainer(...).fit(overwrite=True)"
        if command_line() and config.is_file():
            again = f"segkit train {config} --overwrite"
        return (
            f"Run folder {str(self.out_dir)!r} holds history.csv but no checkpoint: the earlier "
            "run was stopped before it wrote last.pt, so there is nothing to resume. Choose "
            f"another train.out_dir, or start this one afresh with: {again}"
        )

    def _refuse_earlier_run(self) -> None:
        names = [n for n in RUN_FILES if (self.out_dir / n).exists()]
        if D.any_rank(bool(names), self.dist):  # every rank raises, or none does
            held = ", ".join(names) or "files"
            if names == ["history.csv"]:
                raise ConfigError(self._no_checkpoint_message())
            raise ConfigError(
                f"Run folder {str(self.out_dir)!r} already holds {held} from an earlier run. "
                "Continue it with --resume (fit(resume=True)), choose another train.out_dir, or "
                "replace it with --overwrite (fit(overwrite=True))."
            )

    def _resume_path(self, resume: str | Path | bool) -> Path:
        if resume is True:
            path = self.out_dir / "last.pt"
            if not path.is_file() and (self.out_dir / "history.csv").is_file():
                raise CheckpointError(self._no_checkpoint_message())
            if not path.is_file():
                raise CheckpointError(
                    f"Cannot resume: {str(path)!r} does not exist (no earlier run in {self.out_dir}). "
                    "Start without resume, or pass the path of the checkpoint to continue from."
                )
            return path
        return Path(resume)

    def load(self, path: str | Path) -> None:
        """Restore model, optimizer, schedule, scaler, counters, RNG and hooks from a checkpoint."""
        restore_trainer(self, path)
        if self.dist.is_main and self.epoch >= self.cfg.epochs:
            print(f"{path} already completed {self.epoch} epochs; raise train.epochs to go on.")


def _no_batches(loader: Any) -> bool:
    """True for a loader with a length of 0 (loaders without a length are not checked)."""
    try:
        return len(loader) == 0
    except TypeError:
        return False
