"""Hook registration on a real Trainer: every event for every hook, switches, replacement, EMA."""

from __future__ import annotations

import pytest
import torch

from segkit.config import SchedulerConfig, load_config
from segkit.engine import HookBase, ProgressHook, Trainer, load_checkpoint
from segkit.errors import ConfigError

BUILT_IN = ["config", "eval", "best", "lr", "early_stop", "history", "plot", "progress",
            "checkpoint"]  # fmt: skip


class Counter(HookBase):
    """Counts every event it receives."""

    def __init__(self, name: str = "counter") -> None:
        self.name = name
        self.counts = dict.fromkeys(
            ["before_train", "before_epoch", "after_step", "after_epoch", "after_train"], 0
        )

    def before_train(self) -> None:
        self.counts["before_train"] += 1

    def before_epoch(self) -> None:
        self.counts["before_epoch"] += 1

    def after_step(self) -> None:
        self.counts["after_step"] += 1

    def after_epoch(self, log) -> None:
        self.counts["after_epoch"] += 1

    def after_train(self) -> None:
        self.counts["after_train"] += 1


EVERY = {"before_train": 1, "before_epoch": 2, "after_step": 8, "after_epoch": 2, "after_train": 1}


def test_a_hook_added_in_any_way_receives_every_event(make_trainer, tmp_path):
    """Through hooks=, register_hooks() before fit(), register_hooks() from another hook's
    before_train, and an overridden build_hooks(): 2 epochs of 4 batches each."""
    given, before_fit, during_fit = Counter("given"), Counter("before"), Counter("during")

    class Registrar(HookBase):
        def before_train(self) -> None:
            self.trainer.register_hooks([during_fit])

    trainer = make_trainer(tmp_path / "a", hooks=[given, Registrar()])
    trainer.register_hooks([before_fit])
    trainer.fit()
    assert given.counts == before_fit.counts == EVERY
    # registered while before_train ran: the events after it, every one of them
    assert during_fit.counts == dict(EVERY, before_train=0)
    names = [h.name for h in trainer.hooks]
    assert names[:-1] == [*BUILT_IN[:-1], "given", "Registrar", "before", "during"]
    assert names[-1] == "checkpoint"  # last, so that last.pt holds every hook's state

    built = Counter("built")

    class MyTrainer(Trainer):
        def build_hooks(self):
            return [*super().build_hooks(), built]

    model = torch.nn.Conv2d(3, 3, 1)
    reference = make_trainer(tmp_path / "b", model=model)
    MyTrainer(model, reference.loss_fn, reference.optimizer, reference.train_loader,
              reference.val_loader, reference.cfg).fit()  # fmt: skip
    assert built.counts == EVERY


def test_built_in_hooks_are_switched_off_from_yaml(make_trainer, tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("train:\n  hooks: {plot: false, progress: false}\n")
    cfg = load_config(path).train
    assert (cfg.hooks.plot, cfg.hooks.progress, cfg.hooks.history) == (False, False, True)
    trainer = make_trainer(tmp_path / "run", epochs=2, preview=2, hooks_cfg=cfg.hooks)
    assert [h.name for h in trainer.hooks] == [n for n in BUILT_IN if n not in ("plot", "progress")]
    trainer.fit()
    assert capsys.readouterr().out == ""
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["best.pt", "history.csv", "last.pt"]
    with pytest.raises(ConfigError, match="train.hooks.plto.*Did you mean"):
        load_config(None, ["train.hooks.plto=false"])


def test_a_built_in_hook_is_replaced_or_removed_from_python(make_trainer, tmp_path):
    class Quiet(ProgressHook):
        def after_epoch(self, log) -> None:
            self.seen = log.epoch

    trainer = make_trainer(tmp_path, epochs=1)
    index = [h.name for h in trainer.hooks].index("progress")
    quiet = Quiet()
    trainer.register_hooks([quiet])
    assert trainer.hooks[index] is quiet and trainer.get_hook("progress") is quiet
    trainer.remove_hooks("plot")
    assert trainer.get_hook("plot") is None
    with pytest.raises(ValueError, match="'progres'.*Did you mean 'progress'"):
        trainer.remove_hooks("progres")
    trainer.fit()
    assert quiet.seen == 1 and not (tmp_path / "curves.png").exists()


def test_a_hook_without_the_log_argument_is_refused_clearly(make_trainer, tmp_path):
    class Old(HookBase):
        def after_epoch(self) -> None:
            pass

    with pytest.raises(
        TypeError, match=r"Old.after_epoch takes no argument.*after_epoch\(self, log\)"
    ):
        make_trainer(tmp_path, hooks=[Old()])
    with pytest.raises(TypeError, match="must be a segkit.engine.HookBase, got object"):
        make_trainer(tmp_path, hooks=[object()])


def test_tensorboard_from_the_config_shows_the_run(make_trainer, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(None, ["train.hooks.tensorboard=true"]).train
    make_trainer(tmp_path, epochs=2, preview=2, monitor="val_miou", hooks_cfg=cfg.hooks).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_miou", "lr", "step/loss"} <= scalars
    history = (tmp_path / "history.csv").read_text().splitlines()
    miou = [float(r.split(",")[history[0].split(",").index("val_miou")]) for r in history[1:]]
    assert [e.value for e in events.Scalars("val_miou")] == pytest.approx(miou)
    assert [e.step for e in events.Images("predictions")] == [1, 2]


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in module.state_dict().values()]


def test_ema_is_evaluated_saved_as_best_and_resumes_bit_identically(
    make_trainer, tiny_net, tmp_path
):
    class StopAfter(HookBase):
        def after_epoch(self, log) -> None:
            if log.epoch == 2:
                self.trainer.request_stop("stopped")

    def run(out, hooks=(), resume=None):
        model = tiny_net(3, dropout=0.2)
        trainer = make_trainer(
            out, model=model, epochs=4, ema=0.9, monitor="val_miou", deterministic=True,
            scheduler=SchedulerConfig(name="cosine", warmup_epochs=1), hooks=list(hooks),
        )  # fmt: skip
        return trainer, trainer.fit(resume=resume)

    straight, result = run(tmp_path / "straight")
    average = straight.get_hook("ema").average
    assert straight.eval_model is average
    last = load_checkpoint(tmp_path / "straight" / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(last["model"].values(), _weights(average)))
    assert all(
        torch.equal(a, b) for a, b in zip(last["train_model"].values(), _weights(straight.model))
    )
    assert not torch.equal(last["model"]["0.weight"], last["train_model"]["0.weight"])
    best = load_checkpoint(result["best"])  # best.pt holds the average the epoch scored
    assert best["hooks"]["eval"]["metrics"]["val_miou"] == result["best_value"]
    assert best["hooks"]["ema"]["updates"] == 4 * result["best_epoch"]

    run(tmp_path / "resumed", hooks=[StopAfter()])
    resumed, again = run(tmp_path / "resumed", resume=True)
    assert again["epochs"] == 4 and again["best_epoch"] == result["best_epoch"]
    for a, b in [(resumed.model, straight.model), (resumed.eval_model, average)]:
        assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
