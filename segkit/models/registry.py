"""Architecture registry: one decorator line adds a model to segkit.

Example::

    @register_model("my_net", divisor=16, mean=UNIT_MEAN, std=UNIT_STD, uses_encoder=False)
    def build_my_net(spec: ModelSpec) -> nn.Module:
        return MyNet(spec.in_channels, spec.classes)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from segkit.errors import PLUGIN_HINT, ConfigError, unknown_name
from segkit.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

Builder = Callable[[ModelSpec], nn.Module]
Normalization = Callable[[ModelSpec], tuple[tuple[float, ...], tuple[float, ...]]]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    Attributes:
        name: the name configs use (``model.arch``).
        builder: ``fn(spec) -> nn.Module`` returning logits ``N x classes x H x W``.
        mean: default input normalisation mean (0-1 scale).
        std: default input normalisation std.
        divisor: input height and width must be multiples of this.
        uses_encoder: whether ``spec.encoder`` / ``spec.encoder_weights`` mean anything.
        description: one line for ``segkit models``.
        normalization: ``fn(spec) -> (mean, std)`` when it depends on the spec (the
            encoder); overrides ``mean`` and ``std``.
    """

    name: str
    builder: Builder
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    divisor: int = 32
    uses_encoder: bool = True
    description: str = ""
    normalization: Normalization | None = None

    def default_normalization(self, spec: ModelSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Mean and std the network expects for ``spec`` (3 values each)."""
        if self.normalization is not None:
            return self.normalization(spec)
        return self.mean, self.std


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    divisor: int = 32,
    uses_encoder: bool = True,
    description: str = "",
    normalization: Normalization | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator that registers ``builder(spec) -> nn.Module`` under ``name``.

    Args:
        name: architecture name; registering a taken name raises ValueError.
        mean: default normalisation mean the network expects.
        std: default normalisation std.
        divisor: input sides must be multiples of this (2 ** number of poolings).
        uses_encoder: False for networks without a pluggable encoder.
        description: one line shown by ``list_models``'s callers.
        normalization: ``fn(spec) -> (mean, std)`` when the statistics depend on the spec.
    """

    def decorator(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"Model {name!r} is already registered; pick another name.")
        doc = (builder.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelEntry(
            name=name,
            builder=builder,
            mean=tuple(mean),
            std=tuple(std),
            divisor=divisor,
            uses_encoder=uses_encoder,
            description=description or (doc[0] if doc else ""),
            normalization=normalization,
        )
        return builder

    return decorator


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; ConfigError with close names when unknown."""
    try:
        return _MODELS[name]
    except KeyError:
        message = unknown_name("model architecture", str(name), _MODELS)
        raise ConfigError(f"{message} List them with `segkit models`.{PLUGIN_HINT}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a wildcard pattern (``"smp.*"``), sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def list_encoders(pattern: str = "*") -> list[str]:
    """smp encoder names matching a wildcard pattern, sorted.

    Any timm backbone also works as ``"tu-<timm name>"``; a pattern that starts with
    ``"tu-"`` lists matching timm models (e.g. ``"tu-convnext*"``).
    """
    if pattern.startswith("tu-"):
        import timm

        return ["tu-" + n for n in timm.list_models(pattern[3:])]
    from segmentation_models_pytorch.encoders import get_encoder_names

    return sorted(n for n in get_encoder_names() if fnmatch.fnmatch(n, pattern))
