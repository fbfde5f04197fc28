"""Segmentation metrics over a whole evaluation set.

:class:`ConfusionMatrix` accumulates pixel counts with one ``bincount`` per batch; per-class
F1 (= Dice), IoU, precision and recall, class-group F1 and the means follow from the
summed matrix (not from an average of per-image scores); :class:`MultiLabelConfusion` does
the same per class for overlapping classes (one binary matrix each). :func:`soft_dice` and
:class:`SoftDiceAccumulator` give the binary soft Dice the Carvana tutorial reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segkit.errors import DataError, option

LABEL_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")
#: the scores reported per class, ``<score>_<class name>``, in this order
PER_CLASS = ("f1", "iou", "precision", "recall")
#: the scores of a whole set, after the per-class and group ones
SUMMARY = ("mean_f1", "miou", "accuracy")
#: a binary task's soft Dice (:class:`SoftDiceAccumulator`), after the summary
SOFT_DICE = ("soft_dice", "soft_dice_global")
#: what :func:`metric_names` takes as ``task``
TASKS = ("binary", "multiclass", "multilabel")

# ---------------------------------------------------------------------------- functional


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0`` (the score is undefined there)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores_from_matrix(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``f1``, ``iou``, ``precision``, ``recall`` from a confusion matrix.

    Rows are truth, columns prediction. A score whose denominator is 0 (class absent from
    truth and prediction, or never predicted for precision) is NaN.
    """
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(axis=0) - tp
    fn = m.sum(axis=1) - tp
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def group_f1(matrix: np.ndarray, classes: Sequence[int]) -> float:
    """F1 of a class group: ``2·|G∩P| / (|G| + |P|)`` with G, P the unions of its classes.

    A confusion between two classes of the group (left vs right eye) counts as correct.
    """
    m = np.asarray(matrix, dtype=np.float64)
    idx = list(classes)
    both = m[np.ix_(idx, idx)].sum()
    denominator = m[idx, :].sum() + m[:, idx].sum()
    return float(2 * both / denominator) if denominator > 0 else math.nan


def _as_labels(x: Any, name: str) -> torch.Tensor:
    """A torch tensor of integer labels (numpy arrays and lists are converted)."""
    if not isinstance(x, torch.Tensor):
        arr = np.asarray(x)
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise TypeError(f"The {name} must hold integer labels, got dtype {arr.dtype}.")
        x = torch.from_numpy(arr.astype(np.int64, copy=False))
    if x.is_floating_point() or x.is_complex():
        raise TypeError(f"The {name} must hold integer labels, got dtype {x.dtype}.")
    return x


