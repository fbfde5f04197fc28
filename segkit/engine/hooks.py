"""Trainer hooks: the hook interface, the per-epoch log, and the hooks that make a run.

A hook is a small object with ``before_train / before_epoch / after_step / after_epoch /
after_train`` methods (detectron2's design). Hooks read the trainer's public counters
(``epoch``, ``iteration``, ``stepped``, ...) but never write its attributes: what one hook
tells another goes into the :class:`EpochLog` the trainer hands to every ``after_epoch``, and
what a hook must remember across a resume is its own :meth:`HookBase.state_dict`, stored in
the checkpoint under the hook's :attr:`~HookBase.name`.

The built-in hooks run in this order (:meth:`segkit.engine.Trainer.build_hooks`)::

    config  ema  eval  best  lr  early_stop  history  plot  tensorboard  mlflow  wandb  progress
    checkpoint

``eval`` fills the log with ``val_*`` values, ``best`` decides whether the monitored value
improved, the hooks after it read that decision, and ``checkpoint`` runs last so that
``last.pt`` holds every hook's state. Hooks registered later go before ``checkpoint``.
This module holds the hooks that decide the run; the loggers (history, plot, tensorboard,
progress) live in :mod:`segkit.engine.loggers`, the experiment trackers (mlflow, wandb) in
:mod:`segkit.engine.trackers` and the weight average in :mod:`segkit.engine.ema`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segkit._files import write_bytes_atomic
from segkit.errors import ConfigError, suggest

logger = logging.getLogger(__name__)


@dataclass
class EpochLog:
    """What one epoch produced; the trainer hands it to each hook's ``after_epoch`` in turn.

    Attributes:
        epoch: the epoch just trained, 1-based.
        values: the history row: ``lr``, ``train_loss``, ``images_per_s`` (from the trainer),
            ``val_*`` (from the ``eval`` hook); other hooks may add numbers.
        validated: whether the monitored value was measured this epoch (every
            ``train.val_every`` epochs and at the last).
        monitored: the monitored value when validated, else None (``best`` hook).
        improved: whether ``monitored`` beat every earlier value (``best`` hook).
        best: the best monitored value so far and ``best_epoch`` its epoch (``best`` hook).
        preview: validation samples ``{"image", "mask", "pred"}`` for figures (``eval`` hook).
    """

    epoch: int
    values: dict[str, Any] = field(default_factory=dict)
    validated: bool = False
    monitored: float | None = None
    improved: bool = False
    best: float | None = None
    best_epoch: int | None = None
    preview: dict[str, Any] | None = None


class HookBase:
    """A hook does nothing unless it overrides a method; ``trainer`` is set on registration.

    Attributes:
        name: the key of the hook's state in a checkpoint, and how a hook is replaced or
            removed (``Trainer.register_hooks`` replaces a hook of the same name). Defaults
            to the class name; a subclass of a built-in hook keeps the built-in's name.
    """

    name: str = ""
    trainer: Any  # the Trainer (not imported here: the engine's modules import downwards)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:  # a subclass of a built-in hook keeps its name, and so replaces it
            cls.name = cls.__name__

    def setup(self) -> None:
        """Called once when the hook is registered, before any checkpoint is loaded."""

    def before_train(self) -> None:
        """Called once before the first epoch (after a resume has been loaded)."""

    def before_epoch(self) -> None:
        """Called at the start of every epoch."""

    def after_step(self) -> None:
        """Called after every batch (``trainer.stepped`` says whether the optimizer stepped)."""

    def after_epoch(self, log: EpochLog) -> None:
        """Called at the end of every epoch with the epoch's log, which hooks read and fill."""

    def after_train(self) -> None:
        """Called when training completes, stops early or is interrupted (not after errors)."""

    def close(self) -> None:
        """Called always, errors included: release what the hook holds open."""

    def state_dict(self) -> dict[str, Any]:
        """What to store in a checkpoint (plain values and tensors) to resume this hook."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (an empty dict: nothing was stored)."""


