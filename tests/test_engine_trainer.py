"""The Trainer on tiny data: run folder, metrics vs scikit-learn, accumulation, schedules, faults."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score
from torch import nn

from segkit.config import SchedulerConfig, TrainConfig
from segkit.engine import (
    HookBase,
    Trainer,
    TrainerOptions,
    load_checkpoint,
    make_loader,
    resolve_amp,
    resolve_channels_last,
)
from segkit.engine.hooks import CONFIG_HEADER
from segkit.errors import ConfigError, DataError, TrainingError


def read_history(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sklearn_scores(model: nn.Module, data, classes: int) -> dict[str, float]:
    with torch.no_grad():
        logits = model(data.x)
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    y, p = data.y.flatten().numpy(), pred.flatten().numpy()
    labels = list(range(max(classes, 2)))
    f1 = f1_score(y, p, labels=labels, average=None, zero_division=np.nan)
    iou = jaccard_score(y, p, labels=labels, average=None, zero_division=0)
    return {"f1": f1, "iou": iou, "logits": logits}


def test_run_folder_history_and_metrics_match_sklearn(make_trainer, tiny_set, tmp_path):
    trainer = make_trainer(
        tmp_path, epochs=3, monitor="val_miou", preview=2, full_config={"name": "t"}
    )
    result = trainer.fit()
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "predictions.png").stat().st_size > 1000
    assert (tmp_path / "config.yaml").read_text().strip().splitlines() == [CONFIG_HEADER, "name: t"]
    rows = read_history(tmp_path / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    cols = list(rows[0])
    assert cols[:4] == ["epoch", "lr", "train_loss", "val_loss"]
    assert cols[-2:] == ["seconds", "images_per_s"]
    assert "val_miou" in cols and "val_f1_class_2" in cols
    assert all(float(r["seconds"]) > 0 and float(r["images_per_s"]) > 0 for r in rows)
    # the last row's validation used the final weights: recompute with sklearn
    ref = sklearn_scores(trainer.model, tiny_set(4, 3, seed=1), 3)
    last = rows[-1]
    for k in range(3):
        assert float(last[f"val_f1_class_{k}"]) == pytest.approx(ref["f1"][k], abs=1e-9)
    assert float(last["val_miou"]) == pytest.approx(np.nanmean(ref["iou"]), abs=1e-9)
    ce = nn.functional.cross_entropy(ref["logits"], tiny_set(4, 3, seed=1).y)
    assert float(last["val_loss"]) == pytest.approx(float(ce), rel=1e-5)
    # best.pt is the epoch with the highest val_miou
    mious = [float(r["val_miou"]) for r in rows]
    assert result["best_epoch"] == 1 + int(np.argmax(mious))
    assert result["best_value"] == pytest.approx(max(mious))
    best = load_checkpoint(result["best"])
    assert best["epoch"] == result["best_epoch"]
    assert best["hooks"]["best"]["best"] == pytest.approx(max(mious))
    assert result["status"] == "completed" and result["epochs"] == 3


def test_binary_model_reports_soft_dice_and_f1(
    binary_bce, make_trainer, tiny_net, tiny_set, tmp_path
):
    trainer = make_trainer(
        tmp_path, model=tiny_net(1), classes=1, loss=binary_bce, monitor="val_soft_dice"
    )
    result = trainer.fit()
    assert result["mode"] == "max"
    data = tiny_set(4, 2, seed=1)
    ref = sklearn_scores(trainer.model, data, 1)
    metrics = result["metrics"]
    assert metrics["val_f1_foreground"] == pytest.approx(ref["f1"][1], abs=1e-9)
    p, t = torch.sigmoid(ref["logits"][:, 0]).flatten(1), data.y.float().flatten(1)
    dice = (2 * (p * t).sum(1) + 1) / ((p * p).sum(1) + (t * t).sum(1) + 1)
    assert metrics["val_soft_dice"] == pytest.approx(float(dice.mean()), rel=1e-5)


@pytest.fixture
def sgd_weights(make_trainer, tiny_net):
    def sgd_weights(out, n_train: int, batch_size: int, accumulate: int, steps: int) -> list:
        model = tiny_net(3)
        trainer = make_trainer(
            out,
            model=model,
            n_train=n_train,
            batch_size=batch_size,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            shuffle=False,
            epochs=1,
            accumulate=accumulate,
        )
        trainer.fit()
        assert trainer.step == steps
        return [p.detach().clone() for p in model.parameters()]

    return sgd_weights


def test_accumulating_two_batches_equals_one_double_batch(sgd_weights, tiny_net, tmp_path):
    accumulated = sgd_weights(tmp_path / "a", n_train=4, batch_size=2, accumulate=2, steps=1)
    single = sgd_weights(tmp_path / "b", n_train=4, batch_size=4, accumulate=1, steps=1)
    start = list(tiny_net(3).parameters())
    assert not torch.allclose(accumulated[0], start[0])
    for a, b in zip(accumulated, single):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("n_train", "accumulate", "steps"),
    [
        (4, 4, 1),  # accumulate > batches in the epoch: one step over the 2 batches there are
        (6, 2, 2),  # 3 batches: groups [1, 2] and [3]; the last group averages its 1 batch
    ],
)
def test_short_accumulation_group_equals_one_batch_of_its_size(
    sgd_weights, tmp_path, n_train, accumulate, steps
):
    accumulated = sgd_weights(tmp_path / "a", n_train, 2, accumulate, steps)
    # one batch of 4 per step, the rest (2 samples) in the last batch
    single = sgd_weights(tmp_path / "b", n_train, 4, 1, steps)
    for a, b in zip(accumulated, single):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_partial_accumulation_group_steps_at_epoch_end(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, n_train=6, batch_size=2, epochs=2, accumulate=2)
    trainer.fit()
    assert trainer.step == 4  # 3 batches per epoch: a step after batch 2 and after batch 3
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 4


class LrRecorder(HookBase):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def after_step(self) -> None:
        if self.trainer.stepped:
            self.lrs.append(self.trainer.lr)


def test_cosine_with_warmup_per_optimizer_step(make_trainer, tmp_path):
    rec = LrRecorder()
    sched = SchedulerConfig(name="cosine", warmup_epochs=1)
    make_trainer(tmp_path, epochs=3, lr=0.1, scheduler=sched, hooks=[rec]).fit()
    # 4 steps per epoch, 12 in all; the recorder sees the LR for the next step
    warm, total = 4, 12

    def factor(k):
        if k < warm:
            return (k + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (k - warm) / (total - warm)))

    expected = [0.1 * factor(k + 1) for k in range(total)]
    assert rec.lrs == pytest.approx(expected)
    rows = read_history(tmp_path / "history.csv")
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.025, 0.1, 0.05])


def test_onecycle_follows_torch_reference(make_trainer, tmp_path):
    rec = LrRecorder()
    make_trainer(
        tmp_path, epochs=2, lr=0.1, scheduler=SchedulerConfig(name="onecycle"), hooks=[rec]
    ).fit()
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=8)
    expected = []
    for _ in range(8):
        opt.step()
        ref.step()
        expected.append(opt.param_groups[0]["lr"])
    assert rec.lrs == pytest.approx(expected)
    assert max(rec.lrs) == pytest.approx(0.1, rel=0.05)


def test_step_schedule_per_epoch(make_trainer, tmp_path):
    sched = SchedulerConfig(name="step", step_size=1, gamma=0.5)
    make_trainer(tmp_path, epochs=3, lr=0.08, scheduler=sched).fit()
    lrs = [float(r["lr"]) for r in read_history(tmp_path / "history.csv")]
    assert lrs == pytest.approx([0.08, 0.04, 0.02])


@pytest.fixture
def frozen_trainer(make_trainer):
    def frozen_trainer(tmp_path, **kwargs) -> Trainer:
        """A trainer whose optimizer holds a dummy parameter: the model never changes."""
        dummy = nn.Parameter(torch.zeros(1))
        return make_trainer(tmp_path, optimizer=torch.optim.SGD([dummy], lr=0.1), **kwargs)

    return frozen_trainer


def test_plateau_reduces_lr_when_the_monitor_stalls(frozen_trainer, tmp_path):
    sched = SchedulerConfig(name="plateau", patience=0, factor=0.5)
    frozen_trainer(tmp_path, epochs=4, scheduler=sched).fit()
    lrs = [float(r["lr"]) for r in read_history(tmp_path / "history.csv")]
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.025])


def test_early_stop_after_patience_validations(frozen_trainer, tmp_path, capsys):
    result = frozen_trainer(tmp_path, epochs=10, early_stop=2).fit()
    assert result["status"] == "early_stopped"
    assert result["epochs"] == 3 and result["best_epoch"] == 1
    assert len(read_history(tmp_path / "history.csv")) == 3
    assert "early stop" in capsys.readouterr().out


def test_validate_every_k_epochs_leaves_blanks(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, epochs=3, val_every=2)
    trainer.fit()
    rows = read_history(tmp_path / "history.csv")
    assert [r["val_loss"] != "" for r in rows] == [False, True, True]
    assert trainer.get_hook("best").best_epoch in (2, 3)


class CountSteps(HookBase):
    steps = 0

    def after_step(self) -> None:
        self.steps += 1


def test_unknown_monitor_suggests_the_closest(make_trainer, tmp_path):
    # known class names: checked before any training
    count = CountSteps()
    trainer = make_trainer(
        tmp_path, epochs=1, monitor="val_f1_cars", class_names=["bg", "a", "b"], hooks=[count]
    )
    with pytest.raises(ConfigError, match="val_f1_cars.*Did you mean 'val_f1_a'"):
        trainer.fit()
    assert count.steps == 0
    # names known only after the first validation: checked there, before any checkpoint
    with pytest.raises(ConfigError, match="val_mIoU.*Did you mean 'val_miou'"):
        make_trainer(tmp_path, epochs=1, monitor="val_mIoU").fit()
    assert not (tmp_path / "last.pt").exists()


def test_default_mode_is_min_only_for_losses(make_trainer, tmp_path):
    names = ["bg", "gloss", "c"]
    assert make_trainer(tmp_path, monitor="val_f1_gloss", class_names=names).mode == "max"
    assert make_trainer(tmp_path, monitor="val_loss").mode == "min"
    assert make_trainer(tmp_path, monitor="val_miou", mode="min").mode == "min"


def test_empty_validation_loader_is_refused_before_training(tiny_net, tiny_set, tmp_path):
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    train = make_loader(tiny_set(2), 2, shuffle=True)
    empty = make_loader(tiny_set(0), 2, shuffle=False)
    cfg = TrainConfig(out_dir=str(tmp_path), progress=False)
    with pytest.raises(DataError, match="validation loader yields no batches"):
        Trainer(model, nn.CrossEntropyLoss(), opt, train, empty, cfg)


def test_monitor_train_loss_without_validation(tiny_net, tiny_set, tmp_path):
    model = tiny_net(3)
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=2, monitor="train_loss", progress=False)
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        torch.optim.Adam(model.parameters(), 1e-2),
        make_loader(tiny_set(4), 2, shuffle=True),
        cfg=cfg,
    )
    result = trainer.fit()
    losses = [float(r["train_loss"]) for r in read_history(tmp_path / "history.csv")]
    assert result["mode"] == "min" and result["best_value"] == pytest.approx(min(losses))
    assert result["metrics"] == {}


class NanAt(nn.Module):
    """Cross-entropy that turns NaN on its ``bad``-th training call."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.calls, self.bad = 0, bad

    def forward(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.bad:
                return loss * float("nan")
        return loss


class Snapshot(HookBase):
    def before_epoch(self) -> None:
        out = self.trainer.out_dir
        if self.trainer.epoch == 1:
            self.files = {n: (out / n).read_bytes() for n in ("best.pt", "last.pt")}


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoints(make_trainer, tmp_path):
    snap = Snapshot()
    trainer = make_trainer(tmp_path, epochs=3, loss=NanAt(bad=6), hooks=[snap])
    with pytest.raises(TrainingError, match=r"epoch 2, step 2 of 4.*from the last completed"):
        trainer.fit()
    for name, data in snap.files.items():
        assert (tmp_path / name).read_bytes() == data
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_nan_loss_in_the_first_epoch_says_no_checkpoint_was_written(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, epochs=2, loss=NanAt(bad=2))
    with pytest.raises(TrainingError, match=r"epoch 1, step 2 of 4.*no checkpoint had been"):
        trainer.fit()
    assert not (tmp_path / "last.pt").exists()


def test_bad_settings_raise_clear_errors(make_trainer, tiny_net, tiny_set, tmp_path):
    with pytest.raises(ConfigError, match="train.accumulate must be at least 1"):
        make_trainer(tmp_path, accumulate=0)
    with pytest.raises(ConfigError, match="train.mode"):
        make_trainer(tmp_path, mode="up")
    with pytest.raises(ConfigError, match="Did you mean 'cosine'"):
        make_trainer(tmp_path, scheduler=SchedulerConfig(name="cosin"))
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    empty = torch.utils.data.DataLoader(tiny_set(1), batch_size=2, drop_last=True)
    with pytest.raises(DataError, match="no batches"):
        Trainer(model, nn.CrossEntropyLoss(), opt, empty, empty, TrainConfig(out_dir=str(tmp_path)))
    model = tiny_net()
    with pytest.raises(ConfigError, match="needs a validation loader"):
        Trainer(model, nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), 0.1),
                make_loader(tiny_set(2), 2, shuffle=True))  # fmt: skip
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            make_trainer(tmp_path, device="cuda")