class ConfusionMatrix:
    """Pixel confusion matrix accumulated over a whole evaluation set.

    Args:
        num_classes: number of label values ``0..num_classes-1``.
        ignore_index: target value whose pixels are not counted.
        class_names: names used in :meth:`compute`'s keys (default ``"0"``, ``"1"``, ...).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        class_names: Sequence[str] | None = None,
    ):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = _check_names(class_names, num_classes)
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @classmethod
    def from_matrix(cls, matrix: Any, **kwargs: Any) -> ConfusionMatrix:
        """A ConfusionMatrix holding ``matrix`` (e.g. one all-reduced across processes)."""
        m = torch.as_tensor(np.asarray(matrix) if not torch.is_tensor(matrix) else matrix)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"A confusion matrix must be square, got shape {tuple(m.shape)}.")
        cm = cls(int(m.shape[0]), **kwargs)
        cm.matrix += m.detach().to("cpu", torch.int64)
        return cm

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.matrix.zero_()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts to this matrix (returns self)."""
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"Cannot merge a {other.num_classes}-class confusion matrix into a "
                f"{self.num_classes}-class one."
            )
        self.matrix += other.matrix
        return self

    def update(self, pred: Any, target: Any) -> None:
        """Count one batch: ``pred`` and ``target`` are label maps of the same shape.

        Torch tensors are counted on their device with one ``bincount``; numpy arrays on the CPU.

        Raises:
            ValueError: shapes differ, or labels fall outside ``0..num_classes-1``.
            TypeError: floating-point input (pass ``logits.argmax(1)``, not scores).
        """
        pred, target = _as_labels(pred, "prediction"), _as_labels(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"Prediction shape {tuple(pred.shape)} and target shape {tuple(target.shape)} "
                "differ; pass label maps of the same size (argmax over classes first)."
            )
        pred = pred.to(target.device).reshape(-1).long()
        target = target.reshape(-1).long()
        c = self.num_classes
        keep = None if self.ignore_index is None else target != self.ignore_index
        counted = target if keep is None else torch.where(keep, target, 0)
        for name, x in (("prediction", pred), ("target", counted)):
            lo, hi = torch.aminmax(x) if x.numel() else (0, 0)
            if int(lo) < 0 or int(hi) >= c:
                values = torch.unique(x[(x < 0) | (x >= c)])[:10].tolist()
                raise ValueError(
                    f"The {name} holds label values {values} outside 0..{c - 1} "
                    f"(num_classes={c}, ignore_index={self.ignore_index}). Check the class "
                    "count, or pass ignore_index for a 'don't care' label."
                )
        index = counted * c + pred
        if keep is not None:
            index = torch.where(keep, index, c * c)  # ignored pixels go to a dropped bin
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c]
        self.matrix += counts.reshape(c, c).cpu()

    def compute(
        self,
        groups: Mapping[str, Sequence[int]] | None = None,
        class_names: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """Scores as a flat dict.

        Keys: ``f1_<name>``, ``iou_<name>``, ``precision_<name>``, ``recall_<name>`` per class,
        ``f1_<group>`` per group, ``mean_f1`` and ``miou`` (means over classes whose score is
        defined, background included), ``accuracy``. Undefined scores are NaN.

        Args:
            groups: group name -> class indices, e.g. ``{"eyes": [4, 5]}``.
            class_names: names for the keys (default: the constructor's, else indices).
        """
        names = _check_names(class_names, self.num_classes) if class_names else self.class_names
        m = self.matrix.numpy()
        total = m.sum()
        if total == 0:
            raise ValueError("The confusion matrix is empty: call update() with some pixels first.")
        scores = scores_from_matrix(m)
        result: dict[str, float] = {}
        for metric in PER_CLASS:
            for name, value in zip(names, scores[metric]):
                result[f"{metric}_{name}"] = float(value)
        for group, classes in _check_groups(groups, self.num_classes, names).items():
            result[f"f1_{group}"] = group_f1(m, classes)
        result["mean_f1"] = _nanmean(scores["f1"])
        result["miou"] = _nanmean(scores["iou"])
        result["accuracy"] = float(np.trace(m) / total)
        return result


class MultiLabelConfusion:
    """One binary confusion matrix per class, for classes that may overlap (multi-label).

    ``matrix[c]`` is class ``c``'s ``2 x 2`` matrix (rows truth, columns prediction: absent,
    present), summed over every pixel; the scores follow from it as for two classes.

    Args:
        num_classes: number of classes (channels).
        class_names: names used in :meth:`compute`'s keys (default ``"0"``, ``"1"``, ...).
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
        self.num_classes = num_classes
        self.class_names = _check_names(class_names, num_classes)
        self.matrix = torch.zeros(num_classes, 2, 2, dtype=torch.int64)

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.matrix.zero_()

    def update(self, pred: Any, target: Any) -> None:
        """Count one batch: ``pred`` and ``target`` are 0/1 masks ``N x C x H x W``.

        Raises:
            ValueError: shapes differ, the channel count is not ``num_classes``, or values
                other than 0 and 1.
        """
        pred, target = _as_labels(pred, "prediction"), _as_labels(target, "target")
        c = self.num_classes
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != c:
            raise ValueError(
                f"Expected 0/1 prediction and target N x {c} x H x W, got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}."
            )
        pred, target = pred.to(target.device).long(), target.long()
        for name, x in (("prediction", pred), ("target", target)):
            if x.numel() and (int(x.min()) < 0 or int(x.max()) > 1):
                raise ValueError(f"The multi-label {name} must hold 0 and 1 only.")
        channel = torch.arange(c, device=target.device).view(1, c, 1, 1)
        index = (channel * 4 + target * 2 + pred).reshape(-1)
        self.matrix += torch.bincount(index, minlength=4 * c).reshape(c, 2, 2).cpu()

    def compute(self, groups: Mapping[str, Sequence[int]] | None = None) -> dict[str, float]:
        """Scores as a flat dict with :meth:`ConfusionMatrix.compute`'s keys.

        Per class ``f1_<name>``, ``iou_<name>``, ``precision_<name>``, ``recall_<name>`` (of
        the class being present); ``mean_f1`` and ``miou`` average the classes whose score is
        defined; ``accuracy`` is the mean over classes of the share of pixels right. Groups
        are not defined for overlapping classes and are refused.
        """
        if groups:
            raise ValueError("Report groups are not defined for multi-label classes.")
        m = self.matrix.numpy()
        if m.sum() == 0:
            raise ValueError("The confusion matrix is empty: call update() with some pixels first.")
        per_class = [scores_from_matrix(mc) for mc in m]
        result: dict[str, float] = {}
        for metric in PER_CLASS:
            for name, scores in zip(self.class_names, per_class):
                result[f"{metric}_{name}"] = float(scores[metric][1])
        result["mean_f1"] = _nanmean(np.array([s["f1"][1] for s in per_class]))
        result["miou"] = _nanmean(np.array([s["iou"][1] for s in per_class]))
        result["accuracy"] = float(np.mean([np.trace(mc) / mc.sum() for mc in m]))
        return result


def metric_names(
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[int]] | None = None,
    task: str = "multiclass",
) -> list[str]:
    """The keys an evaluation's scores hold for this configuration, in their order.

    ``<score>_<class>`` for each of :data:`PER_CLASS`, ``f1_<group>`` per group, then
    :data:`SUMMARY`; a binary task adds :data:`SOFT_DICE`. This is what
    :meth:`ConfusionMatrix.compute` (with :class:`SoftDiceAccumulator` for ``"binary"``) and
    :meth:`MultiLabelConfusion.compute` (``"multilabel"``) return, known before any pixel
    is counted.

    Args:
        class_names: one name per class (a binary task: two, background first).
        groups: group name -> class indices (not for ``"multilabel"``).
        task: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.

    Raises:
        ValueError: an unknown task, a binary task without two names, groups for a
            multi-label task, or groups ``compute()`` would refuse.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")
    if task == "binary" and len(class_names) != 2:
        raise ValueError(f"A binary task has 2 class names, got {list(class_names)}.")
    if task == "multilabel" and groups:
        raise ValueError("Report groups are not defined for multi-label classes.")
    names = _check_names(class_names, len(class_names))
    keys = [f"{metric}_{name}" for metric in PER_CLASS for name in names]
    keys += [f"f1_{group}" for group in _check_groups(groups, len(names), names)]
    keys += SUMMARY
    return keys + list(SOFT_DICE) if task == "binary" else keys


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _check_names(names: Sequence[str] | None, num_classes: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(num_classes)]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names {names} given for {num_classes} classes.")
    return names


def _check_groups(
    groups: Mapping[str, Sequence[int]] | None, num_classes: int, names: Sequence[str]
) -> dict[str, list[int]]:
    out = {}
    for group, classes in (groups or {}).items():
        idx = [int(c) for c in classes]
        bad = [c for c in idx if not 0 <= c < num_classes]
        if bad or not idx:
            raise ValueError(
                f"Group {group!r} lists classes {list(classes)}; each must be in 0..{num_classes - 1}."
            )
        if group in names:
            raise ValueError(f"Group name {group!r} is also a class name; rename the group.")
        out[str(group)] = idx
    return out


def results_table(
    result: Mapping[str, float],
    class_names: Sequence[str],
    groups: Mapping[str, Sequence[int]] | None = None,
) -> Any:
    """A pandas DataFrame: one row per class then per group; columns f1, iou, precision, recall."""
    import pandas as pd

    rows = []
    for name in list(class_names) + list(groups or {}):
        row = {"name": name, "kind": "class" if name in class_names else "group"}
        for metric in PER_CLASS:
            row[metric] = result.get(f"{metric}_{name}", math.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("name")


def format_f1_lines(result: Mapping[str, float], digits: int = 4) -> str:
    """The tutorial's report: ``f1_<class>=0.9123`` lines, each class then each group."""
    return "\n".join(f"{k}={v:.{digits}f}" for k, v in result.items() if k.startswith("f1_"))


# ---------------------------------------------------------------------- folder scoring


def _read_label(path: Path, binary: bool) -> np.ndarray:
    """A label map read as training reads it (palettes, 16-bit); binary: 255 counts as 1."""
    from segkit.data.io import map_255_to_1, read_mask

    labels = read_mask(path)
    if binary and labels.dtype == np.uint8 and labels.size and labels.max() == 255:
        labels = map_255_to_1(labels)
    return labels.astype(np.int64)


#: file-name parts that say which side of a pair a file is (Helen: image_N / label_N, and
#: <name>_image / <name>_label); pairing ignores them
ROLE_PREFIXES = ("image_", "label_", "mask_")
ROLE_SUFFIXES = ("_image", "_label", "_mask")


def pair_key(stem: str) -> str:
    """The name two files of one sample share: ``label_7`` and ``image_7`` both give ``7``."""
    for prefix in ROLE_PREFIXES:
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    for suffix in ROLE_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


#: pictures ``segkit predict`` writes beside ``<name>.png`` (``--overlay``, ``--color``)
PICTURE_SUFFIXES = ("_overlay", "_color")


def _label_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"Label folder {str(folder)!r} does not exist or is not a folder.")
    paths = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in LABEL_SUFFIXES]
    stems = {p.stem for p in paths}
    paths = [  # an overlay or colour map beside its label map is not a label map
        p
        for p in paths
        if not any(p.stem.removesuffix(s) in stems - {p.stem} for s in PICTURE_SUFFIXES)
    ]
    if not paths:
        inner = [folder / n for n in ("labels", "masks") if (folder / n).is_dir()]
        hint = f" It holds {inner[0].name}/: pass {str(inner[0])!r}." if inner else ""
        raise DataError(
            f"Label folder {str(folder)!r} holds no label images ({LABEL_SUFFIXES}).{hint}"
        )
    files: dict[str, Path] = {}
    for path in paths:
        key = pair_key(path.stem)
        if key in files:
            raise DataError(
                f"Label folder {str(folder)!r} holds two files for sample {key!r}: "
                f"{files[key].name} and {path.name}. Keep one label map per sample there."
            )
        files[key] = path
    return files


