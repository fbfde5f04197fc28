"""Resuming: 2 + 2 epochs equals 4 straight, mid-epoch interrupts, SIGINT to a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from segkit.config import SchedulerConfig
from segkit.engine import HookBase, load_checkpoint
from segkit.errors import CheckpointError

TESTS = Path(__file__).resolve().parent


class StopAfter(HookBase):
    """End training after epoch ``epoch`` (1-based), as if the job had been cut there."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, log) -> None:
        if self.trainer.epoch + 1 == self.epoch:
            self.trainer.request_stop("stopped")


@pytest.fixture
def run(make_trainer, tiny_net):
    def run(out: Path, epochs: int = 4, resume=None, hooks=None, **kw):
        """Train a dropout model (so RNG state matters) with Adam and a per-batch cosine schedule."""
        trainer = make_trainer(
            out,
            model=tiny_net(3, dropout=0.2),
            epochs=epochs,
            deterministic=True,
            scheduler=SchedulerConfig(name="cosine", warmup_epochs=1),
            hooks=hooks,
            monitor="val_miou",
            **kw,
        )
        return trainer, trainer.fit(resume=resume)

    return run


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.state_dict().values()]


def history_without_timing(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [",".join(line.split(",")[:-2]) for line in lines]


def test_two_plus_two_epochs_equals_four(run, tmp_path):
    straight, r4 = run(tmp_path / "straight")
    _, r2 = run(tmp_path / "resumed", hooks=[StopAfter(2)])
    assert r2["status"] == "stopped" and load_checkpoint(r2["last"])["epoch"] == 2
    epoch2 = tmp_path / "epoch2.pt"
    epoch2.write_bytes(r2["last"].read_bytes())
    second, r22 = run(tmp_path / "resumed", resume=True)
    assert second.epoch == 4 and second.step == straight.step == 16
    for a, b in zip(weights(straight.model), weights(second.model)):
        assert torch.equal(a, b)
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert r22["best_value"] == r4["best_value"] and r22["best_epoch"] == r4["best_epoch"]
    assert history_without_timing(tmp_path / "resumed" / "history.csv") == history_without_timing(
        tmp_path / "straight" / "history.csv"
    )
    # resuming again from epoch 2, history.csv already holds epochs 3 and 4: they are replaced
    third, _ = run(tmp_path / "resumed", resume=epoch2)
    for a, b in zip(weights(straight.model), weights(third.model)):
        assert torch.equal(a, b)
    assert history_without_timing(tmp_path / "resumed" / "history.csv") == history_without_timing(
        tmp_path / "straight" / "history.csv"
    )


class InterruptAt(HookBase):
    """Send this process SIGINT after batch ``batch`` of epoch ``epoch`` (both 1-based)."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def after_step(self) -> None:
        t = self.trainer
        if (t.epoch + 1, t.batch_in_epoch) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupt_inside_an_epoch_then_resume_matches(run, tmp_path, capsys):
    straight, _ = run(tmp_path / "straight", 3)
    _, r = run(tmp_path / "cut", 3, hooks=[InterruptAt(2, 1)])
    assert r["status"] == "interrupted"
    out = capsys.readouterr()
    assert "SIGINT" in out.err
    assert "Resume with: Trainer(...).fit(resume=" in out.out and str(r["last"]) in out.out
    ckpt = load_checkpoint(r["last"])
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"]) == (1, 1, 5)
    assert len((tmp_path / "cut" / "history.csv").read_text().splitlines()) == 2  # 1 row
    resumed, r2 = run(tmp_path / "cut", 3, resume=r["last"])
    assert r2["status"] == "completed"
    for a, b in zip(weights(straight.model), weights(resumed.model)):
        assert torch.equal(a, b)
    assert history_without_timing(tmp_path / "cut" / "history.csv") == history_without_timing(
        tmp_path / "straight" / "history.csv"
    )
    # the signal handlers are back to what they were
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_errors_name_the_file(make_trainer, tiny_net, tmp_path):
    with pytest.raises(CheckpointError, match="Cannot resume.*last.pt.*does not exist"):
        make_trainer(tmp_path).fit(resume=True)
    make_trainer(tmp_path / "a", epochs=1).fit()
    other = make_trainer(tmp_path / "b", model=tiny_net(5), classes=5)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        other.fit(resume=tmp_path / "a" / "last.pt")


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from conftest import TinySet, build_tiny_net as tiny_net, build_trainer as make_trainer


class Slow(TinySet):
    def __getitem__(self, i):
        time.sleep(0.02)
        return super().__getitem__(i)


import conftest
conftest.TinySet = Slow
epochs, resume = int(sys.argv[2]), sys.argv[3] == "resume"
trainer = make_trainer(sys.argv[1], epochs=epochs, monitor="val_miou")
trainer.resume_hint = "segkit train CONFIG --resume {{path}}"
result = trainer.fit(resume=resume or None)
print("STATUS", result["status"], result["epochs"])
"""


@pytest.mark.slow
def test_sigint_to_a_training_process_then_resume(make_trainer, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(TESTS))))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "50", "new"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 120
    while not (out / "last.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no last.pt after 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "STATUS interrupted" in stdout
    assert f"Resume with: segkit train CONFIG --resume {out / 'last.pt'}" in stdout
    ckpt = load_checkpoint(out / "last.pt")
    done = ckpt["epoch"] + (ckpt["batch_in_epoch"] > 0)
    assert 1 <= done < 50
    resumed = make_trainer(out, epochs=done + 1, monitor="val_miou").fit(resume=True)
    assert (resumed["status"], resumed["epochs"]) == ("completed", done + 1)
    assert load_checkpoint(out / "last.pt")["epoch"] == done + 1


def test_sigterm_is_caught_once_then_aborts(capsys):
    from segkit.engine.runtime import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "SIGTERM: finishing the current step" in capsys.readouterr().err


def test_resume_with_more_epochs_stretches_the_cosine_schedule(run, tmp_path):
    from segkit.engine.schedulers import WarmupCosine

    run(tmp_path, epochs=2)  # 4 optimizer steps per epoch (8 images, batch 2)
    trainer, result = run(tmp_path, epochs=4, resume=True)
    assert result["epochs"] == 4
    cosine = WarmupCosine(warmup=4, total=16)
    base = 1e-2  # make_trainer's learning rate
    epoch_lrs = [float(r.split(",")[1]) for r in (tmp_path / "history.csv").read_text().split()[1:]]
    assert epoch_lrs[2] == pytest.approx(base * cosine(8))  # not stuck at the 2-epoch minimum
    assert trainer.lr == pytest.approx(base * cosine(16), abs=1e-12)


def test_resume_with_more_epochs_refuses_to_stretch_one_cycle(make_trainer, tmp_path):
    def one_cycle(epochs, resume=None):
        trainer = make_trainer(
            tmp_path, epochs=epochs, scheduler=SchedulerConfig(name="onecycle"), monitor="val_miou"
        )
        return trainer.fit(resume=resume)

    one_cycle(2)
    with pytest.raises(Exception, match=r"one-cycle schedule of 8 optimizer steps.*needs 16"):
        one_cycle(4, resume=True)


def test_resuming_with_another_model_width_is_a_short_clear_error(make_trainer, tmp_path):
    from segkit.models import build_model

    def unet(width: int):
        torch.manual_seed(0)
        return build_model(arch="unet", base_channels=width, classes=3)

    make_trainer(tmp_path, model=unet(4), epochs=1).fit()
    with pytest.raises(CheckpointError) as failure:
        make_trainer(tmp_path, model=unet(8), epochs=2).fit(resume=True)
    message = str(failure.value)
    assert "last.pt" in message and "Resume with the model and optimizer settings" in message
    assert len(message) < 1000 and "\n" not in message


class _InterruptOnce(HookBase):
    """Sends SIGINT to this process once, after the given epoch's last hook."""

    def __init__(self, epoch: int | None = None, iteration: int | None = None) -> None:
        self.epoch, self.iteration, self.sent = epoch, iteration, False

    def after_step(self) -> None:
        if not self.sent and self.trainer.iteration == self.iteration:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    def after_epoch(self, log) -> None:
        if not self.sent and self.trainer.epoch == self.epoch:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_fit_after_an_interrupt_runs_to_the_end(make_trainer, tmp_path):
    trainer = make_trainer(tmp_path, n_train=16, epochs=3, hooks=[_InterruptOnce(iteration=2)])
    assert trainer.fit()["status"] == "interrupted"
    assert trainer.fit()["status"] == "completed" and trainer.epoch == 3


def test_the_best_epochs_predictions_are_drawn_after_a_resume(make_trainer, tiny_net, tmp_path):
    def trainer(hooks=()):
        model = tiny_net(3)
        opt = torch.optim.SGD(model.parameters(), lr=1e-9)  # epoch 1 stays the best
        return make_trainer(
            tmp_path, model=model, optimizer=opt, epochs=3, preview=2, monitor="val_miou",
            hooks=list(hooks),
        )  # fmt: skip

    assert trainer([_InterruptOnce(epoch=0)]).fit()["status"] == "interrupted"
    assert not (tmp_path / "predictions.png").exists()
    result = trainer().fit(resume=True)
    assert result["best_epoch"] == 1 and (tmp_path / "predictions.png").is_file()


def test_a_new_monitor_starts_the_plateau_schedule_afresh(make_trainer, tmp_path):
    make_trainer(tmp_path, epochs=2, scheduler=SchedulerConfig(name="plateau")).fit()
    resumed = make_trainer(
        tmp_path, epochs=3, monitor="val_miou", scheduler=SchedulerConfig(name="plateau")
    )
    with pytest.warns(UserWarning, match="monitored value changed from 'val_loss'"):
        resumed.load(tmp_path / "last.pt")
    assert resumed.schedule.scheduler.mode == "max" and resumed.get_hook("best").best is None


def test_overwrite_removes_what_the_earlier_run_wrote(make_trainer, tmp_path):
    make_trainer(tmp_path, epochs=2, preview=2).fit()
    assert (tmp_path / "best.pt").is_file()
    result = make_trainer(tmp_path, epochs=1, hooks=[_InterruptOnce(iteration=1)]).fit(
        overwrite=True
    )
    assert result["status"] == "interrupted"
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert left == ["last.pt"]  # no best.pt, history or figures of the earlier run


def test_a_second_fit_of_the_same_trainer_equals_one_longer_fit(
    make_trainer, run, tiny_net, tmp_path
):
    def weights(model):
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def run(out, epochs):
        model = tiny_net(3, dropout=0.3)  # dropout draws from the global RNG every step
        return model, make_trainer(out, model=model, epochs=epochs)

    model, trainer = run(tmp_path / "a", 4)
    trainer.fit()
    model2, trainer2 = run(tmp_path / "b", 2)
    trainer2.fit()
    trainer2.cfg.epochs = 4
    trainer2.fit()  # goes on with the random streams as they are, not reseeded
    assert torch.equal(weights(model2), weights(model))


@pytest.mark.timeout(120)
def test_resume_with_loader_workers_equals_the_uninterrupted_run(run, tiny_net, tiny_set, tmp_path):
    import numpy as np

    from segkit.config import TrainConfig
    from segkit.engine import Trainer, TrainerOptions, make_loader

    class Augmented(tiny_set):  # augmentation randomness drawn in the worker processes
        def __getitem__(self, i):
            item = super().__getitem__(i)
            item["image"] = item["image"] + float(np.random.rand())
            return item

    def run(out, hooks=(), resume=None):
        torch.manual_seed(0)
        model = tiny_net(3)
        trainer = Trainer(
            model,
            torch.nn.CrossEntropyLoss(),
            torch.optim.Adam(model.parameters(), 1e-2),
            make_loader(Augmented(8), 2, shuffle=True, num_workers=2),
            make_loader(tiny_set(4, seed=1), 2, shuffle=False),
            cfg=TrainConfig(out_dir=str(out), epochs=3, progress=False, preview=0),
            options=TrainerOptions(scheduler=SchedulerConfig(name="none")),
            hooks=list(hooks),
        )
        trainer.fit(resume=resume)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    reference = run(tmp_path / "a")
    run(tmp_path / "b", [_InterruptOnce(epoch=0)])
    assert torch.equal(run(tmp_path / "b", resume=True), reference)


@pytest.mark.parametrize(
    ("name", "epochs", "options"),
    [
        ("cosine", 3, {"scheduler": SchedulerConfig(name="cosine", warmup_epochs=1), "monitor": "val_miou"}),
        ("plateau", 4, {"scheduler": SchedulerConfig(name="plateau", patience=0, factor=0.5), "early_stop": 3}),
    ],
)  # fmt: skip
def test_a_format_1_checkpoint_resumes_as_the_straight_run(
    name, epochs, options, make_trainer, tiny_net, tmp_path
):
    """tests/data/v1_*: last.pt + history.csv written by segkit before hooks owned their state
    (see make_v1_checkpoints.py); resuming them equals an uninterrupted run of today's code."""
    import shutil

    def trainer(out):
        model = tiny_net(3, dropout=0.2)
        return model, make_trainer(
            out,
            model=model,
            epochs=epochs,
            deterministic=True,
            channels_last=False,
            amp="off",
            **options,
        )  # the files' layout and precision: contiguous fp32, as segkit trained on the CPU before
        # channels_last: auto and amp: auto (bf16 on CPUs with native bfloat16)

    model, straight = trainer(tmp_path / "straight")
    expected = straight.fit()
    shutil.copytree(TESTS / "data" / f"v1_{name}", tmp_path / "old")
    resumed_model, resumed = trainer(tmp_path / "old")
    result = resumed.fit(resume=True)
    # the files' first epochs ran on the CPU that made them; another CPU's kernels (AVX2 here,
    # AVX-512 elsewhere) round differently, by a few float32 ulps (1e-8 .. 6e-8 measured). A
    # lost state (optimizer moments, RNG, scheduler step) would differ by far more: the
    # interrupt-and-resume tests above, on one machine, stay bit-identical
    for a, b in zip(weights(resumed_model), weights(model)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert result["best_epoch"] == expected["best_epoch"]
    assert result["best_value"] == pytest.approx(expected["best_value"], rel=1e-6)
    old, new = (pd.read_csv(tmp_path / d / "history.csv").iloc[:, :-2] for d in ("old", "straight"))
    pd.testing.assert_frame_equal(old, new, rtol=1e-6)


@pytest.mark.parametrize("started", [False, True])
def test_auto_channels_last_resumes_in_the_runs_layout(run, tmp_path, monkeypatch, started):
    """A run trained contiguous (before ``auto`` turned channels_last on for the CPU, or by
    choice) resumes contiguous under ``auto``, bit-identical to its straight run; one trained
    channels_last resumes channels_last where ``auto`` would say contiguous. EMA included:
    its average must follow the switched weights."""
    from segkit.engine import runtime

    if started:  # auto says contiguous here, so that resuming must switch to the run's layout
        monkeypatch.setattr(runtime, "CHANNELS_LAST_AUTO", ())
    straight, _ = run(tmp_path / "straight", channels_last=started, ema=0.9)
    run(tmp_path / "resumed", hooks=[StopAfter(2)], channels_last=started, ema=0.9)
    second, _ = run(tmp_path / "resumed", resume=True, channels_last="auto", ema=0.9)
    assert second.channels_last is started
    first_conv = next(p for p in second.model.parameters() if p.dim() == 4)
    assert first_conv.is_contiguous(memory_format=torch.channels_last) is started
    for model in ("model", "eval_model"):  # trained weights, and their average
        for a, b in zip(weights(getattr(straight, model)), weights(getattr(second, model))):
            assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["channels_last"] is started


@pytest.mark.parametrize("trained", [False, True])
def test_a_checkpoint_without_the_layout_resumes_as_its_config_says(run, tmp_path, trained):
    run(tmp_path / "resumed", hooks=[StopAfter(2)], channels_last=trained)
    last = tmp_path / "resumed" / "last.pt"
    state = load_checkpoint(last)
    del state["channels_last"]  # as written before the layout was recorded
    torch.save(state, last)
    second, _ = run(tmp_path / "resumed", resume=True, channels_last="auto")
    assert second.channels_last is trained


@pytest.fixture
def fast_bf16(monkeypatch):
    """A CPU with native bfloat16, where ``train.amp: auto`` trains in bf16."""
    from segkit.engine import runtime

    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)


@pytest.mark.parametrize("trained", ["off", "bf16"])
def test_auto_amp_resumes_in_the_runs_precision(run, tmp_path, fast_bf16, trained):
    """A run trained in full precision (before ``auto`` meant bf16 on such a CPU, or by choice)
    resumes in full precision under ``auto``, bit-identical to its straight run; a bf16 run
    resumes in bf16."""
    straight, _ = run(tmp_path / "straight", amp=trained)
    run(tmp_path / "resumed", hooks=[StopAfter(2)], amp=trained)
    second, _ = run(tmp_path / "resumed", resume=True, amp="auto")
    assert second.amp_dtype == straight.amp_dtype == {"off": None, "bf16": torch.bfloat16}[trained]
    for a, b in zip(weights(straight.model), weights(second.model)):
        assert torch.equal(a, b)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["amp"] == trained


def test_a_checkpoint_without_the_precision_resumes_in_fp32_on_the_cpu(run, tmp_path, fast_bf16):
    run(tmp_path / "resumed", hooks=[StopAfter(2)], amp="off")
    last = tmp_path / "resumed" / "last.pt"
    state = load_checkpoint(last)
    del state["amp"]  # as written before the precision was recorded, when auto was off on CPUs
    torch.save(state, last)
    second, _ = run(tmp_path / "resumed", resume=True, amp="auto")
    assert second.amp_dtype is None
    fresh, _ = run(tmp_path / "fresh", epochs=1, amp="auto")
    assert fresh.amp_dtype is torch.bfloat16
