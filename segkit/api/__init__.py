"""High-level library calls: build everything from a :class:`~segkit.config.Config`, train, evaluate.

These are what the CLI runs; they are equally meant for notebooks and scripts::

    from segkit.config import load_config
    from segkit.api import train
    result = train(load_config("examples/carvana_single_class/config.yaml", ["train.epochs=2"]))
"""

from segkit.api.balance import Balance, class_stats, run_balance
from segkit.api.data import (
    attach_transforms,
    build_datasets,
    channel_stats,
    check_crop_config,
    check_crop_size,
    check_resize,
    modules_of,
    record_training_data,
    report_data,
    resolve_data_root,
    split_file_path,
    training_set,
    validation_windows,
)
from segkit.api.evaluation import SCORING_OPTIONS, check_json_path, evaluate, write_json
from segkit.api.labels import ScoreLabels, class_labels, labels_in_folders, score
from segkit.api.quantization import export_int8
from segkit.api.training import Experiment, build_experiment, config_from_checkpoint, train

__all__ = [
    "Balance",
    "Experiment",
    "SCORING_OPTIONS",
    "ScoreLabels",
    "attach_transforms",
    "build_datasets",
    "build_experiment",
    "channel_stats",
    "check_crop_config",
    "check_crop_size",
    "check_json_path",
    "check_resize",
    "class_labels",
    "class_stats",
    "config_from_checkpoint",
    "evaluate",
    "export_int8",
    "labels_in_folders",
    "modules_of",
    "record_training_data",
    "report_data",
    "resolve_data_root",
    "run_balance",
    "score",
    "split_file_path",
    "train",
    "training_set",
    "validation_windows",
    "write_json",
]
