"""The training engine: a small :class:`Trainer` loop plus hooks, checkpoints, distributed helpers.

Example::

    from segkit.engine import Trainer, make_loader
    trainer = Trainer(model, loss, optimizer, make_loader(train_set, 8, shuffle=True),
                      make_loader(val_set, 8, shuffle=False), cfg=cfg.train)
    result = trainer.fit()            # or fit(resume=True) to continue from last.pt
"""

from segkit.engine.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from segkit.engine.distributed import DistInfo, ShardSampler, shard_loader
from segkit.engine.ema import EMAHook
from segkit.engine.evaluation import Evaluator, evaluate_model, predict_labels, run_evaluation
from segkit.engine.hooks import (
    BestHook,
    CheckpointHook,
    ConfigHook,
    EarlyStopHook,
    EpochLog,
    EvalHook,
    HookBase,
    LRSchedulerHook,
    RecordHook,
)
from segkit.engine.loaders import make_loader, seed_everything, set_loader_epoch, worker_init_fn
from segkit.engine.loggers import HistoryHook, PlotHook, ProgressHook, TensorBoardHook
from segkit.engine.runtime import resolve_amp, resolve_channels_last
from segkit.engine.schedulers import SCHEDULERS, WarmupCosine, build_scheduler
from segkit.engine.trackers import MLflowHook, WandbHook
from segkit.engine.trainer import Trainer, TrainerOptions

__all__ = [
    "SCHEDULERS",
    "BestHook",
    "CheckpointHook",
    "ConfigHook",
    "DistInfo",
    "EMAHook",
    "EarlyStopHook",
    "EpochLog",
    "EvalHook",
    "Evaluator",
    "HistoryHook",
    "HookBase",
    "LRSchedulerHook",
    "MLflowHook",
    "PlotHook",
    "ProgressHook",
    "RecordHook",
    "ShardSampler",
    "TensorBoardHook",
    "Trainer",
    "TrainerOptions",
    "WandbHook",
    "WarmupCosine",
    "build_scheduler",
    "evaluate_model",
    "load_checkpoint",
    "make_loader",
    "model_from_checkpoint",
    "predict_labels",
    "resolve_amp",
    "resolve_channels_last",
    "run_evaluation",
    "save_checkpoint",
    "seed_everything",
    "set_loader_epoch",
    "shard_loader",
    "worker_init_fn",
]
