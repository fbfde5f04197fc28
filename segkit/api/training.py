"""Training from a config: :func:`build_experiment` and :func:`train`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from segkit.api.balance import (
    BALANCE_FILE,
    CHECKPOINT_KEYS,
    Balance,
    check_balance_config,
    run_balance,
)
from segkit.api.data import (
    attach_transforms,
    build_datasets,
    check_crop_config,
    check_resize,
    record_training_data,
    report_data,
    split_file_path,
    validation_windows,
)
from segkit.config import Config, from_dict, to_dict
from segkit.data.meta import DatasetMeta
from segkit.errors import ConfigError


@dataclass
class Experiment:
    """Everything :func:`train` needs, built from a config (inspect or tweak before training)."""

    cfg: Config
    train_set: Any
    val_set: Any
    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    class_names: list[str]
    groups: dict[str, list[int]] | None
    meta: DatasetMeta | None = None
    balance: Balance | None = None


def build_experiment(cfg: Config, resume: bool = False) -> Experiment:
    """Data sets, model, loss and optimizer for a config.

    With a rule for ``loss.class_weights`` or a ``data.sampler``, the training labels are
    counted first (:func:`~segkit.api.balance.run_balance`; ``resume``: a resumed run reuses
    the counts its run folder records) and the loss gets the rule's weights.
    """
    from segkit.engine import seed_everything
    from segkit.losses import build_loss
    from segkit.models import model_from_config
    from segkit.optim import build_optimizer
    from segkit.plugins import import_plugins

    check_resize(cfg.data)  # before any data is read or prepared
    check_crop_config(cfg.data)
    check_balance_config(cfg)
    import_plugins(cfg.imports)
    train_set, val_set = build_datasets(cfg)
    balance = run_balance(cfg, train_set, resume)
    class_names = list(train_set.class_names)
    meta = _with_mask_values(train_set.metadata(), train_set)
    # train.seed decides the initial weights too, not whatever drew from torch's RNG before
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = model_from_config(cfg.model, class_names, multilabel=meta.multilabel)
    record_training_data(model.spec, cfg, meta)
    attach_transforms(cfg, train_set, val_set, model.spec)
    lc = cfg.loss
    weights = lc.class_weights
    if balance is not None and balance.rule is not None:
        weights = balance.weights
    loss = build_loss(
        lc.name,
        smooth=lc.smooth,
        ignore_index=meta.ignore_index,
        class_weights=weights,
        mode="multilabel" if meta.multilabel else None,
        **lc.options,
    )
    if cfg.data.soft_targets and not getattr(loss, "accepts_soft", False):
        raise ConfigError(
            f"loss.name {lc.name!r} takes integer labels, but data.soft_targets gives float "
            "coverage targets: use soft_dice, bce or ce (or a sum of them), or unset "
            "data.soft_targets."
        )
    return Experiment(
        cfg,
        train_set,
        val_set,
        model,
        loss,
        build_optimizer(cfg.optim, model),
        class_names,
        meta.groups_for(class_names),
        meta,
        balance,
    )


def _with_mask_values(meta: DatasetMeta, train_set: Any) -> DatasetMeta:
    """``meta`` with the values a binary data set's masks hold recorded: 0/255 masks give
    ``output_ids`` (0, 255), so predictions are written as the masks are
    (:func:`segkit.data.checks.foreground_value`); otherwise ``meta`` as it is."""
    from segkit.data.checks import foreground_value

    value = foreground_value(train_set)
    return meta if value is None else meta.replace(output_ids=(0, value))


def train(
    cfg: Config, resume: str | Path | bool | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Train as the config says; returns the Trainer's summary (best value, paths).

    ``resume`` continues a run (True: ``last.pt`` of ``train.out_dir``); ``overwrite`` replaces
    an earlier run in ``train.out_dir``, which is refused otherwise.
    """
    from segkit.engine import Trainer, TrainerOptions, make_loader

    if overwrite and not resume:
        _forget_earlier_split(cfg)
    exp = build_experiment(cfg, resume=bool(resume))
    report_data(exp.train_set, exp.val_set)
    report_balance(exp.balance)
    d = cfg.data
    workers = {"num_workers": d.num_workers, "persistent_workers": d.persistent_workers}
    train_loader = make_loader(
        exp.train_set,
        d.batch_size,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=len(exp.train_set) > d.batch_size,
        sampler=_sampler(exp.balance, cfg.train.seed),
        **workers,
    )
    # with crops, validation sees whole images at their own (maybe differing) sizes: one a batch
    val_batch = 1 if d.crop is not None else d.batch_size
    val_loader = make_loader(exp.val_set, val_batch, shuffle=False, seed=cfg.train.seed, **workers)
    trainer = Trainer(
        exp.model,
        exp.loss,
        exp.optimizer,
        train_loader,
        val_loader,
        cfg=cfg.train,
        options=TrainerOptions(
            scheduler=cfg.scheduler,
            class_names=exp.class_names,
            groups=exp.groups,
            full_config=to_dict(cfg),
            val_wrapper=validation_windows(cfg, exp.model.spec),
        ),
        hooks=_optional_hooks(cfg, exp.balance),
    )
    if exp.meta is not None and exp.meta.thresholds is not None:  # multi-label validation
        trainer.evaluator.thresholds = list(exp.meta.thresholds)
    return trainer.fit(resume=resume, overwrite=overwrite)


def _forget_earlier_split(cfg: Config) -> None:
    """On overwrite, remove the held-out ids an earlier run wrote into its run folder.

    They belong to that run (perhaps drawn from other data): the new run draws its own.
    A split file outside the run folder is the user's and is kept.
    """
    from segkit.engine.run_folder import RUN_FILES

    out_dir = Path(cfg.train.out_dir)
    if not (cfg.data.split_file or "").startswith("{out_dir}"):
        return
    if any((out_dir / name).exists() for name in RUN_FILES):
        split_file = split_file_path(cfg.data, out_dir)
        if split_file is not None:
            split_file.unlink(missing_ok=True)


def _optional_hooks(cfg: Config, balance: Balance | None = None) -> list[Any]:
    """Hooks a config asks for beyond the built-in ones (encoder freezing, the record of the
    class balance)."""
    from segkit.engine.hooks import RecordHook
    from segkit.engine.schedulers import freeze_encoder_hook

    epochs = cfg.optim.freeze_encoder_epochs
    if epochs < 0:
        raise ConfigError(f"optim.freeze_encoder_epochs must be >= 0, got {epochs}.")
    hooks: list[Any] = [freeze_encoder_hook(epochs)] if epochs else []
    if balance is not None:
        hooks.append(RecordHook("class_balance", BALANCE_FILE, balance.record, CHECKPOINT_KEYS))
    return hooks


def _sampler(balance: Balance | None, seed: int) -> Any:
    """The training images' sampler ``data.sampler`` asks for (None: shuffling)."""
    if balance is None or balance.image_weights is None:
        return None
    from segkit.data.balance import RareClassSampler

    return RareClassSampler(balance.image_weights, seed=seed)


def report_balance(balance: Balance | None) -> None:
    """Print the class weights and the sampler a run uses (main process only)."""
    from segkit.engine.distributed import process_rank

    if balance is not None and process_rank() == 0:
        for line in balance.lines():
            print(line, flush=True)


def config_from_checkpoint(ckpt: dict[str, Any]) -> Config:
    """The training config stored in a checkpoint (:func:`segkit.engine.load_checkpoint`'s
    result; defaults where it holds none)."""
    raw = ckpt["config"]  # {} where none was stored
    return from_dict(Config, raw) if raw else Config()