@pytest.fixture
def slow_bf16(monkeypatch):
    """A CPU without native bfloat16 (whatever this one has)."""
    from segkit.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)


def test_resolve_amp(slow_bf16, monkeypatch):
    from segkit.engine import runtime

    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None  # off on a CPU without native bfloat16
    assert resolve_amp("off", cpu) is None and resolve_amp(False, cpu) is None
    with pytest.warns(UserWarning, match="without native bfloat16.*slow"):
        assert resolve_amp("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a CPU with AVX512-BF16 or AMX: no warning
        assert resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_amp("auto", cpu) is torch.bfloat16  # measured: docs/benchmarks.md section 5
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ConfigError, match="Did you mean 'bf16'"):
        resolve_amp("bf61", cpu)


def test_resolve_channels_last():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_channels_last("auto", cpu) is True  # measured faster on the CPU
    assert resolve_channels_last("auto", cuda) is False  # not measured there yet
    assert resolve_channels_last(True, cuda) is True and resolve_channels_last(False, cpu) is False
    assert resolve_channels_last("off", cpu) is False and resolve_channels_last("On", cuda) is True
    with pytest.raises(ConfigError, match="train.channels_last value 'atuo'.*Did you mean 'auto'"):
        resolve_channels_last("atuo", cpu)


