"""The run folder's policy: refuse a folder that holds another run, clear it on overwrite.

A folder holds a run when it has one of :data:`RUN_FILES` (a lone ``config.yaml`` does not:
a run that failed before its first epoch ended may simply be started again).

Under torchrun's elastic agent (``torchrun --max-restarts N``) a run launched with a
rendezvous id records it in :data:`ELASTIC_FILE`; when the agent restarts the workers with the
same command, :func:`elastic_fit_args` turns that command into a resume of the folder's
``last.pt`` (see docs/distributed.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import segkit.engine.distributed as D
from segkit._files import write_bytes_atomic
from segkit.engine.hooks import is_run_config
from segkit.errors import CheckpointError, ConfigError, command_line

#: files whose presence marks a run folder as holding a run
RUN_FILES = ("last.pt", "best.pt", "history.csv")
#: figures a run draws; removed with the run files when a run is overwritten
PLOT_FILES = ("curves.png", "predictions.png")
#: the torchrun rendezvous id of the launch that writes the folder (elastic runs only)
ELASTIC_FILE = "torchrun_run_id.txt"


def elastic_fit_args(out_dir: Path, resume: Any, overwrite: bool) -> tuple[Any, bool]:
    """``fit``'s ``resume`` and ``overwrite`` for this start of the workers.

    On a first start they are the caller's. When torchrun's elastic agent restarts the
    workers of a launch whose id the run folder records, the same command goes on where the
    folder's ``last.pt`` left it (``resume=True``); if the earlier attempt died before its
    first checkpoint, it starts again (``overwrite``, unless it resumed another checkpoint).
    A folder of another launch (or a launch without an id) gets today's checks: refused.
    """
    run = D.elastic_run_id()
    if D.elastic_restart() == 0 or run is None:
        return resume, overwrite
    marker = out_dir / ELASTIC_FILE
    if not marker.is_file() or marker.read_text(encoding="utf-8").strip() != run:
        return resume, overwrite
    last = (out_dir / "last.pt").is_file()
    if D.process_rank() == 0:
        again = "continuing from its last.pt" if last else "starting it again (no last.pt yet)"
        print(f"torchrun restart {D.elastic_restart()} of run {run}: {again}", flush=True)
    if last:
        return True, False
    return resume, not resume


def record_elastic_run(out_dir: Path, dist: Any) -> None:
    """Write the launch's rendezvous id into the run folder (rank 0, elastic runs only)."""
    run = D.elastic_run_id()
    if run is not None and dist.is_main:
        write_bytes_atomic(out_dir / ELASTIC_FILE, f"{run}\n".encode())


def check_run_folder(trainer: Any, resume: Any, overwrite: bool) -> None:
    """Refuse a run folder ``trainer`` must not write into; clear it when overwriting.

    Raises:
        ConfigError: ``out_dir`` is a file, holds a config.yaml of the user's, or holds an
            earlier run while neither ``resume`` nor ``overwrite`` is given (or both are).
    """
    out_dir, dist = trainer.out_dir, trainer.dist
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(
            f"train.out_dir {str(out_dir)!r} is a file, not a folder; choose a folder "
            "for the run (it is created if missing)."
        )
    if resume and overwrite:
        raise ConfigError(
            "resume and overwrite contradict each other: resume continues the run in "
            f"{str(out_dir)!r}, overwrite replaces it. Pass one of them."
        )
    _refuse_foreign_config(out_dir, trainer.full_config is not None, dist)
    if not resume and trainer.status == "new":
        if overwrite:
            _clear_earlier_run(out_dir, dist)
        else:
            _refuse_earlier_run(out_dir, dist)


def _refuse_foreign_config(out_dir: Path, writes_config: bool, dist: Any) -> None:
    path = out_dir / "config.yaml"
    foreign = writes_config and path.is_file() and not is_run_config(path)
    if D.any_rank(foreign, dist):
        raise ConfigError(
            f"{str(path)!r} was not written by a segkit run (a config of your own?), and the "
            "run would replace it with its resolved settings. Choose another train.out_dir "
            "(e.g. runs/exp), or move that file."
        )


def _clear_earlier_run(out_dir: Path, dist: Any) -> None:
    """Remove what an earlier run wrote here, so that none of it passes for the new run's."""
    if dist.is_main:
        from segkit.data.balance import BALANCE_FILE  # a record of the run's set-up

        for name in (*RUN_FILES, *PLOT_FILES, BALANCE_FILE):
            (out_dir / name).unlink(missing_ok=True)
    D.barrier(dist)