def better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` in direction ``mode`` (NaN never does)."""
    if value is None or math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if mode == "min" else value > best


def check_monitor(monitor: str, known: list[str]) -> None:
    """Raise ConfigError when ``monitor`` is not among ``known``, suggesting close names."""
    if monitor not in known:
        raise ConfigError(
            f"train.monitor={monitor!r} is not among the values this run computes."
            f"{suggest(monitor, known)} Available: {', '.join(known)}."
        )


class EvalHook(HookBase):
    """Validate every ``train.val_every`` epochs and at the last; put ``val_*`` into the log.

    State: the last validation's metrics (what ``fit()`` reports after a resume).
    """

    name = "eval"

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def before_train(self) -> None:
        """Check ``train.monitor`` against the metric names before training, when they are known."""
        t = self.trainer
        names = t.class_names
        if not t.monitor.startswith("val_") or t.val_loader is None or not names:
            return
        from segkit.metrics import metric_names

        # two names may be a binary model's (with the soft Dice) or a two-channel one's: the
        # wider list, as the task shows only in the first batch (``best`` checks exactly)
        task = "binary" if len(names) == 2 else "multiclass"
        known = ["val_loss", *(f"val_{k}" for k in metric_names(names, t.groups, task))]
        check_monitor(t.monitor, known)

    def after_epoch(self, log: EpochLog) -> None:
        t = self.trainer
        if log.epoch % t.cfg.val_every != 0 and log.epoch != t.cfg.epochs:
            return
        if t.val_loader is not None:
            self.metrics = t.validate()
            log.values.update(self.metrics)
            log.preview = t.evaluator.preview_batch()
        log.validated = True

    def state_dict(self) -> dict[str, Any]:
        return {"metrics": dict(self.metrics)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.metrics = dict(state.get("metrics") or {})


class BestHook(HookBase):
    """Track the best value of ``train.monitor``: set the log's ``monitored``, ``improved``,
    ``best`` and ``best_epoch``. ``checkpoint`` then copies ``last.pt`` to ``best.pt``.

    State: ``best``, ``best_epoch`` and the ``monitor`` / ``mode`` they were measured with (a
    resumed run that monitors something else starts afresh).
    """

    name = "best"

    def __init__(self, monitor: str, mode: str) -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None

    def after_epoch(self, log: EpochLog) -> None:
        if log.validated:
            known = [k for k in log.values if k.startswith(("val_", "train_"))]
            check_monitor(self.monitor, known)
            log.monitored = float(log.values[self.monitor])
            if better(log.monitored, self.best, self.mode):
                self.best, self.best_epoch, log.improved = log.monitored, log.epoch, True
        log.best, log.best_epoch = self.best, self.best_epoch

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, **self._measure()}

    def _measure(self) -> dict[str, str]:
        return {"monitor": self.monitor, "mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and {k: state.get(k) for k in ("monitor", "mode")} == self._measure():
            self.best, self.best_epoch = state.get("best"), state.get("best_epoch")


class LRSchedulerHook(HookBase):
    """Step the LR schedule after optimizer steps, epochs or validations, as it needs.

    State: the scheduler's state dict with the schedule's name and the monitored value it
    follows; a resumed run with another schedule (or a plateau schedule on another monitored
    value) starts the schedule afresh, with a warning.
    """

    name = "lr"

    def __init__(self, schedule: Any, scheduler_name: str, monitor: str, mode: str) -> None:
        self.schedule = schedule  # segkit.engine.schedulers.Schedule
        self.scheduler_name = scheduler_name
        self.monitor, self.mode = monitor, mode

    def after_step(self) -> None:
        if self.trainer.stepped and self.schedule.interval == "batch":
            self.schedule.scheduler.step()

    def after_epoch(self, log: EpochLog) -> None:
        if self.schedule.interval == "epoch":
            self.schedule.scheduler.step()
        elif self.schedule.interval == "validation" and log.monitored is not None:
            self.schedule.scheduler.step(log.monitored)

    def state_dict(self) -> dict[str, Any]:
        sched = self.schedule.scheduler
        return {
            "scheduler": sched.state_dict() if sched is not None else None,
            "name": self.scheduler_name,
            "monitor": self.monitor,
            "mode": self.mode,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sched = self.schedule.scheduler
        if sched is None or state.get("scheduler") is None:
            return
        name = self.scheduler_name
        same = (state.get("monitor"), state.get("mode")) == (self.monitor, self.mode)
        if state.get("name") != name:
            warnings.warn(
                f"The schedule changed from {state.get('name')!r} to {name!r}; it starts afresh.",
                stacklevel=2,
            )
        elif name == "plateau" and not same:  # its best value and mode are the old ones
            warnings.warn(
                f"The monitored value changed from {state.get('monitor')!r} "
                f"({state.get('mode')}) to {self.monitor!r} ({self.mode}); the plateau "
                "schedule starts afresh.",
                stacklevel=2,
            )
        else:
            sched.load_state_dict(state["scheduler"])
            self.schedule.match_length("The checkpoint")


class EarlyStopHook(HookBase):
    """Stop after ``patience`` validations without improvement (None: only count them).

    State: the count of validations without improvement.
    """

    name = "early_stop"

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.bad = 0

    def after_epoch(self, log: EpochLog) -> None:
        if log.monitored is None:
            return
        self.bad = 0 if log.improved else self.bad + 1
        if self.patience is not None and self.bad >= self.patience:
            t = self.trainer
            t.request_stop(
                "early_stopped",
                f"early stop: {t.monitor} has not improved for {self.bad} validations "
                f"(best {log.best:.4f} at epoch {log.best_epoch})",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad = int(state.get("bad", 0))


#: first line of the ``config.yaml`` a run writes; a file without it is not segkit's to replace
CONFIG_HEADER = "# segkit: the resolved settings of this run, rewritten whenever it starts"


def is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.yaml`` that a segkit run wrote (and may rewrite).

    Copies from before the header existed are recognised as complete dumps of every section
    without comments; a hand-written config (comments, or some sections only) is not.
    """
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


def _write_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


class ConfigHook(HookBase):
    """Write the run's resolved configuration as ``config.yaml`` (not when nothing will train:
    a resume of a finished run leaves the file as the epochs that ran wrote it)."""

    name = "config"

    def before_train(self) -> None:
        t = self.trainer
        if t.full_config is not None and t.dist.is_main and t.epoch < t.cfg.epochs:
            import yaml

            text = yaml.safe_dump(t.full_config, sort_keys=False)
            _write_atomic(t.out_dir / "config.yaml", f"{CONFIG_HEADER}\n{text}")


class RecordHook(HookBase):
    """Write a record of how the run was set up (plain JSON data, e.g. its class weights) into
    the run folder when it starts, and keep it in checkpoints under ``name``.

    On a resume whose checkpoint holds another record (the data changed since), a warning
    names the entries that differ: the run goes on with the new record.

    Args:
        name: the hook's name, the key of the record in checkpoints.
        filename: the file in the run folder (written by the main process).
        record: what it holds; ``checkpoint_keys`` (default: all) is what checkpoints keep.
    """

    def __init__(
        self, name: str, filename: str, record: dict[str, Any], checkpoint_keys: Any = None
    ) -> None:
        self.name, self.filename, self.record = name, filename, record
        keys = record if checkpoint_keys is None else checkpoint_keys
        self.kept = {k: record[k] for k in keys if k in record}

    def before_train(self) -> None:
        t = self.trainer
        if t.dist.is_main and t.epoch < t.cfg.epochs:
            import json

            text = json.dumps(self.record, indent=1)
            _write_atomic(t.out_dir / self.filename, text + "\n")

    def state_dict(self) -> dict[str, Any]:
        return dict(self.kept)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        changed = [k for k in state if k in self.kept and state[k] != self.kept[k]]
        if changed:
            warnings.warn(
                f"The checkpoint's {self.name} record differs from the one made now in "
                f"{', '.join(changed)} (the training data changed since?); the run goes on "
                f"with the new one, so it no longer matches an uninterrupted run.",
                stacklevel=2,
            )


class CheckpointHook(HookBase):
    """``last.pt`` after every epoch and ``best.pt`` when the log says the run improved.

    The state is serialised once: on improvement ``best.pt`` becomes a link to (or copy of) the
    new ``last.pt``, which halves the time spent writing checkpoints. Runs last, so that
    ``last.pt`` holds every other hook's state after the epoch.
    """

    name = "checkpoint"

    def after_epoch(self, log: EpochLog) -> None:
        t = self.trainer
        last = t.out_dir / "last.pt"
        t.save(last, t.state_dict(complete=True))
        if log.improved:
            t.copy(last, t.out_dir / "best.pt")


def check_hook(hook: Any) -> None:
    """Raise TypeError unless ``hook`` is a :class:`HookBase` whose ``after_epoch`` takes the log.

    Hooks written before the log existed defined ``after_epoch(self)``; they read what they
    need from ``log`` now (``log.values``, ``log.improved``, ...).
    """
    if not isinstance(hook, HookBase):
        raise TypeError(
            f"A hook must be a segkit.engine.HookBase, got {type(hook).__name__}; subclass "
            "HookBase and override the events it needs."
        )
    import inspect

    parameters = inspect.signature(hook.after_epoch).parameters
    if not parameters:
        raise TypeError(
            f"{type(hook).__name__}.after_epoch takes no argument; it receives the epoch's "
            "log now: def after_epoch(self, log) (see segkit.engine.EpochLog)."
        )


def place_hook(hooks: list[HookBase], hook: HookBase) -> None:
    """Put ``hook`` into the running order ``hooks`` (in place).

    A hook with a registered hook's name replaces it in its place; any other goes before the
    ``checkpoint`` hook (last when there is none), so that ``last.pt`` holds its state.

    Raises:
        TypeError: see :func:`check_hook`.
    """
    check_hook(hook)
    names = [h.name for h in hooks]
    if hook.name in names:
        hooks[names.index(hook.name)] = hook
    elif "checkpoint" in names:
        hooks.insert(names.index("checkpoint"), hook)
    else:
        hooks.append(hook)
