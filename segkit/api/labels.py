"""What ``segkit score`` compares: the classes of two label folders (:func:`score`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ScoreLabels:
    """What ``segkit score`` scores label folders as.

    Attributes:
        names: class names (numbers when nothing names them).
        groups: report groups, or None.
        ignore_index: the ground-truth value left out (a data set's or checkpoint's recorded
            one, 255 beside other labels, or the caller's), or None.
        note: how they were chosen (printed by ``segkit score``), or None.
        reduce_zero_label: the checkpoint was trained with ``reduce_zero_label`` (labels
            1..N are its classes, 0 is left out): both folders are read that way.
        values: both folders hold the data set's own label values, class ``i`` as
            ``values[i]`` (a checkpoint's ``output_ids``: Cityscapes' labelIds), or None
            (class ids).
        hint: what to do when the files hold other values than these (which ``label_type``
            the files need), appended to that error; empty when there is nothing to add.
    """

    names: list[str]
    groups: dict[str, list[int]] | None = None
    ignore_index: int | None = None
    note: str | None = None
    reduce_zero_label: bool = False
    values: tuple[int, ...] | None = None
    hint: str = ""


def class_labels(classes: str, ids: bool = False) -> ScoreLabels:
    """Class names, report groups and ignore index for ``segkit score --classes``: a registered
    data set's label set, a class count, a checkpoint (``.pt``; what its training recorded) or
    a file of names (one per line, as ``data.classes`` reads it:
    :func:`~segkit.config.read_class_names`).

    A checkpoint's predictions are in the data set's own label values where it recorded them
    (``output_ids``), and so is its data set's ground truth: both folders are read in those
    values, unless ``ids`` (both hold class ids, as ``segkit predict --ids`` writes them).

    Raises:
        SegkitError: ``classes`` is none of these.
    """
    from segkit.config import read_class_names
    from segkit.data import dataset_metas
    from segkit.data.registry import meta_for_classes
    from segkit.errors import SegkitError

    metas = dataset_metas()
    if classes in metas and metas[classes].classes:
        meta = metas[classes]
        hint = _values_hint(meta, None, False, f"--classes {classes}")
        return ScoreLabels(
            list(meta.classes), meta.groups_for(meta.classes), meta.ignore_index, hint=hint
        )
    if classes.isdigit():
        return ScoreLabels([str(i) for i in range(int(classes))])
    path = Path(classes)
    if path.suffix == ".pt" and path.is_file():
        return _checkpoint_labels(path, ids)
    if not path.is_file():
        named = ", ".join(n for n, m in metas.items() if m.classes)
        raise SegkitError(
            f"--classes {classes!r} is neither a data set with a fixed label set ({named}), a "
            "number, a checkpoint (.pt) nor a file of class names (one per line)."
        )
    names = read_class_names(path, f"--classes {classes}")
    meta = meta_for_classes(names)
    return ScoreLabels(names, meta.groups_for(names), meta.ignore_index)


def _checkpoint_labels(path: Path, ids: bool) -> ScoreLabels:
    """What a checkpoint's training recorded: its classes, groups, ignore index, and the label
    values its predictions are written in (none with ``ids``; a binary model's 0/255 is read
    as 0/1 anyway)."""
    from segkit.engine.checkpoint import recorded_classes

    names, meta = recorded_classes(path)
    reduce = bool((meta.labels or {}).get("reduce_zero_label")) and not ids
    own = meta.output_ids
    values = None if ids or reduce or own is None or list(own) == [0, 255] else tuple(own)
    hint = _values_hint(meta, values, ids)
    return ScoreLabels(names, meta.groups_for(names), meta.ignore_index, None, reduce, values, hint)


#: how the hints of :func:`_values_hint` name the two kinds of label file: a data set whose
#: files come in both kinds, told apart by its ``label_type`` option (Cityscapes), and others
_KINDS = {
    True: ("labelIds (label_type labelIds files)", "trainIds (label_type labelTrainIds files)"),
    False: ("the data set's own label values", "class ids"),
}


def _values_hint(meta: Any, values: tuple[int, ...] | None, ids: bool, who: str = "") -> str:
    """What to do when label files hold other values than a model (``who``: the data set
    named by ``--classes``) expects: ``--ids``, or the ``label_type`` of the files where the
    data set reads its files by one (Cityscapes' labelIds or labelTrainIds). Empty for a data
    set with one kind of label file."""
    from segkit.data import dataset_metas
    from segkit.errors import option

    registered = dataset_metas().get(meta.dataset or "")
    own = meta.output_ids or (registered.output_ids if registered is not None else None)
    if not own or list(own) == [0, 255] or (meta.labels or {}).get("reduce_zero_label"):
        return ""
    kind = (meta.labels or {}).get("label_type")
    typed = bool(kind) or "label_type" in ((registered.labels if registered else None) or {})
    own_files, id_files = _KINDS[typed]
    model = f"The model (trained on label_type {kind} files)" if kind else "The model"
    if values is not None:
        return (
            f" {model} writes {own_files}; if both folders hold {id_files}, as `segkit predict "
            f"--ids` writes them, pass {option('ids')}."
        )
    if ids:
        return (
            f" With {option('ids')} both folders are read as {id_files}; {own_files}, as "
            f"`segkit predict` writes them for this model, score without {option('ids')}."
        )
    return (
        f" {who or model} reads {id_files}; ground truth in {own_files} scores with --classes "
        "naming a checkpoint trained on such files."
    )


def labels_in_folders(gt_dir: str | Path, pred_dir: str | Path) -> ScoreLabels:
    """Without ``--classes``: the class count the label folders show, named as the one
    registered data set with that many classes when there is exactly one; 255 beside other
    labels in the ground truth is left out (a boundary label). The note says how.
    """
    from segkit.data import dataset_metas
    from segkit.metrics import label_values

    count, seen = label_values(gt_dir)  # seen: 255 beside other labels in the ground truth
    count = max(count, label_values(pred_dir)[0])
    fits = sorted(n for n, m in dataset_metas().items() if len(m.classes) == count > 2)
    found = class_labels(fits[0]) if len(fits) == 1 else ScoreLabels(list(map(str, range(count))))
    ignore = found.ignore_index if found.ignore_index is not None else seen
    if len(fits) == 1:
        note = f"scoring as {fits[0]!r}: its {count} classes (--classes chooses others)"
    elif fits:  # several data sets have that many classes: guessing one would mislabel the rest
        note = (
            f"scoring {count} classes found in the labels (data sets with {count} classes: "
            f"{', '.join(fits)}; name them with {' or '.join(f'--classes {n}' for n in fits)})"
        )
    else:
        note = f"scoring {count} classes found in the labels (--classes names them)"
    if seen is not None:
        note += f"; ground-truth value {ignore} left out (--ignore-index chooses another)"
    return ScoreLabels(found.names, found.groups, ignore, note)


def score(
    gt_dir: str | Path,
    pred_dir: str | Path,
    classes: str | None = None,
    ignore_index: int | None = None,
    ids: bool = False,
) -> tuple[dict[str, float], str | None]:
    """``segkit score``: score a folder of predicted label maps against ground truth.

    Args:
        gt_dir: folder of ground-truth label images.
        pred_dir: folder of predictions, paired by file name.
        classes: what the labels mean (:func:`class_labels`); None: what the folders show
            (:func:`labels_in_folders`).
        ignore_index: the ground-truth value to leave out; None: the data set's or
            checkpoint's recorded one (or 255 beside other labels when ``classes`` is None).
        ids: both folders hold class ids (``segkit predict --ids``; Cityscapes' labelTrainIds
            files), also for a checkpoint whose predictions are written in the data set's own
            label values (:func:`class_labels`).

    Returns:
        :func:`~segkit.metrics.score_folders`' dict, and the line saying how the classes were
        chosen (None when ``classes`` was given).
    """
    from segkit.metrics import score_folders

    if classes is None:
        labels = labels_in_folders(gt_dir, pred_dir)
    else:
        labels = class_labels(classes, ids)
    ignore = ignore_index if ignore_index is not None else labels.ignore_index
    result = score_folders(
        gt_dir,
        pred_dir,
        labels.names,
        labels.groups,
        ignore,
        reduce_zero_label=labels.reduce_zero_label,
        values=labels.values,
        hint=labels.hint,
    )
    return result, labels.note
