"""Optimizer and schedule registries, parameter groups, poly decay, encoder LR and freezing."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from segkit.config import OptimConfig, SchedulerConfig, load_config
from segkit.engine.schedulers import freeze_encoder_hook
from segkit.errors import ConfigError
from segkit.models import build_model
from segkit.optim import (
    build_optimizer,
    build_schedule,
    list_optimizers,
    list_schedulers,
    param_groups,
)

ROOT = Path(__file__).resolve().parents[1]

#: one case per registered optimizer: (config, torch class)
OPTIMIZERS = {
    "adam": ({}, torch.optim.Adam),
    "adamw": ({}, torch.optim.AdamW),
    "sgd": ({"options": {"nesterov": True}}, torch.optim.SGD),
}
#: one case per registered schedule: its LR after 5 of 10 optimizer steps (lr 1.0, 1 epoch)
SCHEDULES = {
    "none": 1.0,
    "plateau": 1.0,  # stepped on validation only
    "cosine": 0.5,  # 0.5 * (1 + cos(pi * 5/10))
    "poly": 0.5**0.9,  # (1 - 5/10) ** 0.9
    "onecycle": None,  # torch's own curve; checked to run
    "step": 1.0,  # stepped per epoch
}


def _tiny(arch: str = "smp.Unet") -> torch.nn.Module:
    if arch == "unet":
        return build_model(arch="unet", classes=2, base_channels=4)
    return build_model(
        arch=arch, encoder="resnet18", classes=2, options={"decoder_channels": [8] * 5}
    )


def test_every_registered_optimizer_and_schedule_has_a_case():
    assert set(OPTIMIZERS) == set(list_optimizers()), "add a case to OPTIMIZERS"
    assert set(SCHEDULES) == set(list_schedulers()), "add a case to SCHEDULES"
    assert list_schedulers("co*") == ["cosine"]


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_builds_with_its_options(name):
    options, cls = OPTIMIZERS[name]
    opt = build_optimizer(OptimConfig(name=name, lr=0.01, **options), _tiny("unet"))
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.01
    if name == "sgd":
        assert opt.param_groups[0]["nesterov"] and opt.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize("name", list_schedulers())
def test_every_schedule_builds_and_steps(name):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = build_schedule(opt, SchedulerConfig(name=name), epochs=1, steps_per_epoch=10)
    for _ in range(5):
        opt.step()
        if schedule.interval == "batch":
            schedule.scheduler.step()
    if SCHEDULES[name] is not None:
        assert opt.param_groups[0]["lr"] == pytest.approx(SCHEDULES[name])


def test_poly_warms_up_then_decays_to_min_lr():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    cfg = SchedulerConfig(name="poly", warmup_epochs=1, power=2.0, min_lr=0.01)
    schedule = build_schedule(opt, cfg, epochs=3, steps_per_epoch=2)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.scheduler.step()
    # warm-up (1/2, 2/2) then 0.01 + 0.09 * (1 - k/4) ** 2 for k = 0..3
    expected = [0.05, 0.1] + [0.01 + 0.09 * (1 - k / 4) ** 2 for k in range(4)]
    assert lrs == pytest.approx(expected)


def test_examples_build_the_same_optimizer_as_before():
    """Today's configs: one parameter group, as the if-chain built it."""
    for path in sorted((ROOT / "examples").glob("*/config*.yaml")):
        cfg = load_config(path)
        model = _tiny("unet" if cfg.model.arch == "unet" else "smp.Unet")
        opt = build_optimizer(cfg.optim, model)
        o = cfg.optim
        old = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[o.name](
            model.parameters(), lr=o.lr, weight_decay=o.weight_decay
        )
        assert len(opt.param_groups) == 1, path
        mine = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        theirs = {k: v for k, v in old.param_groups[0].items() if k != "params"}
        assert mine == theirs, path


def test_norms_and_biases_get_no_weight_decay_by_default():
    model = _tiny()
    groups = param_groups(model, 0.1, 0.01, decay_norm_bias=False, encoder_mult=1.0)
    decay = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    for name, p in model.named_parameters():
        is_norm_or_bias = name.endswith(".bias") or p.ndim == 1
        assert (id(p) in decay) != is_norm_or_bias, name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(param_groups(model, 0.1, 0.01, True, 1.0)) == 1  # the old behaviour
    assert len(param_groups(model, 0.1, 0.0, False, 1.0)) == 1  # nothing to tell apart


def test_encoder_learning_rate_multiplier():
    model = _tiny()
    opt = build_optimizer(OptimConfig(lr=0.1, encoder_lr_mult=0.1), model)
    encoder = {id(p) for p in model.net.encoder.parameters()}
    for group in opt.param_groups:
        in_encoder = {id(p) in encoder for p in group["params"]}
        assert len(in_encoder) == 1
        assert group["lr"] == pytest.approx(0.01 if in_encoder.pop() else 0.1)
    with pytest.raises(ConfigError, match="has no encoder"):
        build_optimizer(OptimConfig(encoder_lr_mult=0.5), _tiny("unet"))


def test_encoder_is_frozen_for_the_first_epochs():
    model = _tiny()
    hook = freeze_encoder_hook(2)
    hook.trainer = SimpleNamespace(model=model, epoch=0)
    hook.before_epoch()
    assert not any(p.requires_grad for p in model.net.encoder.parameters())
    assert all(p.requires_grad for p in model.net.decoder.parameters())
    hook.trainer.epoch = 2
    hook.before_epoch()
    assert all(p.requires_grad for p in model.net.encoder.parameters())


def test_unknown_names_and_options_suggest_close_ones():
    with pytest.raises(ConfigError, match="Did you mean 'adam' or 'adamw'"):
        build_optimizer(OptimConfig(name="adamv"), _tiny("unet"))
    with pytest.raises(ConfigError, match="no option 'beta'.*Did you mean 'betas'"):
        build_optimizer(OptimConfig(options={"beta": [0.9, 0.99]}), _tiny("unet"))
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    with pytest.raises(ConfigError, match="Did you mean 'poly'"):
        build_schedule(opt, SchedulerConfig(name="polly"), 1, 1)
