"""Each built-in hook alone, on a stub trainer (detectron2's tests/test_engine.py way)."""

from __future__ import annotations

import ast
import csv
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from segkit.config import SchedulerConfig, TrainConfig
from segkit.engine import (
    BestHook,
    CheckpointHook,
    ConfigHook,
    EarlyStopHook,
    EMAHook,
    EpochLog,
    EvalHook,
    HistoryHook,
    LRSchedulerHook,
    PlotHook,
    ProgressHook,
    TensorBoardHook,
    build_scheduler,
)
from segkit.engine.hooks import CONFIG_HEADER
from segkit.errors import ConfigError

ENGINE = Path(__file__).resolve().parents[1] / "segkit" / "engine"


class StubTrainer(SimpleNamespace):
    """The trainer attributes hooks read, with the methods they call recorded."""

    def __init__(self, out_dir: Path, **kw) -> None:
        defaults = dict(
            cfg=TrainConfig(epochs=4, val_every=1, progress=False),
            out_dir=out_dir,
            dist=SimpleNamespace(is_main=True, rank=0, world_size=1),
            monitor="val_loss",
            mode="min",
            epoch=0,
            step=0,
            iteration=0,
            batch_in_epoch=0,
            n_batches=4,
            stepped=True,
            loss_value=0.5,
            lr=0.1,
            images_seen=8,
            epoch_start=0.0,
            resumed=False,
            status="running",
            stop_reason="",
            class_names=["a", "b", "c"],
            groups=None,
            full_config=None,
            val_loader=[1],
            model=torch.nn.Linear(2, 2),
            calls=[],
        )
        super().__init__(**{**defaults, **kw})

    def request_stop(self, status: str, message: str = "") -> None:
        self.status, self.stop_reason = status, message
        self.calls.append(("stop", status))

    def save(self, path, state) -> None:
        self.calls.append(("save", Path(path).name))

    def copy(self, src, dst) -> None:
        self.calls.append(("copy", Path(dst).name))

    def state_dict(self, complete: bool = True) -> dict:
        return {}

    def evaluate_with(self, module) -> None:
        self.calls.append(("evaluate_with", module))


def attach(hook, trainer):
    hook.trainer = trainer
    hook.setup()
    return hook


def test_eval_hook_validates_every_k_epochs_and_at_the_last(tmp_path):
    t = StubTrainer(tmp_path, cfg=TrainConfig(epochs=3, val_every=2))
    t.validate = lambda: {"val_loss": 0.25, "val_miou": 0.5}
    t.evaluator = SimpleNamespace(preview_batch=lambda: {"pred": torch.zeros(1, 2, 2)})
    hook = attach(EvalHook(), t)
    logs = [EpochLog(e, {"lr": 0.1}) for e in (1, 2, 3)]
    for log in logs:
        hook.after_epoch(log)
    assert [log.validated for log in logs] == [False, True, True]
    assert logs[0].values == {"lr": 0.1} and logs[0].preview is None
    assert logs[1].values["val_miou"] == 0.5 and logs[1].preview is not None
    restored = EvalHook()
    restored.load_state_dict(hook.state_dict())
    assert restored.metrics == {"val_loss": 0.25, "val_miou": 0.5}


def test_eval_hook_checks_the_monitor_before_training(tmp_path):
    t = StubTrainer(tmp_path, monitor="val_mIoU")
    with pytest.raises(ConfigError, match="val_mIoU.*Did you mean 'val_miou'"):
        attach(EvalHook(), t).before_train()


def test_best_hook_tracks_the_best_value_and_tells_the_log(tmp_path):
    hook = attach(BestHook("val_loss", "min"), StubTrainer(tmp_path))
    improved = []
    for epoch, value in enumerate([0.5, 0.7, 0.4, float("nan")], 1):
        log = EpochLog(epoch, {"val_loss": value}, validated=True)
        hook.after_epoch(log)
        improved.append(log.improved)
    assert improved == [True, False, True, False]
    assert (log.best, log.best_epoch, hook.best, hook.best_epoch) == (0.4, 3, 0.4, 3)
    skipped = EpochLog(5, {"val_loss": 0.1})  # not validated: no verdict
    hook.after_epoch(skipped)
    assert skipped.monitored is None and not skipped.improved and skipped.best == 0.4
    same, other = BestHook("val_loss", "min"), BestHook("val_miou", "max")
    same.load_state_dict(hook.state_dict())
    other.load_state_dict(hook.state_dict())
    assert (same.best, same.best_epoch) == (0.4, 3) and other.best is None
    with pytest.raises(ConfigError, match="not among the values"):
        hook.after_epoch(EpochLog(6, {"val_miou": 0.3}, validated=True))


