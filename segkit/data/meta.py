"""What segkit knows about a data set's labels and splits, in one place: :class:`DatasetMeta`.

Each dataset class declares one (like MMSegmentation's ``METAINFO``)::

    @register_dataset("my_set")
    class MySet(SegmentationDataset):
        meta = DatasetMeta(
            classes=("background", "left_eye", "right_eye"),
            flip_pairs=((1, 2),),
            groups={"eyes": (1, 2)},
        )

Training copies the plain-data part (:meth:`DatasetMeta.to_dict`: classes, colours, ignore
index, flip pairs, report groups, data set name, the label values predictions are written
in) into the model spec and so into every
checkpoint, together with the mean/std the images were normalised with (``spec.mean`` /
``spec.std``). ``evaluate``, ``predict``, ``export`` and ``score`` read it from there, so a
checkpoint behaves as training did without knowing the data set's code.

The callable parts stay with the class: ``split_group`` (sample id -> group, for a split that
keeps a group on one side, such as all views of one car), ``prepare`` (a conversion run by
``segkit prepare``), ``training_folder`` (the folder to train on when ``data.prepare_size`` is
set, prepared first when needed) and ``synth`` (a synthetic set in the real layout, for
``segkit synth``). A step's options are the parameters of its signature that have a default;
``segkit prepare`` / ``segkit synth`` pass it only those the user gave, and refuse others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segkit.errors import ConfigError

#: ImageNet statistics that torchvision/timm encoders were trained with (RGB, 0..1 scale).
#: segkit keeps them itself: smp 0.6's get_preprocessing_params downloads a config file.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: keys of :meth:`DatasetMeta.to_dict`, the part that travels in a checkpoint
RECORDED = (
    "dataset",
    "classes",
    "palette",
    "ignore_index",
    "flip_pairs",
    "groups",
    "multilabel",
    "thresholds",
    "input",
    "output_ids",
    "labels",
)


@dataclass(frozen=True)
class DatasetMeta:
    """A data set's labels, report groups and split rule.

    Attributes:
        classes: every label value's name, background first (empty: the adapter decides,
            e.g. the folder data set's ``classes`` option).
        palette: one RGB colour per class for overlays (None: segkit's palette).
        ignore_index: a label value marking pixels to leave out (the loss and the metrics
            skip it); ``loss.ignore_index`` in a config overrides it.
        flip_pairs: class id pairs a horizontal flip swaps (left/right eye); None: found
            from left/right class names.
        groups: report groups, name -> class ids; their F1/IoU is reported beside the
            per-class scores (e.g. ``{"eyes": (4, 5)}``).
        dataset: the registered name (filled in by ``register_dataset``).
        source: where the real data comes from (shown when ``data.root`` does not exist).
        split_group: ``fn(sample_id) -> group key``; a held-out validation split keeps each
            group on one side (None: samples are split one by one).
        prepare: ``fn(src, dst, overwrite=False, ...)`` converting the release into what the
            adapter reads (``segkit prepare``); returns the message to show, or
            ``(message, notes)``. Its options are its parameters with defaults (Carvana's:
            ``size``, ``workers``, ``overwrite``, ``threshold``, ``soft``); the command line
            passes only the ones given and refuses the others, naming these.
        training_folder: ``fn(root, dst, size) -> folder`` for ``data.prepare_size``: the
            folder to train on, prepared into ``dst`` first when ``root`` is not prepared at
            ``size``.
        synth: ``fn(dst, n=..., seed=..., overwrite=False, ...)`` writing a synthetic set in
            the real layout (``segkit synth``; ``n`` and ``seed`` are always given, other
            options as for ``prepare``); returns the message to show.
        mean: the data set's own per-channel mean for ``augment.normalize: dataset``, on the
            input scale (:mod:`segkit.data.bands`: 0-1 for 8-bit and 16-bit images); a config's
            ``augment.mean`` replaces it.
        std: the data set's own per-channel std.
        multilabel: classes may overlap: ``classes`` names one binary mask each (no
            background), the mask is ``C x H x W`` 0/1, the model has one sigmoid output per
            class, and prediction writes one mask per class (docs/data.md, "Multi-label").
        thresholds: multi-label only: the probability above which a pixel belongs to each
            class (one per class, or None: 0.5 each); evaluate and predict use them.
        input: how its images are read (``BandReader.to_dict()``: bands, NaN fill); None:
            8-bit RGB. Set per instance by the data set; prediction reads images the same way.
        output_ids: the value each class id is written as in the data set's own label files
            (class id ``i`` -> ``output_ids[i]``, 0..255), for a data set that renumbers its
            labels on load (Cityscapes: trainId -> labelId); prediction writes its label PNGs
            in these values unless asked for plain class ids. None: class ids as they are.
        labels: how an annotation file's own labels became class ids, for the record:
            ``{"rule": text, <what>: {label: class id}}`` (COCO's category ids, YOLO's class
            indices, labelme's label names); set per instance by those readers.
    """

    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int | None = None
    flip_pairs: tuple[tuple[int, int], ...] | None = None
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    dataset: str | None = None
    source: str = ""
    split_group: Callable[[str], str] | None = None
    prepare: Callable[..., Any] | None = None
    training_folder: Callable[..., Any] | None = None
    synth: Callable[..., Any] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    multilabel: bool = False
    thresholds: tuple[float, ...] | None = None
    input: Mapping[str, Any] | None = None
    output_ids: tuple[int, ...] | None = None
    labels: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise the containers once, here
        fix(self, "classes", tuple(str(c) for c in self.classes))
        if self.palette is not None:
            fix(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        if self.flip_pairs is not None:
            fix(self, "flip_pairs", tuple((int(a), int(b)) for a, b in self.flip_pairs))
        fix(self, "groups", {str(k): tuple(int(i) for i in v) for k, v in self.groups.items()})
        fix(self, "multilabel", bool(self.multilabel))
        if self.thresholds is not None:
            fix(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if self.output_ids is not None:
            fix(self, "output_ids", tuple(int(i) for i in self.output_ids))
        self.check()

    def check(self) -> None:
        """Raise ConfigError when the declared values contradict each other."""
        n = len(self.classes)
        if self.palette is not None and n and len(self.palette) != n:
            raise ConfigError(
                f"Dataset {self.dataset!r}: {len(self.palette)} palette colours for {n} classes; "
                "give one RGB colour per class."
            )
        ids = [i for pair in self.flip_pairs or () for i in pair]
        ids += [i for members in self.groups.values() for i in members]
        bad = [i for i in ids if i < 0 or (n and i >= n)]
        if bad:
            raise ConfigError(
                f"Dataset {self.dataset!r}: flip pairs / groups name class ids {sorted(set(bad))} "
                f"outside 0..{n - 1} of its {n} classes."
            )
        if self.thresholds is not None:
            if not self.multilabel:
                raise ConfigError(
                    f"Dataset {self.dataset!r}: thresholds are for multi-label data sets only; "
                    "leave them out (a binary model's threshold is a prediction option)."
                )
            check_thresholds(self.thresholds, n or len(self.thresholds), "thresholds")
        self._check_output_ids(n)

    def _check_output_ids(self, n: int) -> None:
        ids = self.output_ids
        if ids is None:
            return
        if self.multilabel or (n and len(ids) != n) or any(not 0 <= i <= 255 for i in ids):
            raise ConfigError(
                f"Dataset {self.dataset!r}: output_ids {list(ids)} must give one label value "
                f"0..255 per class ({n} classes), and only for a single-label data set; fix "
                "them, or leave them out to write class ids."
            )

    def replace(self, **changes: Any) -> DatasetMeta:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The part that travels in a checkpoint, as plain lists and dicts."""
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette] if self.palette is not None else None,
            "ignore_index": self.ignore_index,
            "flip_pairs": [list(p) for p in self.flip_pairs]
            if self.flip_pairs is not None
            else None,
            "groups": {k: list(v) for k, v in self.groups.items()},
            "multilabel": self.multilabel,
            "thresholds": list(self.thresholds) if self.thresholds is not None else None,
            "input": dict(self.input) if self.input is not None else None,
            "output_ids": list(self.output_ids) if self.output_ids is not None else None,
            "labels": dict(self.labels) if self.labels is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetMeta:
        """Rebuild the recorded part from :meth:`to_dict` output (unknown keys are ignored,
        so a newer checkpoint's extra entries do not stop an older reader)."""
        return cls(**{k: data[k] for k in RECORDED if data.get(k) is not None})

    def pairs_for(self, class_names: Sequence[str]) -> list[tuple[int, int]]:
        """The flip pairs for these class names: the declared ones, else found from names."""
        if self.flip_pairs is not None:
            return [tuple(p) for p in self.flip_pairs]  # type: ignore[misc]
        return flip_pairs_from_names(class_names)

    def groups_for(self, class_names: Sequence[str]) -> dict[str, list[int]] | None:
        """The report groups, or None when there are none (or they do not fit the classes)."""
        if not self.groups:
            return None
        if self.classes and list(self.classes) != list(class_names):
            return None  # the groups were declared for another label set (data.classes)
        return {k: list(v) for k, v in self.groups.items()}


def check_thresholds(
    thresholds: Sequence[float], classes: int, what: str = "threshold"
) -> tuple[float, ...]:
    """``thresholds`` as floats if there is one per class and each lies in [0, 1).

    Raises:
        ConfigError: the wrong count, or a value outside [0, 1).
    """
    values = tuple(float(t) for t in thresholds)
    if len(values) != classes:
        raise ConfigError(
            f"{what} {list(values)}: {len(values)} value(s) for {classes} classes; give one "
            "probability per class, in class order, or one value for all."
        )
    bad = [t for t in values if not 0.0 <= t < 1.0]
    if bad:
        raise ConfigError(
            f"{what} {list(values)}: each must be at least 0 and below 1, got {bad[0]}."
        )
    return values


def split_ids(
    ids: Sequence[str],
    val_fraction: float,
    seed: int,
    groups: Sequence[str] | None = None,
    group_word: str = "group",
) -> tuple[list[str], list[str]]:
    """Split sample ids into train/validation, keeping each group on one side when given.

    Without groups this is scikit-learn's ``train_test_split``; with groups its
    ``GroupShuffleSplit`` (``val_fraction`` is then the fraction of groups), so that near
    duplicates (the views of one car) never land on both sides.

    Returns:
        ``(train_ids, val_ids)``, each in the order of ``ids``; the same for the same seed.

    Raises:
        ValueError: ``val_fraction`` not in (0, 1), or too few samples or groups to split.
    """
    import numpy as np
    from sklearn.model_selection import GroupShuffleSplit, train_test_split  # slow: here

    from segkit.errors import DataError

    ids = list(ids)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if groups is None:
        train, val = train_test_split(ids, test_size=val_fraction, random_state=seed)
        keep = set(val)
        return [i for i in ids if i not in keep], [i for i in ids if i in keep]
    groups = list(groups)
    if len(set(groups)) < 2:
        raise DataError(
            f"Cannot split {len(ids)} image(s) by {group_word}: they show {len(set(groups))} "
            f"{group_word}(s). A split by {group_word} needs at least two {group_word}s; add data "
            "or use a separate val_split."
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(ids)), groups=groups))
    return [ids[i] for i in sorted(train_idx)], [ids[i] for i in sorted(val_idx)]