def _refuse_earlier_run(out_dir: Path, dist: Any) -> None:
    names = [n for n in RUN_FILES if (out_dir / n).exists()]
    if D.any_rank(bool(names), dist):  # every rank raises, or none does
        held = ", ".join(names) or "files"
        if names == ["history.csv"]:
            raise ConfigError(_no_checkpoint_message(out_dir))
        raise ConfigError(
            f"Run folder {str(out_dir)!r} already holds {held} from an earlier run. "
            "Continue it with --resume (fit(resume=True)), choose another train.out_dir, or "
            "replace it with --overwrite (fit(overwrite=True))."
        )


def _no_checkpoint_message(out_dir: Path) -> str:
    """Why a run folder with a history but no checkpoint cannot be resumed, and the way on."""
    config = out_dir / "config.yaml"
    again = "Trainer(...).fit(overwrite=True)"
    if command_line() and config.is_file():
        again = f"segkit train {config} --overwrite"
    return (
        f"Run folder {str(out_dir)!r} holds history.csv but no checkpoint: the earlier "
        "run was stopped before it wrote last.pt, so there is nothing to resume. Choose "
        f"another train.out_dir, or start this one afresh with: {again}"
    )


def resume_path(out_dir: Path, resume: str | Path | bool) -> Path:
    """The checkpoint to resume from: ``out_dir/last.pt`` for ``True``, else ``resume``.

    Raises:
        CheckpointError: ``resume`` is True and the run folder has no last.pt.
    """
    if resume is True:
        path = out_dir / "last.pt"
        if not path.is_file() and (out_dir / "history.csv").is_file():
            raise CheckpointError(_no_checkpoint_message(out_dir))
        if not path.is_file():
            raise CheckpointError(
                f"Cannot resume: {str(path)!r} does not exist (no earlier run in {out_dir}). "
                "Start without resume, or pass the path of the checkpoint to continue from."
            )
        return path
    return Path(resume)


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: str | Path) -> None:
    """Refuse a resume that changes what the checkpoint's weights mean; warn of other changes.

    Args:
        saved: the checkpoint's ``config``.
        current: the resuming run's config (the same shape).
        path: the checkpoint, for the messages.

    Raises:
        ConfigError: a setting of :data:`segkit.config.RESUME_FIXED` differs from the run's.
    """
    from segkit.config import RESUME_FIXED, resume_changes
    from segkit.engine.checkpoint import to_plain

    changes = resume_changes(to_plain(saved), current)
    said = [f"{k}={new!r} (the run has {old!r})" for k, (old, new) in changes.items()]
    fixed = [text for key, text in zip(changes, said) if key in RESUME_FIXED]
    if fixed:
        raise ConfigError(
            f"Cannot resume {str(path)!r} with {', '.join(fixed)}: the checkpoint's weights "
            "were trained with the run's value. Resume without that override, or start a new "
            "run (another train.out_dir, or --overwrite) to train with it."
        )
    if said:
        warnings.warn(
            f"Resuming {path} with changed settings: {', '.join(said)}; they apply from here on.",
            stacklevel=4,
        )


def check_resume_normalization(saved: dict[str, Any] | None, spec: Any, path: str | Path) -> None:
    """Refuse a resume whose input normalisation differs from the checkpoint's: the same
    config can read new values (``augment.stats`` names a file, rewritten since).

    Args:
        saved: the checkpoint's ``model_spec`` (None: none recorded, nothing to compare).
        spec: the resuming model's :class:`~segkit.models.spec.ModelSpec` (or None).
        path: the checkpoint, for the message.

    Raises:
        ConfigError: a per-channel mean or std that differs, naming both.
    """
    if not saved or spec is None:
        return
    for key in ("mean", "std"):
        old, new = saved.get(key), getattr(spec, key, None)
        if old is None or new is None or [float(v) for v in old] == [float(v) for v in new]:
            continue
        raise ConfigError(
            f"Cannot resume {str(path)!r}: its weights were trained with the input {key} "
            f"{[float(v) for v in old]}, the config now gives {[float(v) for v in new]} (has "
            "augment.stats' file changed?). Restore the run's statistics, or start a new run "
            "(another train.out_dir, or --overwrite) to train with these."
        )