def count_classes(*folders: str | Path) -> int:
    """The class count label folders show: their largest label value + 1 (at least 2)."""
    return label_values(*folders)[0]


def label_values(*folders: str | Path) -> tuple[int, int | None]:
    """The class count label folders show and the ignore label they hold, if any.

    The count is the largest label value + 1 (at least 2). 255 beside labels other than 0
    is an ignore label (a boundary, as in Pascal VOC: ``(count, 255)``, 255 not counted); 0/255 alone is
    a binary mask (``(2, None)``).
    """
    from segkit.data.io import read_mask

    largest, ignore = 1, None
    for folder in folders:
        for path in _label_files(Path(folder)).values():
            present = np.flatnonzero(np.bincount(read_mask(path).ravel(), minlength=256))
            if present.size and present[-1] == 255:
                present = present[:-1]
                if present.size and present[-1] > 0:
                    ignore = 255
            largest = max(largest, int(present[-1]) if present.size else 0)
    return largest + 1, ignore


def _outside_message(
    gt_path: Path, gt: np.ndarray, classes: int, ignore: int | None, hint: str = ""
) -> str:
    """What to do about ground-truth labels outside ``0..classes - 1`` (None: there are none);
    ``hint`` (which label files to use) replaces the generic advice."""
    bad = np.unique(gt[(gt >= classes) & (gt != (-1 if ignore is None else ignore))])
    if not bad.size:
        return ""
    value = int(bad[-1])
    found = (
        f"Ground truth {str(gt_path)!r} holds label values {bad[:10].tolist()} outside "
        f"0..{classes - 1} ({classes} classes, ignore index {ignore})."
    )
    if hint:
        return found + hint
    return (
        f"{found} If {value} marks pixels to "
        f"leave out (a boundary), pass {option('ignore_index', value)}, or "
        f"{option('classes', 'DATASET')} / a checkpoint that records it; else give the class "
        f"count with {option('classes', 'N')}."
    )


