"""The training loop: :class:`Trainer` runs epochs of :meth:`Trainer.run_step`; hooks do the rest.

Evaluation, best-value tracking, LR stepping, early stopping, checkpoints
(:mod:`segkit.engine.hooks`), the history file, plots, TensorBoard, progress
(:mod:`segkit.engine.loggers`), MLflow and W&B (:mod:`segkit.engine.trackers`) and the weight
average (:mod:`segkit.engine.ema`) are hooks.
Resume with ``Trainer(...).fit(resume=True)`` (the run folder's ``last.pt``) or
``fit(resume="path/to/last.pt")``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import nn

import segkit.engine.distributed as D
from segkit._files import remove_stale_temp_files
from segkit.config import SchedulerConfig, TrainConfig
from segkit.engine.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    to_plain,
)
from segkit.engine.ema import EMAHook
from segkit.engine.evaluation import Evaluator, as_target, run_evaluation, unpack_batch
from segkit.engine.hooks import (
    BestHook,
    CheckpointHook,
    ConfigHook,
    EarlyStopHook,
    EpochLog,
    EvalHook,
    HookBase,
    LRSchedulerHook,
    place_hook,
)
from segkit.engine.loaders import (
    check_loaders,
    release_workers,
    seed_everything,
    set_loader_epoch,
    worker_error,
)
from segkit.engine.loggers import HistoryHook, PlotHook, ProgressHook, TensorBoardHook
from segkit.engine.run_folder import (
    check_resume_config,
    check_resume_normalization,
    check_run_folder,
    elastic_fit_args,
    record_elastic_run,
    resume_path,
)
from segkit.engine.runtime import (
    AMP_NAMES,
    StopOnSignal,
    check_train_config,
    checkpoint_fits,
    is_auto,
    load_weights,
    not_finite_message,
    report_interrupt,
    resolve_amp,
    resolve_channels_last,
    resume_hint,
)
from segkit.engine.schedulers import build_scheduler, current_lr
from segkit.engine.trackers import tracker_hooks
from segkit.errors import SegkitError, TrainingError, unknown_name

logger = logging.getLogger(__name__)


@dataclass
class TrainerOptions:
    """What a :class:`Trainer` needs beside the model, loss, optimizer, loaders and loop settings.

    Attributes:
        scheduler: the LR schedule (default: :class:`~segkit.config.SchedulerConfig`).
        class_names: label names (default: ``model.spec.class_names`` or generated).
        groups: class groups whose F1 is reported, e.g. ``{"eyes": [4, 5]}``.
        out_dir: run folder (default ``cfg.out_dir``).
        full_config: the whole resolved config, written to ``config.yaml`` and checkpoints.
        val_wrapper: wraps the validated model at each validation, e.g. in sliding windows
            (:class:`~segkit.models.windows.ScaledWindows`); checkpoints keep the bare model.
    """

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    class_names: Sequence[str] | None = None
    groups: dict[str, Sequence[int]] | None = None
    out_dir: str | Path | None = None
    full_config: dict[str, Any] | None = None
    val_wrapper: Callable[[nn.Module], nn.Module] | None = None


class Trainer:
    """Train a segmentation model: accumulation, AMP, LR schedules, validation, checkpoints.

    The loop is :meth:`fit` -> :meth:`run_epoch` -> :meth:`run_step`; everything else is a
    hook (:meth:`build_hooks`, :meth:`register_hooks`, :mod:`segkit.engine.hooks`).

    Args:
        model: network returning logits ``N x C x H x W`` (``C == 1``: binary task).
        loss_fn: ``loss_fn(logits, target)`` with ``target`` an ``N x H x W`` int64 label map.
        optimizer: optimizer over ``model``'s parameters (its LR is the schedule's peak).
        train_loader: yields ``{"image", "mask", ...}`` batches (see :func:`make_loader`).
        val_loader: validation batches; required unless ``cfg.monitor`` is ``train_loss``.
        cfg: the loop's settings.
        options: the schedule, class names and groups, run folder and full config.
        hooks: hooks of your own, registered after the built-in ones (one with a built-in
            hook's name replaces it).

    The model has one name per role:

    - :attr:`model`: the given model on the device, whose weights the optimizer trains;
    - :attr:`train_net`: what training steps run through: ``model`` compiled when
      ``train.compile``, wrapped in DDP under torchrun;
    - :attr:`eval_model`: what validation scores and checkpoints save as ``model``: ``model``,
      or the EMA's average (:meth:`evaluate_with`);
    - :attr:`val_net`: what validation runs ``eval_model`` through (compiled, never DDP).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        optimizer: torch.optim.Optimizer,
        train_loader: Any,
        val_loader: Any = None,
        cfg: TrainConfig | None = None,
        options: TrainerOptions | None = None,
        hooks: Sequence[HookBase] | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else TrainConfig()
        opts = options if options is not None else TrainerOptions()
        check_train_config(cfg)
        self._setup_device(model, loss_fn)
        self.optimizer = optimizer
        self._setup_loaders(train_loader, val_loader)
        self.scheduler_cfg = opts.scheduler
        steps = math.ceil(self.n_batches / cfg.accumulate)
        self.schedule = build_scheduler(optimizer, opts.scheduler, cfg.epochs, steps, self.mode)
        self.out_dir = Path(opts.out_dir if opts.out_dir is not None else cfg.out_dir)
        names = opts.class_names or getattr(getattr(model, "spec", None), "class_names", None)
        self.class_names = list(names) if names else None
        self.groups = opts.groups
        self.val_wrapper = opts.val_wrapper
        self.full_config = to_plain(opts.full_config) if opts.full_config is not None else None
        ignore = getattr(loss_fn, "ignore_index", None)
        ignore = ignore if isinstance(ignore, int) and ignore >= 0 else None
        self.evaluator = Evaluator(self.class_names, opts.groups, ignore, preview=cfg.preview)
        self.resume_hint = resume_hint(self.full_config is not None)
        self.epoch = self.step = self.iteration = self.batch_in_epoch = 0
        self.status, self.resumed, self.stepped, self.stop_reason = "new", False, False, ""
        self.train_sums = [0.0, 0]  # sum of loss * images, images (this epoch)
        self.loss_value, self.images_seen, self.epoch_start = math.nan, 0, time.perf_counter()
        self.epoch_lr = self.lr
        self.pending_rng: dict[str, Any] | None = None
        self._signals = StopOnSignal()
        self._hooks: list[HookBase] = []
        self.register_hooks([*self.build_hooks(), *(hooks or [])])

    def _setup_device(self, model: nn.Module, loss_fn: Any) -> None:
        """Device, DDP, AMP, memory format and compilation for ``model`` and ``loss_fn``."""
        cfg = self.cfg
        self.dist = D.setup(cfg.device)
        self.device = self.dist.device
        self._set_amp(resolve_amp(cfg.amp, self.device))
        self.channels_last = resolve_channels_last(cfg.channels_last, self.device, model)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self._compiled = torch.compile(self.model) if cfg.compile else self.model
        self._evaluated: nn.Module | None = None  # evaluate_with's module (the EMA's average)
        self._wrap_ddp()
        self.loss_fn = loss_fn.to(self.device) if isinstance(loss_fn, nn.Module) else loss_fn

    def _set_amp(self, dtype: torch.dtype | None) -> None:
        """Train under autocast to ``dtype`` (None: full precision); fp16 with a GradScaler."""
        self.amp_dtype = dtype
        self._autocast: Any = nullcontext()  # reused every step: entering it is not free
        if dtype is not None:
            self._autocast = torch.autocast(self.device.type, dtype=dtype)
        fp16 = dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout of the model and its input batches (preserve_format when channels_last
        is off: a model the user made channels_last stays so)."""
        return torch.channels_last if self.channels_last else torch.preserve_format

    def _wrap_ddp(self) -> None:
        """Set :attr:`train_net`: the (compiled) model, wrapped in DDP under torchrun."""
        self.train_net: nn.Module = self._compiled
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_net = nn.parallel.DistributedDataParallel(self._compiled, device_ids=ids)

    @property
    def eval_model(self) -> nn.Module:
        """The module validation scores and checkpoints save as ``model``: :attr:`model`, or
        the one given to :meth:`evaluate_with` (the EMA's average)."""
        return self.model if self._evaluated is None else self._evaluated

    @property
    def val_net(self) -> nn.Module:
        """The network validation runs :attr:`eval_model` through: the compiled model (never
        DDP's wrapper), or the module given to :meth:`evaluate_with` as it is."""
        return self._compiled if self._evaluated is None else self._evaluated

    def _setup_loaders(self, train_loader: Any, val_loader: Any) -> None:
        """Shard the loaders over processes; check them against ``train.monitor``."""
        cfg = self.cfg
        self.train_loader = D.shard_loader(train_loader, self.dist, cfg.seed, train=True)
        self.val_loader = None
        if val_loader is not None:
            self.val_loader = D.shard_loader(val_loader, self.dist, cfg.seed)
        self.n_batches = len(self.train_loader)
        self.monitor = cfg.monitor
        # only val_loss / train_loss are losses: a class named e.g. "gloss" gives a score
        self.mode = cfg.mode or ("min" if cfg.monitor in ("val_loss", "train_loss") else "max")
        check_loaders(self.n_batches, self.val_loader, self.monitor, self.dist)

    # ------------------------------------------------------------------ hooks

    def build_hooks(self) -> list[HookBase]:
        """The built-in hooks, in running order; override to change them.

        Order: config, ema (``train.ema``), eval, best, lr, early_stop, history, plot,
        tensorboard, mlflow, wandb, progress, checkpoint. ``train.hooks`` switches history,
        plot, progress, tensorboard and the trackers; a subclass may return any list (keep
        ``checkpoint`` last, so that ``last.pt`` holds the other hooks' state after each epoch).
        """
        cfg, on = self.cfg, self.cfg.hooks
        hooks: list[HookBase | None] = [
            ConfigHook(),
            EMAHook(cfg.ema) if cfg.ema is not None else None,
            EvalHook(),
            BestHook(self.monitor, self.mode),
            LRSchedulerHook(self.schedule, self.scheduler_cfg.name, self.monitor, self.mode),
            EarlyStopHook(cfg.early_stop),
            HistoryHook() if on.history else None,
            PlotHook() if on.plot else None,
            TensorBoardHook() if on.tensorboard else None,
            *tracker_hooks(on),
            ProgressHook() if on.progress else None,
            CheckpointHook(),
        ]
        return [h for h in hooks if h is not None]

    @property
    def hooks(self) -> tuple[HookBase, ...]:
        """The registered hooks in running order (change them with :meth:`register_hooks`
        and :meth:`remove_hooks`)."""
        return tuple(self._hooks)

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Add hooks; each receives every event from now on, in a documented place.

        A hook whose ``name`` is already registered replaces that hook in its place; any other
        goes before the ``checkpoint`` hook (last when there is none). ``None`` is skipped.

        Raises:
            TypeError: an object that is not a :class:`HookBase`, or an ``after_epoch``
                without the ``log`` argument.
        """
        for hook in hooks:
            if hook is None:
                continue
            place_hook(self._hooks, hook)
            hook.trainer = self
            hook.setup()

    def remove_hooks(self, *names: str) -> None:
        """Switch off the hooks of these names (e.g. ``"plot"``, ``"progress"``).

        Raises:
            ValueError: no hook has one of the names; the message lists the registered ones.
        """
        registered = [h.name for h in self._hooks]
        for name in names:
            if name not in registered:
                raise ValueError(unknown_name("hook", name, registered))
        self._hooks = [h for h in self._hooks if h.name not in names]

    def get_hook(self, name: str) -> HookBase | None:
        """The registered hook called ``name``, or None."""
        return next((h for h in self._hooks if h.name == name), None)

    def evaluate_with(self, module: nn.Module) -> None:
        """Validate ``module`` instead of the trained model, and save it as checkpoints'
        ``model`` (the trained weights are saved beside it for resuming); used by EMA."""
        self._evaluated = None if module is self.model else module

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
                When torchrun's elastic agent restarts the workers, both are decided by
                :func:`~segkit.engine.run_folder.elastic_fit_args` (continue the folder's run).

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
        resume, overwrite = elastic_fit_args(self.out_dir, resume, overwrite)
        self.resumed = bool(resume)
        check_run_folder(self, resume, overwrite)
        if self.dist.is_main and (removed := remove_stale_temp_files(self.out_dir)):
            print(removed, flush=True)  # what a kill -9 during a write left behind
        if resume:
            self.load(resume_path(self.out_dir, resume))
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        record_elastic_run(self.out_dir, self.dist)
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
                    report_interrupt(self)
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
        self.train_net.train()
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
        log = EpochLog(self.epoch + 1)
        log.values = {
            "lr": self.epoch_lr,
            "train_loss": float(sums[0] / sums[1]) if sums[1] else math.nan,
            "images_per_s": self.images_seen * self.dist.world_size / max(seconds, 1e-9),
        }
        for hook in self.hooks:
            hook.after_epoch(log)
        if self.device.type == "cuda" and self.cfg.empty_cache:
            torch.cuda.empty_cache()
        self.epoch, self.batch_in_epoch, self.train_sums = self.epoch + 1, 0, [0.0, 0]
        if self.status == "running" and self._stop_requested():
            self.status = "interrupted"

    def _restore_rng(self) -> None:
        if self.pending_rng is not None:
            set_rng_state(self.pending_rng)
            self.pending_rng = None

    def run_step(self, batch: Any) -> None:
        """Forward and backward one batch; step the optimizer every ``accumulate`` batches."""
        images, masks = unpack_batch(batch)
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        masks = as_target(masks.to(self.device, non_blocking=True))
        n = self.batch_in_epoch + 1
        self.stepped = n % self.cfg.accumulate == 0 or n == self.n_batches
        no_sync = self.dist.enabled and not self.stepped
        with self.train_net.no_sync() if no_sync else nullcontext():
            with self._autocast:
                loss = self.loss_fn(self.train_net(images), masks)
            value = loss.item()
            # decided together: a rank that stopped alone would leave the others waiting
            # for it in the next gradient all-reduce
            if D.any_rank(not math.isfinite(value), self.dist):
                raise TrainingError(not_finite_message(self, value, n))
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
        for hook in self._hooks:  # the live list: a hook registered at any time gets every step
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
        D.broadcast_buffers(self.eval_model, self.dist)
        net = self.val_net if self.val_wrapper is None else self.val_wrapper(self.val_net)
        result = run_evaluation(
            net,
            self.val_loader,
            self.evaluator,
            self.device,
            self.loss_fn,
            self.amp_dtype,
            self.channels_last,
            self.dist,
        )
        self.class_names = self.evaluator.class_names
        return {f"val_{k}": v for k, v in result.items()}

    def request_stop(self, status: str, message: str = "") -> None:
        """Stop after the current epoch with ``status`` (e.g. ``early_stopped``) and the
        reason ``message`` (logged, and printed by the progress hook)."""
        self.status, self.stop_reason = status, message
        if message and self.dist.is_main:
            logger.info(message)

    def _stop_requested(self) -> bool:
        return D.any_rank(self._signals.received is not None, self.dist)

    def _call(self, method: str) -> None:
        for hook in self.hooks:
            getattr(hook, method)()

    def summary(self) -> dict[str, Any]:
        """What :meth:`fit` returns."""
        best = self.out_dir / "best.pt"
        tracker, evaluation = self.get_hook("best"), self.get_hook("eval")
        best_value = getattr(tracker, "best", None)
        best_epoch = getattr(tracker, "best_epoch", None)
        return {
            "status": self.status,
            "best": best if best_epoch is not None and best.is_file() else None,
            "last": self.out_dir / "last.pt",
            "history": self.out_dir / "history.csv",
            "out_dir": self.out_dir,
            "monitor": self.monitor,
            "mode": self.mode,
            "best_value": best_value,
            "best_epoch": best_epoch,
            "epochs": self.epoch,
            "metrics": dict(getattr(evaluation, "metrics", {})),
        }

    def state_dict(self, complete: bool = True) -> dict[str, Any]:
        """The checkpoint contents: the evaluated model and its description, the trainer's
        counters, optimizer, scaler and RNG, and each hook's state under its name.

        ``complete=False`` marks a stop inside the epoch (its batches so far are kept).
        """
        spec = getattr(self.model, "spec", None)
        state = {
            "model": self.eval_model.state_dict(),
            "model_spec": to_plain(spec.to_dict()) if hasattr(spec, "to_dict") else None,
            "class_names": self.class_names,
            "config": self.config_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": self.epoch + 1 if complete else self.epoch,
            "batch_in_epoch": 0 if complete else self.batch_in_epoch,
            "step": self.step,
            "iteration": self.iteration,
            "train_sums": [0.0, 0] if complete else list(self.train_sums),
            "epoch_lr": self.epoch_lr,
            "channels_last": self.channels_last,
            "amp": AMP_NAMES[self.amp_dtype],
            "rng": rng_state(),
            "rank_rng": D.gather_objects(rng_state(), self.dist) if self.dist.enabled else None,
            "hooks": {h.name: h.state_dict() for h in self.hooks},
        }
        if self.eval_model is not self.model:
            state["train_model"] = self.model.state_dict()
        return state

    def config_dict(self) -> dict[str, Any]:
        """The run's config as checkpoints store it: the full config, else train + scheduler."""
        if self.full_config:
            return self.full_config
        return {"train": to_plain(self.cfg), "scheduler": to_plain(self.scheduler_cfg)}

    def load_state_dict(self, state: dict[str, Any], source: str = "the checkpoint") -> None:
        """Restore what :meth:`state_dict` returned (older checkpoint formats are upgraded by
        :func:`~segkit.engine.checkpoint.load_checkpoint` first).

        Raises:
            CheckpointError: the weights or the optimizer state do not fit, naming ``source``.
        """
        trained = state.get("train_model", state["model"])
        with checkpoint_fits(source):
            load_weights(self.model, trained, source)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.eval_model is not self.model:  # the EMA: from the trained weights if none
                load_weights(self.eval_model, state["model"], source)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.step, self.iteration = int(state["step"]), int(state["iteration"])
        self.train_sums = list(state["train_sums"])
        self.epoch_lr = float(state.get("epoch_lr", self.lr))
        saved = state.get("hooks", {})
        for hook in self.hooks:
            hook.load_state_dict(dict(saved.get(hook.name) or {}))
        ranks = state["rank_rng"]  # under DDP each rank continues its own random streams
        same_world = ranks is not None and len(ranks) == self.dist.world_size
        self.pending_rng = ranks[self.dist.rank] if same_world else state["rng"]

    def _resume_layout(self, state: dict[str, Any]) -> None:
        """``train.channels_last: auto`` resumes in the memory layout the run trained in, so
        that a resumed run stays bit-identical (for a run from before the layout was recorded,
        loading fills in its config's value: :func:`~segkit.engine.checkpoint.upgrade`)."""
        if not is_auto(self.cfg.channels_last):
            return
        run = state["channels_last"]
        if bool(run) == self.channels_last:
            return
        self.channels_last = bool(run)
        layout = torch.channels_last if run else torch.contiguous_format
        for module in {id(m): m for m in (self.model, self.eval_model)}.values():
            module.to(memory_format=layout)
        if self.dist.enabled:  # DDP's gradient buckets follow the parameters' strides
            self._wrap_ddp()

    def _resume_amp(self, state: dict[str, Any]) -> None:
        """``train.amp: auto`` resumes in the precision the run trained in, so that a resumed
        run stays bit-identical (a run from before the precision was recorded trained under
        ``auto`` when it was off on the CPU: :func:`~segkit.engine.checkpoint.upgrade`)."""
        run = state["amp"]
        if not is_auto(self.cfg.amp) or run is None and self.device.type != "cpu":
            return
        dtype = resolve_amp(run or "off", self.device)
        if dtype != self.amp_dtype:
            self._set_amp(dtype)

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

    def load(self, path: str | Path) -> None:
        """Restore model, optimizer, scaler, counters, RNG and hooks from a checkpoint file."""
        # on the CPU: load_state_dict copies onto each parameter's device, and the RNG states
        # must be CPU tensors (a CUDA map_location made the NumPy state unreadable)
        state = load_checkpoint(path, map_location="cpu")
        check_resume_config(state["config"], self.config_dict(), path)
        check_resume_normalization(state["model_spec"], getattr(self.model, "spec", None), path)
        self._resume_layout(state)
        self._resume_amp(state)
        self.load_state_dict(state, source=str(path))
        if self.dist.is_main and self.epoch >= self.cfg.epochs:  # user-facing: nothing to do
            print(f"{path} already completed {self.epoch} epochs; raise train.epochs to go on.")
