"""segkit: semantic segmentation on PyTorch with pluggable encoders.

Importing ``segkit`` is cheap: torch, smp and albumentations are imported on first use
of an attribute that needs them.
"""

from __future__ import annotations

import segkit._env  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before anything imports albumentations)
from segkit._lazy import lazy_names

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily on first access)
_LAZY = {
    "SegkitError": "segkit.errors",
    "DataError": "segkit.errors",
    "ConfigError": "segkit.errors",
    "CheckpointError": "segkit.errors",
    "WeightsError": "segkit.errors",
    "TrainingError": "segkit.errors",
    "Config": "segkit.config",
    "load_config": "segkit.config",
    "build_dataset": "segkit.data",
    "register_dataset": "segkit.data",
    "list_datasets": "segkit.data",
    "build_transforms": "segkit.data",
    "build_model": "segkit.models",
    "register_model": "segkit.models",
    "list_models": "segkit.models",
    "list_encoders": "segkit.models",
    "build_loss": "segkit.losses",
    "register_loss": "segkit.losses",
    "list_losses": "segkit.losses",
    "soft_dice_score": "segkit.losses",
    "SoftDiceLoss": "segkit.losses",
    "DiceLoss": "segkit.losses",
    "CombinedLoss": "segkit.losses",
    "ConfusionMatrix": "segkit.metrics",
    "HELEN_GROUPS": "segkit.data.helen",
    "DatasetMeta": "segkit.data.meta",
    "SoftDiceAccumulator": "segkit.metrics",
    "format_f1_lines": "segkit.metrics",
    "group_f1": "segkit.metrics",
    "results_table": "segkit.metrics",
    "score_folders": "segkit.metrics",
    "soft_dice": "segkit.metrics",
    "Trainer": "segkit.engine",
    "load_checkpoint": "segkit.engine",
    "model_from_checkpoint": "segkit.engine",
}

__all__ = ["__version__", *sorted(_LAZY)]

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