@pytest.mark.parametrize("setting, expected", [("auto", True), (False, False), ("true", True)])
def test_channels_last_setting_on_cpu(make_trainer, tiny_net, tmp_path, setting, expected):
    model = tiny_net(3)
    trainer = make_trainer(tmp_path, model=model, epochs=1, n_train=2, channels_last=setting)
    assert trainer.channels_last is expected
    trainer.fit()
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last) is expected


def test_auto_leaves_a_model_with_3d_convolutions_contiguous(make_trainer, tiny_net, tmp_path):
    class With3d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.unused = tiny_net(3), nn.Conv3d(1, 1, 1)

        def forward(self, x):
            return self.net(x)

    trainer = make_trainer(tmp_path, model=With3d(), epochs=1, n_train=2, channels_last="auto")
    assert trainer.channels_last is False
    trainer.fit()


def test_bf16_channels_last_and_grad_clip_on_cpu(make_trainer, tiny_net, tmp_path, slow_bf16):
    model = tiny_net(3)
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.warns(UserWarning, match="slow"):
        trainer = make_trainer(
            tmp_path,
            model=model,
            optimizer=opt,
            epochs=1,
            n_train=2,
            amp="bf16",
            channels_last=True,
            grad_clip=1e-3,
        )
    trainer.fit()
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    delta = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)])
    assert 0 < float(delta.norm()) <= 1e-3 * 1.001  # one step of lr 1 with the norm clipped