def _schedule(name: str, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return opt, build_scheduler(opt, SchedulerConfig(name=name, **kw), 2, 2, "min")


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_lr_hook_steps_per_optimizer_step_epoch_or_validation(tmp_path):
    t = StubTrainer(tmp_path)
    opt, schedule = _schedule("step", step_size=1, gamma=0.5)
    hook = attach(LRSchedulerHook(schedule, "step", "val_loss", "min"), t)
    hook.after_step()
    assert opt.param_groups[0]["lr"] == 1.0  # an epoch schedule ignores steps
    hook.after_epoch(EpochLog(1))
    assert opt.param_groups[0]["lr"] == 0.5
    opt, schedule = _schedule("cosine")
    hook = attach(LRSchedulerHook(schedule, "cosine", "val_loss", "min"), t)
    t.stepped = False
    hook.after_step()
    assert schedule.scheduler.last_epoch == 0  # accumulating: no optimizer step, no LR step
    t.stepped = True
    hook.after_step()
    assert schedule.scheduler.last_epoch == 1
    opt, schedule = _schedule("plateau", patience=0, factor=0.5)
    hook = attach(LRSchedulerHook(schedule, "plateau", "val_loss", "min"), t)
    for value in (1.0, 1.0, None, 1.0):  # None: not validated, the plateau does not count it
        hook.after_epoch(EpochLog(1, monitored=value))
    assert opt.param_groups[0]["lr"] == 0.25


def test_lr_hook_state_restores_or_starts_afresh_with_a_warning(tmp_path):
    _, schedule = _schedule("plateau", patience=3)
    saved = LRSchedulerHook(schedule, "plateau", "val_loss", "min")
    schedule.scheduler.step(0.5)
    state = saved.state_dict()
    _, fresh = _schedule("plateau", patience=3)
    LRSchedulerHook(fresh, "plateau", "val_loss", "min").load_state_dict(state)
    assert fresh.scheduler.best == 0.5
    _, other = _schedule("plateau", patience=3)
    with pytest.warns(UserWarning, match="monitored value changed from 'val_loss'"):
        LRSchedulerHook(other, "plateau", "val_miou", "max").load_state_dict(state)
    _, cosine = _schedule("cosine")
    with pytest.warns(UserWarning, match="from 'plateau' to 'cosine'"):
        LRSchedulerHook(cosine, "cosine", "val_loss", "min").load_state_dict(state)


def test_early_stop_counts_validations_without_improvement(tmp_path):
    t = StubTrainer(tmp_path)
    hook = attach(EarlyStopHook(2), t)
    hook.after_epoch(EpochLog(1, monitored=0.5, improved=True, best=0.5, best_epoch=1))
    hook.after_epoch(EpochLog(2))  # not validated: does not count
    hook.after_epoch(EpochLog(3, monitored=0.6, best=0.5, best_epoch=1))
    assert hook.bad == 1 and t.calls == []
    restored = attach(EarlyStopHook(2), t)
    restored.load_state_dict(hook.state_dict())
    restored.after_epoch(EpochLog(4, monitored=0.7, best=0.5, best_epoch=1))
    assert t.calls == [("stop", "early_stopped")]
    assert "not improved for 2 validations (best 0.5000 at epoch 1)" in t.stop_reason


def test_history_hook_writes_rows_and_continues_a_resumed_file(tmp_path):
    t = StubTrainer(tmp_path)
    hook = attach(HistoryHook(), t)
    hook.before_train()
    for epoch in (1, 2):
        hook.after_epoch(EpochLog(epoch, {"lr": 0.1, "train_loss": 1.0 / epoch, "val_x": 2}))
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "lr", "train_loss", "val_loss", "val_x", "seconds",
                             "images_per_s"]  # fmt: skip
    assert [r["train_loss"] for r in rows] == ["1.0", "0.5"] and rows[0]["val_loss"] == ""
    resumed = attach(HistoryHook(), StubTrainer(tmp_path, resumed=True, epoch=1))
    resumed.before_train()
    assert [r["epoch"] for r in resumed.rows] == [1]  # the rows after the checkpoint go
    resumed.after_epoch(EpochLog(2, {"lr": 0.1}))
    assert (tmp_path / "history.csv").read_text().count("\n") == 3


def test_plot_hook_keeps_the_best_predictions_and_draws_at_the_end(tmp_path):
    t = StubTrainer(tmp_path, monitor="train_loss")
    hook = attach(PlotHook(every_s=1e9), t)
    hook.before_train()
    preview = {"image": torch.rand(1, 3, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long),
               "pred": torch.ones(1, 8, 8, dtype=torch.long)}  # fmt: skip
    hook.after_epoch(EpochLog(1, {"train_loss": 1.0}, improved=True, preview=preview))
    hook.after_epoch(EpochLog(2, {"train_loss": 2.0}, improved=False, preview={"x": 1}))
    assert hook.best_preview["epoch"] == 1 and not (tmp_path / "curves.png").exists()
    restored = PlotHook()
    restored.load_state_dict(hook.state_dict())
    assert restored.best_preview["epoch"] == 1
    t.status = "interrupted"
    hook.after_train()
    assert not (tmp_path / "curves.png").exists()  # an interrupted run exits at once
    t.status = "completed"
    hook.after_train()
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "predictions.png").is_file()