def own_values(
    labels: np.ndarray,
    values: Sequence[int],
    ignore_index: int | None,
    path: str | Path = "<array>",
    what: str = "Labels",
    hint: str = "",
) -> np.ndarray:
    """Class ids of a label map in a data set's own values, class ``i`` stored as ``values[i]``.

    With ``ignore_index`` (ground truth) the other values up to the largest of ``values`` are
    left out as ``ignore_index`` (Cityscapes' labelIds without a trainId); without it
    (predictions, which hold ``values`` only) they are errors, as is any value above.

    Raises:
        DataError: a value that is none of these, naming ``what``, the file and the values;
            ``hint`` is appended.
    """
    top = max(values)
    table = np.full(top + 1, -1, np.int64)
    if ignore_index is not None:
        table[:] = ignore_index
    table[list(values)] = np.arange(len(values))
    inside = labels <= top
    out = np.where(inside, table[np.minimum(labels, top)], -1)
    if (out < 0).any():
        bad = np.unique(labels[out < 0])
        shown = ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")
        rule = f"0..{top}; its classes are {shown}" if ignore_index is not None else shown
        raise DataError(
            f"{what} {str(path)!r} holds values {bad[:10].tolist()} that are none of the "
            f"model's label values ({rule}).{hint}"
        )
    return out