def training_normalization(
    normalize: str,
    model_mean: Sequence[float],
    model_std: Sequence[float],
    meta: DatasetMeta,
    given: tuple[Sequence[float], Sequence[float]] | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std that training normalises with, as ``augment.normalize`` chooses.

    ``model``: what the network expects (its spec); ``imagenet``: ImageNet statistics;
    ``none``: ``x / 255`` (for other images the input scale of :mod:`segkit.data.bands`);
    ``dataset``: the per-channel statistics of the data, ``given`` (the config's
    ``augment.mean`` / ``augment.std``, e.g. from ``segkit stats``), else the data set's
    declared ``mean``/``std``. The result is written into the model spec, the one place
    predict, evaluate and export read it from.

    Raises:
        ConfigError: an unknown choice; ``dataset`` without statistics; statistics given for
            another choice.
    """
    if given is not None and normalize != "dataset":
        raise ConfigError(
            f"augment.mean/augment.std are given but augment.normalize is {normalize!r}; they "
            "are used with augment.normalize=dataset. Set it, or remove them."
        )
    if normalize == "model":
        return tuple(model_mean), tuple(model_std)
    if normalize == "imagenet":
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    if normalize == "none":
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if normalize == "dataset":
        if given is not None:
            return tuple(float(v) for v in given[0]), tuple(float(v) for v in given[1])
        if meta.mean is None or meta.std is None:
            raise ConfigError(
                f"augment.normalize=dataset, but data set {meta.dataset!r} declares no mean/std. "
                "Compute them with `segkit stats CONFIG` and give augment.mean/augment.std, or "
                "use model, imagenet or none."
            )
        return tuple(meta.mean), tuple(meta.std)
    raise ConfigError(
        f"augment.normalize must be model, imagenet, none or dataset, got {normalize!r}."
    )


def flip_pairs_from_names(class_names: Sequence[str] | None) -> list[tuple[int, int]]:
    """Class index pairs that swap under a horizontal flip, found from left/right names.

    Prefixes and suffixes both count: ``lb``/``rb`` and ``le``/``re`` (Helen),
    ``left_eye``/``right_eye``, ``Left Lung``/``Right Lung``, ``lung_left``/``lung_right``,
    ``eye_l``/``eye_r``. A one-letter suffix counts only after ``_``, ``-`` or a space, so that
    words such as towel/tower are not paired. Names are compared without case.
    """
    if not class_names:
        return []
    index = {name.lower(): i for i, name in enumerate(class_names)}
    pairs = []
    for name, i in index.items():
        for left, right in (("left", "right"), ("l", "r")):
            partners = []
            if name.startswith(left) and len(name) > len(left):
                partners.append(right + name[len(left) :])
            stem = name[: -len(left)]
            if name.endswith(left) and stem and (len(left) > 1 or stem[-1] in "_- "):
                partners.append(stem + right)
            found = [index[p] for p in partners if p in index]
            if found:
                pairs.append((i, found[0]))
                break
    return pairs
