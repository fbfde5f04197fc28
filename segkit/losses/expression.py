"""Weighted sums of registered losses (``"0.5*ce + focal(gamma=1)"``) and :func:`build_loss`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segkit.errors import PLUGIN_HINT, ConfigError, suggest, unknown_name
from segkit.losses.base import _LOSSES, SegmentationLoss, check_loss_options, loss_option_names


def loss_modules(expression: str) -> list[str]:
    """The modules that define the loss classes an expression names (for plugin records)."""
    return [_LOSSES[name].__module__ for _, name, _ in parse_loss_expression(expression)]


class CombinedLoss(SegmentationLoss):
    """A weighted sum of registered losses, e.g. ``0.5*ce + dice``.

    Attributes:
        terms: ``(weight, name, loss)`` triples.
    """

    def __init__(self, terms: list[tuple[float, str, SegmentationLoss]], **kwargs: Any):
        super().__init__(**kwargs)
        self.multilabel = all(loss.multilabel for _, _, loss in terms)
        self.terms = terms
        self.losses = nn.ModuleList(loss for _, _, loss in terms)
        self.accepts_soft = all(loss.accepts_soft for _, _, loss in terms)

    def check_soft(self, target: torch.Tensor, mode: str) -> torch.Tensor:
        """As :meth:`SegmentationLoss.check_soft`, naming the term that refuses soft targets."""
        refusing = [name for _, name, loss in self.terms if not loss.accepts_soft]
        if refusing and mode == "binary":
            raise TypeError(
                f"The loss term(s) {', '.join(refusing)} take integer labels, got a "
                f"{target.dtype} target (soft targets, data.soft_targets): use soft_dice, bce "
                "or ce terms."
            )
        return super().check_soft(target, mode)

    def compute(self, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
        total = logits.new_zeros(())
        for weight, _, loss in self.terms:
            total = total + weight * loss.compute(logits, target, mode)
        return total


_TERM = re.compile(
    r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*$", re.S
)


def _split_terms(expression: str) -> list[str]:
    """Split at ``+`` outside parentheses (``focal(gamma=2) + dice``)."""
    parts, depth, current = [], 0, ""
    for char in str(expression):
        depth += (char == "(") - (char == ")")
        if char == "+" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _term_options(text: str | None, expression: str) -> dict[str, Any]:
    """``"gamma=2, alpha=0.25"`` -> ``{"gamma": 2, "alpha": 0.25}`` (values read as YAML)."""
    import yaml

    options: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(
                f"Cannot read the loss options {text!r} in {expression!r}: write them as "
                "name=value pairs, e.g. 'focal(gamma=2, alpha=0.25)'."
            )
        options[key.strip()] = yaml.safe_load(value.strip())
    return options


def parse_loss_expression(expression: str) -> list[tuple[float, str, dict[str, Any]]]:
    """``"0.5*ce + focal(gamma=1)"`` -> ``[(0.5, "ce", {}), (1.0, "focal", {"gamma": 1})]``.

    Raises:
        ConfigError: a malformed expression or an unknown loss name (with close names).
    """
    terms = []
    for part in _split_terms(expression):
        match = _TERM.match(part)
        if not match:
            raise ConfigError(
                f"Cannot parse loss {expression!r} at {part.strip()!r}. Write a name or a "
                "weighted sum such as 'ce + dice', '0.5*ce + 1.0*soft_dice' or "
                "'ce + focal(gamma=2)'."
            )
        weight, name, args = match.groups()
        if name not in _LOSSES:
            raise ConfigError(
                unknown_name("loss", name, _LOSSES) + " See `list_losses()`." + PLUGIN_HINT
            )
        options = _term_options(args, expression)
        terms.append((1.0 if weight is None else float(weight), name, options))
    return terms


def _options_per_term(
    terms: list[tuple[float, str, dict[str, Any]]], options: dict[str, Any], expression: str
) -> list[dict[str, Any]]:
    """Each term's options: shared ``options`` keys it takes, ``options[<term name>]``, then
    the options written in the expression. A key no term takes is a ConfigError."""
    names = {name for _, name, _ in terms}
    taken: set[str] = set()
    out = []
    for _, name, own in terms:
        valid = loss_option_names(_LOSSES[name])
        mine = {k: v for k, v in options.items() if k in valid and k not in names}
        taken |= set(mine)
        per_term = options.get(name) or {}
        if not isinstance(per_term, dict):
            raise ConfigError(
                f"loss.options.{name} must be a mapping of {name}'s options, got {per_term!r}."
            )
        out.append({**mine, **per_term, **own})
    for key in options:
        if key not in taken and key not in names:
            valid = sorted({o for _, n, _ in terms for o in loss_option_names(_LOSSES[n])})
            hint = suggest(key, valid) or (
                f" Its terms take: {', '.join(valid)}." if valid else " Its terms take none."
            )
            raise ConfigError(f"No term of the loss {expression!r} takes the option {key!r}.{hint}")
    return out


def build_loss(
    name: str,
    smooth: float = 1.0,
    ignore_index: int | None = None,
    class_weights: Sequence[float] | None = None,
    mode: str | None = None,
    **options: Any,
) -> SegmentationLoss:
    """Build a loss by name or weighted-sum expression.

    Args:
        name: a registered name (``soft_dice``, ``dice``, ``ce``, ``bce``, ``focal``,
            ``tversky``, ``lovasz``, ``jaccard``, ...) or a weighted sum such as
            ``"0.5*ce + 1.0*soft_dice"``; a term may carry options: ``"ce + focal(gamma=1)"``.
        smooth: Dice smoothing term (every term that has one).
        ignore_index: label value whose pixels are left out of every term.
        class_weights: one weight per class (binary: background, foreground).
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` (a 0/1 target per channel), or
            ``None`` to infer from the logits' channels.
        **options: keyword options of the terms (``gamma=1``), given to each term that takes
            them, or per term (``focal={"gamma": 1}``); ``loss.options`` in a config.

    Returns:
        A module called as ``loss(logits N x C x H x W, target N x H x W int64)``.

    Raises:
        ConfigError: unknown name, malformed expression, an option no term takes, or a term
            that cannot train a multi-label model.
    """
    shared = dict(smooth=smooth, ignore_index=ignore_index, class_weights=class_weights, mode=mode)
    terms = parse_loss_expression(name)
    if mode == "multilabel":
        unable = [n for _, n, _ in terms if not _LOSSES[n].multilabel]
        if unable:
            able = [n for n in sorted(_LOSSES) if _LOSSES[n].multilabel]
            raise ConfigError(
                f"Loss {unable[0]!r} cannot train a multi-label model: it treats the classes as "
                f"exclusive. Use one that scores each class on its own ({', '.join(able)}) or "
                "a sum such as 'bce + dice' (loss.name)."
            )
    per_term = _options_per_term(terms, options, name)
    losses = []
    for (w, n, _), opts in zip(terms, per_term):
        check_loss_options(_LOSSES[n], opts)
        losses.append((w, n, _LOSSES[n](**shared, **opts)))
    if len(losses) == 1 and losses[0][0] == 1.0:
        return losses[0][2]
    return CombinedLoss(losses, **shared)
