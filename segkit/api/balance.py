"""Class balance from a config: ``loss.class_weights`` by rule, ``data.sampler``, what a run
records of them (``class_balance.json``), and ``segkit stats``'s class table.

The counting and the rules are :mod:`segkit.data.balance`'s; this module decides, from the
config, what to count, prints the line a run starts with, and reuses a resumed run's record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segkit.api.data import training_set
from segkit.config import Config
from segkit.data.balance import (
    AUTO_RULE,
    BALANCE_FILE,
    SAMPLERS,
    WEIGHT_RULES,
    ClassCounts,
    check_sampler,
    check_weight_rule,
    class_weights,
    count_classes,
    image_weights,
)

#: what checkpoints keep of that record (not the per-image weights)
CHECKPOINT_KEYS = ("rule", "weights", "sampler", "ignore_index", "images", "classes")


def check_balance_config(cfg: Config) -> tuple[str | None, str | None]:
    """The weighting rule (``auto`` resolved) and the sampler a config asks for; None for
    each it does not (``loss.class_weights`` a list or null; ``data.sampler`` null).

    Raises:
        ConfigError: an unknown rule or sampler, naming the value and the choices.
    """
    weights = cfg.loss.class_weights
    rule = check_weight_rule(weights) if isinstance(weights, str) else None
    return rule, check_sampler(cfg.data.sampler)


@dataclass(frozen=True)
class Balance:
    """A run's class weights and image draw weights, and the record that explains them.

    Attributes:
        rule: the weighting rule (None: ``loss.class_weights`` was given or unset).
        weights: the rule's loss weights, one per class (None without a rule).
        sampler: ``data.sampler`` (None: plain shuffling).
        image_weights: the sampler's weight of each training image, in the data set's order.
        record: what ``class_balance.json`` holds (JSON data).
    """

    rule: str | None
    weights: list[float] | None
    sampler: str | None
    image_weights: list[float] | None
    record: dict[str, Any]

    def lines(self) -> list[str]:
        """What a run prints when it starts: the rule and its weights, the sampler's spread."""
        out = []
        where = f"(recorded in {BALANCE_FILE})"
        if self.rule is not None and self.weights is not None:
            names = [row["name"] for row in self.record["classes"]]
            weights = ", ".join(f"{n} {w:.3g}" for n, w in zip(names, self.weights))
            out.append(
                f"class weights: {self.rule} from {self.record['images']} training label maps: "
                f"{weights} {where}"
            )
        if self.sampler is not None and self.image_weights:
            low, high = min(self.image_weights), max(self.image_weights)
            out.append(
                f"sampler {self.sampler}: each epoch draws {len(self.image_weights)} training "
                f"images with replacement, {low:.2f}x to {high:.2f}x as often as shuffling would "
                f"(the mean {AUTO_RULE} weight of their pixels) {where}"
            )
        return out


def ids_digest(ids: Any) -> str:
    """A short fingerprint of the training images' ids (which images were counted)."""
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]


def run_balance(cfg: Config, train_set: Any, resume: bool = False) -> Balance | None:
    """The class weights and image weights a config asks for, counted on ``train_set``'s
    labels; None when it asks for neither.

    ``resume``: reuse the run folder's ``class_balance.json`` when it was counted on these
    training images, for the same classes, ignore label, rule and sampler, instead of
    counting again (the weights are then exactly the run's).

    Raises:
        ConfigError: see :func:`check_balance_config`; a multi-label or soft-target data set.
        DataError: an unreadable label map, or no labelled pixel at all.
    """
    rule, sampler = check_balance_config(cfg)
    if rule is None and sampler is None:
        return None
    ids = [s.id for s in train_set.samples]
    if resume and (kept := _kept(cfg, train_set, ids, rule, sampler)) is not None:
        return kept
    counts = count_classes(train_set)
    weights = class_weights(counts, rule) if rule is not None else None
    images = None
    if sampler is not None:
        images = image_weights(counts, class_weights(counts, AUTO_RULE)).tolist()
    return Balance(rule, weights, sampler, images, _record(counts, rule, weights, sampler, images))


def _record(
    counts: ClassCounts,
    rule: str | None,
    weights: list[float] | None,
    sampler: str | None,
    images: list[float] | None,
) -> dict[str, Any]:
    """``class_balance.json``: the counts, the rule with its definition, the weights."""
    rows = counts.table()
    for row, w in zip(rows, weights or ()):
        row["weight"] = w
    record: dict[str, Any] = {
        "rule": rule,
        "definition": WEIGHT_RULES.get(rule or "", None),
        "weights": weights,
        "ignore_index": counts.ignore_index,
        "images": len(counts.ids),
        "labelled_pixels": counts.labelled,
        "ignored_pixels": counts.ignored,
        "classes": rows,
        "sampler": sampler,
        "sampler_definition": SAMPLERS.get(sampler or "", None),
        "ids_sha1": ids_digest(counts.ids),
    }
    if images is not None:
        record["image_weights"] = dict(zip(counts.ids, images))
    return record


def _kept(
    cfg: Config, train_set: Any, ids: list[str], rule: str | None, sampler: str | None
) -> Balance | None:
    """The run folder's record, where it was made for these images and settings."""
    path = Path(cfg.train.out_dir) / BALANCE_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    names = [row.get("name") for row in record.get("classes", ()) if isinstance(row, dict)]
    same = (
        record.get("ids_sha1") == ids_digest(ids)
        and names == list(train_set.class_names)
        and record.get("ignore_index") == train_set.ignore_index
        and record.get("rule") == rule
        and record.get("sampler") == sampler
        and (sampler is None or set(record.get("image_weights") or ()) == set(ids))
    )
    if not same:
        return None
    images = [record["image_weights"][i] for i in ids] if sampler is not None else None
    return Balance(rule, record.get("weights"), sampler, images, record)


def class_stats(cfg: Config, train_set: Any = None) -> dict[str, Any]:
    """``segkit stats``'s class table: each class's labelled pixels, pixel share, the number
    of images it appears in, and the weights each rule would give it, counted on the
    config's training labels (``train_set``: its :func:`~segkit.api.data.training_set`,
    where the caller has it already).

    Returns:
        ``classes`` (rows: ``id``, ``name``, ``pixels``, ``share``, ``images`` and one value
        per rule of :data:`~segkit.data.balance.WEIGHT_RULES`), ``images``,
        ``labelled_pixels``, ``ignored_pixels``, ``ignore_index``; or, for masks without one
        class per pixel (multi-label, soft targets), ``classes`` None and a ``note``.
    """
    if train_set is None:
        train_set = training_set(cfg)
    if train_set.task == "multilabel" or getattr(train_set, "soft_targets", False):
        return {"classes": None, "note": "not counted: the masks hold no single class per pixel"}
    counts = count_classes(train_set)
    rows = counts.table()
    if counts.labelled:
        for rule in WEIGHT_RULES:
            for row, w in zip(rows, class_weights(counts, rule)):
                row[rule] = w
    return {
        "classes": rows,
        "images": len(counts.ids),
        "labelled_pixels": counts.labelled,
        "ignored_pixels": counts.ignored,
        "ignore_index": counts.ignore_index,
    }
