"""Experiment trackers as hooks: MLflow and Weights & Biases, beside TensorBoard.

Switched on from the config (``train.hooks: {mlflow: true}``, ``train.hooks: {wandb: {project:
faces}}``) or registered like any hook. Each logs, from rank 0 only: the resolved config
(MLflow parameters with dotted keys, W&B's run config), every number of each epoch's log (the
step is the epoch), and when the run ends the curves and predictions pictures, ``config.yaml``
and ``best.pt`` as artifacts. Both work offline by default: MLflow writes a SQLite store in the
run folder (``mlflow.db``, artifacts in ``mlartifacts/``), W&B an offline run under ``wandb/``.

A resumed run goes on in the same tracker run (its id travels in ``last.pt``), except when it
resumes a checkpoint older than the run folder's ``history.csv`` (such as ``best.pt``): then
a new tracker run starts, so that no epoch is logged twice into one. mlflow and wandb are
optional (``pip install 'segkit[mlflow]'``, ``'segkit[wandb]'``) and imported only when used.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from segkit.engine.hooks import EpochLog, HookBase
from segkit.engine.loggers import numbers, read_history
from segkit.errors import ConfigError, missing_modules, suggest

#: files of the run folder logged when a run ends (those that exist)
RUN_FILES = ("config.yaml", "curves.png", "predictions.png")
#: how each way a run ends reads in MLflow
MLFLOW_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "interrupted": "KILLED"}
WANDB_MODES = ("offline", "online", "disabled")


def rewound(out_dir: Path, epoch: int) -> int | None:
    """The last epoch of ``out_dir``'s history.csv when it is past ``epoch`` (a resume of an
    earlier checkpoint), else None."""
    rows = read_history(out_dir / "history.csv", sys.maxsize)
    last = max((int(row["epoch"]) for row in rows), default=0)
    return last if last > epoch else None


class TrackerHook(HookBase):
    """What MLflow and W&B share: rank 0 only, one tracker run per run (resumed with it), the
    epochs as they end, the pictures and best.pt when the run ends.

    Subclasses name the ``modules`` they need and implement :meth:`open`, :meth:`log_epoch`,
    :meth:`log_end` and :meth:`finish`. State: the tracker run's id.
    """

    tracker = ""  # as users know it, for messages
    extra = ""  # segkit's pip extra that installs it

    def __init__(self, run_name: str | None = None, checkpoint: bool = True) -> None:
        self.run_name = run_name
        self.checkpoint = checkpoint
        self.run_id: str | None = None
        self.active = False
        self.best: tuple[float | None, int | None] = (None, None)

    def modules(self) -> tuple[str, ...]:
        """The modules this tracker imports."""
        raise NotImplementedError

    def setup(self) -> None:
        """Check on every rank that the packages are there, before anything trains."""
        missing = missing_modules(self.modules())
        if missing:
            raise ConfigError(
                f"train.hooks.{self.name} needs {', '.join(missing)}, not installed: "
                f"pip install 'segkit[{self.extra}]', or switch it off."
            )

    def before_train(self) -> None:
        t = self.trainer
        if not t.dist.is_main or t.epoch >= t.cfg.epochs:
            return  # rank 0 logs; a resume of a finished run trains nothing
        last = rewound(t.out_dir, t.epoch) if self.run_id is not None else None
        if last is not None:
            print(
                f"{self.tracker}: resuming at epoch {t.epoch} a run whose history.csv reaches "
                f"epoch {last}; logging into a new {self.tracker} run, not into {self.run_id}.",
                flush=True,
            )
            self.run_id = None
        self.run_id = self.open(self.run_id)
        self.active = True

    def after_epoch(self, log: EpochLog) -> None:
        if self.active:
            self.log_epoch(log.epoch, numbers(log.values))
            self.best = (log.best, log.best_epoch)

    def after_train(self) -> None:
        if not self.active:
            return
        t = self.trainer
        if t.status != "interrupted":  # its resumed run logs them when it ends
            files = [t.out_dir / n for n in RUN_FILES if (t.out_dir / n).is_file()]
            best = t.out_dir / "best.pt"
            self.log_end(files, best if self.checkpoint and best.is_file() else None)
        self.active = False
        self.finish(t.status)

    def close(self) -> None:
        if self.active:  # an error ended the run
            self.active = False
            self.finish("failed")

    def open(self, run_id: str | None) -> str:
        """Start a tracker run, or continue ``run_id``; return the run's id."""
        raise NotImplementedError

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        """Log an epoch's numbers at step ``epoch``."""
        raise NotImplementedError

    def log_end(self, files: list[Path], best: Path | None) -> None:
        """Log the run folder's ``files`` and the best checkpoint (None: not logged)."""
        raise NotImplementedError

    def finish(self, status: str) -> None:
        """End the tracker run: completed, early_stopped, interrupted or failed."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")

    def default_group(self) -> str:
        """The experiment / project when none is given: the config's name, else segkit."""
        config = self.trainer.full_config or {}
        return str(config.get("name") or "segkit")