def test_compile_setting_compiles_the_model(make_trainer, tmp_path, monkeypatch):
    seen = []

    def fake_compile(model, **kwargs):
        seen.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer = make_trainer(tmp_path, compile=True, epochs=1)
    assert seen == [trainer.model]
    trainer.fit()


def test_progress_bar_and_summary_lines(make_trainer, tmp_path, capsys):
    from segkit.engine import ProgressHook

    trainer = make_trainer(tmp_path, epochs=2)
    progress = next(h for h in trainer.hooks if isinstance(h, ProgressHook))
    progress.want_bar = True
    trainer.fit()
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 2 and "train_loss" in lines[0] and "img/s" in lines[0]
    assert "epoch 2/2" in captured.err  # the tqdm bar


def test_plain_summary_lines_off_a_terminal(make_trainer, tmp_path, capsys):
    make_trainer(tmp_path, epochs=2, progress=True).fit()  # captured output: not a TTY
    captured = capsys.readouterr()
    assert [ln.split("  ")[0] for ln in captured.out.splitlines()] == ["epoch 1/2", "epoch 2/2"]
    assert "epoch 1/2" not in captured.err and "it/s" not in captured.err


class PretendCuda(HookBase):
    """Make the trainer look as if it ran on CUDA between its epoch hooks and the next epoch.

    The epoch-end housekeeping runs after every hook's ``after_epoch``; the device is put back
    before the next epoch's batches are moved to it.
    """

    def before_epoch(self) -> None:
        self.trainer.device = torch.device("cpu")

    def after_epoch(self, log) -> None:
        self.trainer.device = torch.device("cuda")