def test_progress_hook_prints_a_line_per_epoch_and_the_stop_reason(tmp_path):
    t = StubTrainer(tmp_path, stop_reason="early stop: because")
    stream = io.StringIO()
    hook = attach(ProgressHook(bar=False, stream=stream), t)
    hook.before_epoch()
    hook.after_step()
    values = {"lr": 0.1, "train_loss": 0.5, "val_loss": 0.25, "images_per_s": 10.0}
    hook.after_epoch(EpochLog(2, values, improved=True))
    line, reason = stream.getvalue().splitlines()
    assert line.startswith("epoch 2/4  lr 1.00e-01  train_loss 0.5000  val_loss 0.2500")
    assert line.endswith("* best val_loss") and reason == "early stop: because"


def test_checkpoint_hook_writes_last_and_links_best_on_improvement(tmp_path):
    t = StubTrainer(tmp_path)
    hook = attach(CheckpointHook(), t)
    hook.after_epoch(EpochLog(1, improved=True))
    hook.after_epoch(EpochLog(2))
    assert t.calls == [("save", "last.pt"), ("copy", "best.pt"), ("save", "last.pt")]


def test_config_hook_writes_the_config_with_its_header(tmp_path):
    hook = attach(ConfigHook(), StubTrainer(tmp_path, full_config={"name": "x"}))
    hook.before_train()
    assert (tmp_path / "config.yaml").read_text() == f"{CONFIG_HEADER}\nname: x\n"


def test_ema_hook_averages_after_optimizer_steps_only(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    t = StubTrainer(tmp_path, model=model)
    hook = attach(EMAHook(0.5), t)
    assert t.calls == [("evaluate_with", hook.average)]
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
        model[1].num_batches_tracked.fill_(7)
    t.stepped = False
    hook.after_step()
    assert torch.equal(hook.average[0].weight, start)
    t.stepped = True
    hook.after_step()  # decay min(0.5, 2/11): the warm-up follows the weights closely
    expected = start + (1 - 2 / 11) * 1.0
    assert torch.allclose(hook.average[0].weight, expected)
    assert torch.allclose(hook.average[1].running_mean, torch.full((2,), 3.0 * (1 - 2 / 11)))
    assert int(hook.average[1].num_batches_tracked) == 7  # integer buffers are copied
    assert not hook.average[0].weight.requires_grad
    assert hook.state_dict() == {"updates": 1, "decay": 0.5}
    with pytest.raises(ConfigError, match=r"train.ema must be in \[0, 1\)"):
        EMAHook(1.5)


def test_tensorboard_hook_writes_scalars_and_images_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = StubTrainer(tmp_path, step=3)
    hook = attach(TensorBoardHook(), t)
    hook.before_train()
    hook.after_step()
    preview = {"image": torch.rand(2, 3, 8, 8), "mask": torch.zeros(2, 8, 8, dtype=torch.long),
               "pred": torch.ones(2, 8, 8, dtype=torch.long)}  # fmt: skip
    hook.after_epoch(EpochLog(1, {"lr": 0.1, "train_loss": 0.5, "val_miou": None}, preview=preview))
    hook.close()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    tags = events.Tags()
    assert {"lr", "train_loss", "step/loss", "step/lr"} <= set(tags["scalars"])
    assert "val_miou" not in tags["scalars"]  # a blank is not a value
    assert [(e.step, e.value) for e in events.Scalars("train_loss")] == [(1, 0.5)]
    assert [e.step for e in events.Scalars("step/loss")] == [3]
    (image,) = events.Images("predictions")
    assert (image.width, image.height) == (3 * 8, 2 * 8)


def _imports(path: Path) -> set[str]:
    """Every segkit.engine module ``path`` imports, TYPE_CHECKING blocks included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n.startswith("segkit.engine.")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("segkit.engine.")}
    return {n.split(".")[2] for n in found}


def test_the_engine_modules_import_in_one_direction():
    """trainer -> hooks / loggers / ema -> checkpoint: nothing imports back up."""
    imports = {p.stem: _imports(p) for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    for name in ("hooks", "loggers", "ema", "checkpoint", "run_folder", "runtime"):
        assert "trainer" not in imports[name], name
    assert not imports["checkpoint"] & {"hooks", "loggers", "ema", "trainer", "run_folder"}
    assert not imports["hooks"] & {"loggers", "ema", "checkpoint"}