def _mlflow_key(key: str) -> str:
    """``key`` with the characters MLflow refuses in names replaced by ``_``."""
    return re.sub(r"[^\w\-. /]", "_", key)


class MLflowHook(TrackerHook):
    """Log the run to MLflow: parameters, epoch metrics, pictures and best.pt (rank 0).

    Args:
        tracking_uri: the MLflow store or server; None: ``$MLFLOW_TRACKING_URI`` if set,
            else a SQLite store in the run folder (``sqlite:///<out_dir>/mlflow.db``, artifacts
            in ``<out_dir>/mlartifacts``), which works offline (MLflow's usage telemetry is
            then off unless ``$MLFLOW_DISABLE_TELEMETRY`` says otherwise).
        experiment: the MLflow experiment (None: the config's ``name``).
        run_name: the MLflow run's name (None: the run folder's name).
        checkpoint: log ``best.pt`` as the artifact ``checkpoints/best.pt`` at the end.

    Parameters are the config's dotted keys; metrics every number of each epoch's log (step:
    the epoch) and ``best_<monitor>`` at the best epoch; artifacts ``config.yaml``,
    ``curves.png``, ``predictions.png``. A resumed MLflow run keeps its first parameters (MLflow
    does not change them); its ``config.yaml`` artifact is the resumed run's.
    """

    name = "mlflow"
    tracker = "MLflow"
    extra = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        run_name: str | None = None,
        checkpoint: bool = True,
    ) -> None:
        super().__init__(run_name, checkpoint)
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client: Any = None

    def uri(self) -> str:
        """The tracking URI this run logs to."""
        chosen = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return chosen or "sqlite:///" + str((self.trainer.out_dir / "mlflow.db").resolve())

    def local(self) -> bool:
        """Whether the run logs to its own store in the run folder."""
        return not (self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))

    def modules(self) -> tuple[str, ...]:
        # a SQLite store needs what full mlflow adds to mlflow-skinny
        return ("mlflow", "sqlalchemy", "alembic") if self.local() else ("mlflow",)

    def open(self, run_id: str | None) -> str:
        if self.local():  # offline by design: no usage reports from a local store
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        t = self.trainer
        self.client = MlflowClient(tracking_uri=self.uri())
        if run_id is not None:
            try:
                logged = self.client.get_run(run_id).data.params
            except MlflowException:  # not in this store (another tracking_uri): a new run
                run_id = None
            else:
                self.client.update_run(run_id, status="RUNNING")
                self._log_params(run_id, skip=set(logged))
                return run_id
        name = self.experiment or self.default_group()
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            experiment = found.experiment_id
        else:
            where = (t.out_dir / "mlartifacts").resolve().as_uri() if self.local() else None
            experiment = self.client.create_experiment(name, artifact_location=where)
        tags = {"segkit.out_dir": str(t.out_dir)}
        run = self.client.create_run(
            experiment, run_name=self.run_name or t.out_dir.name, tags=tags
        )
        self._log_params(run.info.run_id, skip=set())
        return run.info.run_id

    def _log_params(self, run_id: str, skip: set[str]) -> None:
        from mlflow.entities import Param

        from segkit.config import flatten

        flat = flatten(self.trainer.config_dict())
        params = [Param(_mlflow_key(k), str(v)[:6000]) for k, v in flat.items()]
        params = [p for p in params if p.key not in skip]
        for start in range(0, len(params), 100):  # MLflow takes 100 per batch
            self.client.log_batch(run_id, params=params[start : start + 100])

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, now, epoch) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_end(self, files: list[Path], best: Path | None) -> None:
        value, epoch = self.best
        if value is not None and epoch is not None:  # never NaN: BestHook skips NaN
            key = _mlflow_key(f"best_{self.trainer.monitor}")
            self.client.log_metric(self.run_id, key, value, step=epoch)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        if best is not None:
            self.client.log_artifact(self.run_id, str(best), "checkpoints")

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))