def _paired_label_files(gt_dir: Path, pred_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The label files of both folders by stem, roles aside; files without a partner are a
    DataError naming up to 5 of them on each side."""
    gt_files, pred_files = _label_files(gt_dir), _label_files(pred_dir)
    no_pred = sorted(set(gt_files) - set(pred_files))
    no_gt = sorted(set(pred_files) - set(gt_files))
    if no_pred or no_gt:
        parts = []
        if no_pred:
            named = [gt_files[k].name for k in no_pred[:5]]
            parts.append(f"{len(no_pred)} in {str(gt_dir)!r} have no prediction {named}")
        if no_gt:
            named = [pred_files[k].name for k in no_gt[:5]]
            parts.append(f"{len(no_gt)} in {str(pred_dir)!r} have no ground truth {named}")
        raise DataError(f"Label files do not pair up by name: {'; '.join(parts)}.")
    return gt_files, pred_files


def score_folders(
    gt_dir: str | Path,
    pred_dir: str | Path,
    classes: int | Sequence[str],
    groups: Mapping[str, Sequence[int]] | None = None,
    ignore_index: int | None = None,
    *,
    reduce_zero_label: bool = False,
    values: Sequence[int] | None = None,
    hint: str = "",
) -> dict[str, float]:
    """Score a folder of predicted label images against ground truth, paired by file name.

    Names pair when they are equal once a role prefix or suffix is dropped (``image_``,
    ``label_``, ``mask_``, ``_image``, ``_label``, ``_mask``), so ``segkit predict``'s
    ``image_7.png`` scores against Helen's ``label_7.png``.

    Args:
        gt_dir: folder of ground-truth label images (PNG etc., one channel of class indices).
        pred_dir: folder of predictions with the same file names (stems, roles aside).
        classes: the number of classes or their names.
        groups: class groups, e.g. ``{"eyes": [4, 5]}``.
        ignore_index: ground-truth value left out.
        reduce_zero_label: both folders hold the data set's own labels of a model trained
            with ``reduce_zero_label`` (0 = unlabelled, left out; ``v`` -> class ``v - 1``).
        values: both folders hold the data set's own label values, class ``i`` as
            ``values[i]`` (a checkpoint's ``output_ids``: Cityscapes' labelIds); the ground
            truth's other values up to the largest are left out as ``ignore_index`` (labelIds
            without a trainId), predictions hold ``values`` only (:func:`own_values`).
        hint: appended to the error about values that are not the expected ones.

    Returns:
        :meth:`ConfusionMatrix.compute`'s dict plus ``num_images``.

    Raises:
        DataError: a folder is missing or empty, files lack a partner (up to 5 named),
            sizes differ, or labels are out of range (the file is named).
    """
    gt_files, pred_files = _paired_label_files(Path(gt_dir), Path(pred_dir))
    names = None if isinstance(classes, int) else [str(c) for c in classes]
    cm = ConfusionMatrix(classes if isinstance(classes, int) else len(names), ignore_index, names)
    binary = cm.num_classes == 2 and ignore_index != 255  # 0/255 masks, as training reads them
    for stem, gt_path in gt_files.items():
        gt, pred = _read_label(gt_path, binary), _read_label(pred_files[stem], binary)
        if reduce_zero_label:
            from segkit.data.base import reduce_zero_label_mask

            gt, pred = reduce_zero_label_mask(gt), reduce_zero_label_mask(pred)
        if values is not None:
            gt = own_values(gt, values, ignore_index, gt_path, "Ground truth", hint)
            pred = own_values(pred, values, None, pred_files[stem], "Prediction", hint)
        if gt.shape != pred.shape:
            raise DataError(
                f"Prediction {str(pred_files[stem])!r} is {pred.shape[1]}x{pred.shape[0]} but "
                f"ground truth {str(gt_path)!r} is {gt.shape[1]}x{gt.shape[0]}."
            )
        outside = _outside_message(gt_path, gt, cm.num_classes, ignore_index, hint)
        if outside:
            raise DataError(outside)
        if hint and pred.size and int(pred.max()) >= cm.num_classes:
            bad = np.unique(pred[pred >= cm.num_classes])[:10].tolist()
            raise DataError(
                f"Prediction {str(pred_files[stem])!r} holds label values {bad} outside "
                f"0..{cm.num_classes - 1} ({cm.num_classes} classes).{hint}"
            )
        try:
            cm.update(pred, gt)
        except ValueError as exc:
            raise DataError(f"{str(pred_files[stem])!r} vs {str(gt_path)!r}: {exc}") from None
    result = cm.compute(groups)
    result["num_images"] = len(gt_files)
    return result


# ------------------------------------------------------------------- binary soft Dice


def soft_dice(probs: Any, target: Any, smooth: float = 1.0, squared: bool = True) -> torch.Tensor:
    """Per-image binary soft Dice ``(2·Σ(p·t) + s) / (Σp² + Σt² + s)``.

    Args:
        probs: foreground probabilities ``N x H x W`` or ``N x 1 x H x W``.
        target: 0/1 masks of the same shape.
        smooth: smoothing term (an empty mask predicted empty scores 1).
        squared: ``False`` uses the ``Σp + Σt`` denominator.

    Returns:
        ``N`` float32 scores.
    """
    p = torch.as_tensor(probs).float()
    t = torch.as_tensor(target).float().to(p.device)
    if p.shape != t.shape:
        raise ValueError(f"probs shape {tuple(p.shape)} and target shape {tuple(t.shape)} differ.")
    if p.ndim < 2:
        raise ValueError(f"Expected a batch N x H x W, got shape {tuple(p.shape)}.")
    p, t = p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)
    inter = (p * t).sum(1)
    den = (p * p).sum(1) + (t * t).sum(1) if squared else p.sum(1) + t.sum(1)
    return (2 * inter + smooth) / (den + smooth)


class SoftDiceAccumulator:
    """Binary soft Dice over an evaluation set.

    ``compute()`` gives ``soft_dice`` (mean of per-image scores, as the Carvana tutorial and
    the Kaggle leaderboard report it) and ``soft_dice_global`` (pooled sums over all pixels).
    """

    def __init__(self, smooth: float = 1.0, squared: bool = True):
        self.smooth = smooth
        self.squared = squared
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.score_sum = 0.0
        self.count = 0
        self.intersection = 0.0
        self.denominator = 0.0

    def update(self, probs: Any, target: Any) -> torch.Tensor:
        """Add a batch; returns its per-image scores."""
        scores = soft_dice(probs, target, self.smooth, self.squared)
        p = torch.as_tensor(probs).float()
        t = torch.as_tensor(target).float().to(p.device)
        self.score_sum += float(scores.sum())
        self.count += scores.numel()
        self.intersection += float((p * t).sum())
        den = (p * p).sum() + (t * t).sum() if self.squared else p.sum() + t.sum()
        self.denominator += float(den)
        return scores

    def add_image(self, intersection: float, denominator: float) -> None:
        """Add one image from its sums ``Σ(p·t)`` and denominator (``Σp² + Σt²``, or
        ``Σp + Σt`` when not squared), e.g. summed over the parts it was scored in."""
        self.score_sum += (2 * intersection + self.smooth) / (denominator + self.smooth)
        self.count += 1
        self.intersection += intersection
        self.denominator += denominator

    def compute(self) -> dict[str, float]:
        """``{"soft_dice": mean per image, "soft_dice_global": pooled}``."""
        if self.count == 0:
            raise ValueError("SoftDiceAccumulator is empty: call update() with a batch first.")
        pooled = (2 * self.intersection + self.smooth) / (self.denominator + self.smooth)
        return dict(zip(SOFT_DICE, (self.score_sum / self.count, pooled)))