@pytest.mark.parametrize("empty_cache", [True, False])
def test_cuda_cache_emptied_between_epochs(make_trainer, tmp_path, monkeypatch, empty_cache):
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    make_trainer(tmp_path, epochs=3, empty_cache=empty_cache, hooks=[PretendCuda()]).fit()
    assert len(calls) == (3 if empty_cache else 0)
    calls.clear()
    make_trainer(tmp_path / "cpu", epochs=2).fit()  # on CPU: never
    assert calls == []


def test_evaluate_model_matches_sklearn_with_ignored_pixels(tiny_net, tiny_set):
    from segkit.engine import evaluate_model

    data = tiny_set(3, 3, seed=2)
    data.y[:, :4] = 255  # a "don't care" band
    model = tiny_net(3)
    loader = make_loader(data, 2, shuffle=False)
    result = evaluate_model(
        model,
        loader,
        class_names=["bg", "a", "b"],
        groups={"fg": [1, 2]},
        device="cpu",
        loss_fn=nn.CrossEntropyLoss(ignore_index=255),
        ignore_index=255,
    )
    with torch.no_grad():
        logits = model(data.x)
    keep = data.y != 255
    y, p = data.y[keep].numpy(), logits.argmax(1)[keep].numpy()
    f1 = f1_score(y, p, labels=[0, 1, 2], average=None)
    assert [result[f"f1_{n}"] for n in ("bg", "a", "b")] == pytest.approx(f1)
    assert result["miou"] == pytest.approx(jaccard_score(y, p, average="macro"))
    assert "f1_fg" in result
    with pytest.raises(DataError, match="yielded no batches"):
        evaluate_model(model, [], device="cpu")
    ce = nn.functional.cross_entropy(logits, data.y, ignore_index=255)
    assert result["loss"] == pytest.approx(float(ce), rel=1e-5)  # equal batches of pixels