class WandbHook(TrackerHook):
    """Log the run to Weights & Biases: config, epoch metrics, pictures and best.pt (rank 0).

    Args:
        project: the W&B project (None: ``$WANDB_PROJECT``, else the config's ``name``).
        entity: the W&B user or team (None: W&B's default).
        run_name: the W&B run's name (None: the run folder's name).
        mode: ``offline`` (logged to ``<out_dir>/wandb/offline-run-*``, uploaded later with
            ``wandb sync``), ``online`` or ``disabled``; None: ``$WANDB_MODE``, else offline.
        checkpoint: log ``best.pt`` (with ``config.yaml``) as the artifact ``model-<run id>``
            of type ``model``, alias ``best``, at the end.

    The run's config is segkit's resolved config; each epoch is a row whose x axis is
    ``epoch``; the summary holds ``best_<monitor>`` and ``best_epoch``; the curves and
    predictions pictures are logged as images when the run ends.

    Raises:
        ConfigError: ``mode`` is not one of offline, online, disabled.
    """

    name = "wandb"
    tracker = "W&B"
    extra = "wandb"

    def __init__(
        self,
        project: str | None = None,
        entity: str | None = None,
        run_name: str | None = None,
        mode: str | None = None,
        checkpoint: bool = True,
    ) -> None:
        if mode is not None and mode not in WANDB_MODES:
            raise ConfigError(
                f"train.hooks.wandb.mode={mode!r} is not one of {', '.join(WANDB_MODES)}."
                f"{suggest(mode, WANDB_MODES)}"
            )
        super().__init__(run_name, checkpoint)
        self.project, self.entity, self.mode = project, entity, mode
        self.run: Any = None

    def modules(self) -> tuple[str, ...]:
        return ("wandb",)

    def open(self, run_id: str | None) -> str:
        import wandb

        t = self.trainer
        self.run = wandb.init(
            project=self.project or os.environ.get("WANDB_PROJECT") or self.default_group(),
            entity=self.entity,
            name=self.run_name or t.out_dir.name,
            dir=str(t.out_dir),
            mode=self.mode or os.environ.get("WANDB_MODE") or "offline",
            config=t.config_dict(),
            id=run_id,
            resume="allow" if run_id is not None else None,
            reinit="create_new",  # a run of the caller's own goes on beside this one
            job_type="train",
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        return self.run.id

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log({"epoch": epoch, **values})

    def log_end(self, files: list[Path], best: Path | None) -> None:
        import wandb

        value, epoch = self.best
        if value is not None:
            self.run.summary.update({f"best_{self.trainer.monitor}": value, "best_epoch": epoch})
        pictures = {p.stem: wandb.Image(str(p)) for p in files if p.suffix == ".png"}
        if pictures:
            self.run.log(pictures)
        if best is not None:
            meta = {"epoch": epoch, "monitor": self.trainer.monitor, "best": value}
            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=meta)
            artifact.add_file(str(best), name="best.pt")
            for path in files:
                if path.suffix == ".yaml":
                    artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=["best"])

    def finish(self, status: str) -> None:
        run, self.run = self.run, None
        run.finish(exit_code=1 if status == "failed" else 0)


def tracker_hooks(hooks: Any) -> list[HookBase]:
    """The tracker hooks ``train.hooks`` switches on (a :class:`~segkit.config.HooksConfig`)."""
    made: list[HookBase] = []
    for cls, chosen in ((MLflowHook, hooks.mlflow), (WandbHook, hooks.wandb)):
        if chosen is True:
            made.append(cls())
        elif dataclasses.is_dataclass(chosen):
            made.append(cls(**dataclasses.asdict(chosen)))
    return made