def test_class_names_must_fit_the_model(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, epochs=1, class_names=["only", "two"])
    with pytest.raises(ConfigError, match="predicts 3 classes.*2 class names"):
        trainer.fit()


def test_fp16_grad_scaler_path(make_trainer, tiny_net, tmp_path, monkeypatch):
    """fp16 needs CUDA in real runs; CPU autocast in fp16 exercises the GradScaler code here."""
    import segkit.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "resolve_amp", lambda amp, device: torch.float16)
    model = tiny_net(3)
    start = model[0].weight.detach().clone()
    trainer = make_trainer(tmp_path, model=model, epochs=2, grad_clip=1.0, accumulate=2)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    trainer.fit()
    assert not torch.equal(model[0].weight, start)
    scaler = load_checkpoint(tmp_path / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and "growth_factor" in scaler
    resumed = make_trainer(tmp_path, model=tiny_net(3), epochs=3, accumulate=2)
    resumed.load(tmp_path / "last.pt")
    assert resumed.scaler.get_scale() == scaler["scale"]


def test_fit_stops_persistent_loader_workers(tiny_net, tiny_set, tmp_path):
    train = make_loader(tiny_set(4, 3, seed=0), 2, shuffle=True, num_workers=1)
    val = make_loader(tiny_set(2, 3, seed=1), 2, shuffle=False, num_workers=1)
    model = tiny_net(3)
    cfg = TrainConfig(out_dir=str(tmp_path), epochs=1, progress=False, preview=0)
    opt = torch.optim.Adam(model.parameters())
    trainer = Trainer(
        model, nn.CrossEntropyLoss(), opt, train, val, cfg, TrainerOptions(SchedulerConfig("none"))
    )
    trainer.fit()
    # left to the garbage collector, each worker's shutdown would stall a later collection
    assert train._iterator is None and val._iterator is None
    trainer.cfg.epochs = 2
    result = trainer.fit()  # a later fit() starts new workers
    assert result["status"] == "completed" and result["epochs"] == 2
    assert [int(r["epoch"]) for r in read_history(tmp_path / "history.csv")] == [1, 2]


def test_an_earlier_run_is_kept_unless_resumed_or_overwritten(make_trainer, tmp_path):
    first = make_trainer(tmp_path, epochs=1)
    first.fit()
    first.fit()  # the same Trainer goes on with its own run
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds last.pt, best.pt, history.csv.*--resume"):
        make_trainer(tmp_path, epochs=1).fit()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert make_trainer(tmp_path, epochs=2).fit(resume=True)["epochs"] == 2
    assert make_trainer(tmp_path, epochs=1).fit(overwrite=True)["epochs"] == 1


def test_a_file_as_run_folder_is_a_clear_error(make_trainer, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"train.out_dir .*notes.txt' is a file, not a folder"):
        make_trainer(tmp_path / "notes.txt", epochs=1).fit()
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_run_configs_are_told_from_a_users_own(tmp_path):
    import yaml

    from segkit.config import Config, to_dict
    from segkit.engine.hooks import is_run_config

    legacy = tmp_path / "legacy.yaml"  # written by segkit before the header line existed
    legacy.write_text(yaml.safe_dump(to_dict(Config()), sort_keys=False))
    own = tmp_path / "own.yaml"
    own.write_text("data:\n  root: data/x\ntrain:\n  epochs: 3\n")
    commented = tmp_path / "commented.yaml"
    commented.write_text("# mine\n" + legacy.read_text())
    assert is_run_config(legacy) and not is_run_config(own) and not is_run_config(commented)


def test_a_run_that_failed_before_its_first_epoch_ended_can_start_again(make_trainer, tmp_path):
    (tmp_path / "config.yaml").write_text(f"{CONFIG_HEADER}\nname: t\n")  # all it left
    result = make_trainer(tmp_path, epochs=1, full_config={"name": "t"}).fit()
    assert result["status"] == "completed"
