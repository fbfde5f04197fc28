"""The model contract: everything needed to rebuild a network and feed it correctly.

A :class:`ModelSpec` travels inside every checkpoint (as plain Python data, so
``torch.load(weights_only=True)`` reads it), which is why a checkpoint alone is
enough to rebuild the model and predict later.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from segkit.errors import ConfigError, suggest

#: ImageNet normalisation used by pretrained encoders. The data part keeps its own copy
#: (``segkit.data.meta``) because ``models`` and ``data`` never import each other.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``x / 255``: what a network trained from scratch expects.
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)

UPSAMPLE_MODES = ("transpose", "bilinear")
#: ``options`` keys that describe the training data, not the architecture: they travel with
#: the spec (inference reads them) but builders never receive them.
METADATA_OPTIONS = ("image_size", "resize", "crop")


@dataclass
class ModelSpec:
    """What a model is and what input it expects.

    ``mean``, ``std``, ``divisor`` and ``task`` are filled in by
    :func:`segkit.models.build_model` from the architecture's registry entry when left
    as ``None``.

    Attributes:
        arch: registered architecture name, e.g. ``"unet"`` or ``"smp.Unet"``.
        encoder: smp encoder name or ``"tu-<timm name>"``; ``None`` for the from-scratch U-Net.
        encoder_weights: ``None``, a hub weights name such as ``"imagenet"``, or a local file.
        classes: output channels (1 for a binary task).
        in_channels: input channels.
        base_channels: width of the from-scratch U-Net's first block.
        upsample: from-scratch U-Net decoder upsampling, ``"transpose"`` or ``"bilinear"``.
        class_names: every label value's name, background included.
        task: ``"binary"`` when ``classes == 1``, else ``"multiclass"`` (softmax) or
            ``"multilabel"`` (one sigmoid per class, classes may overlap).
        mean: per-channel normalisation mean on the 0-1 scale.
        std: per-channel normalisation std on the 0-1 scale.
        divisor: input height and width must be multiples of this.
        options: extra keyword arguments for the architecture (e.g. ``decoder_channels``),
            plus the metadata keys in :data:`METADATA_OPTIONS` (``image_size``: the training
            input side, which prediction resizes to; ``resize``: how training met the image's
            aspect, ``data.resize``, filled in as ``squash`` when older checkpoints load;
            ``crop``: ``size``, ``scale`` and ``overlap`` of a model trained on crops, which
            prediction runs in windows).
        meta: the training data's recorded metadata (``DatasetMeta.to_dict()``: data set name,
            classes, colours, ignore index, flip pairs, report groups); None for a model built
            outside training (loading fills it in for checkpoints written before it was
            recorded: :func:`segkit.engine.checkpoint.upgrade_spec`).
        imports: modules that register what this model needs (its architecture, ...): imported
            before the model is rebuilt from a checkpoint.
    """

    arch: str = "smp.Unet"
    encoder: str | None = "resnet18"
    encoder_weights: str | None = None
    classes: int = 1
    in_channels: int = 3
    base_channels: int = 64
    upsample: str = "transpose"
    class_names: list[str] | None = None
    task: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    divisor: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    imports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain Python types (lists, not tuples) for a checkpoint or YAML."""
        data = dataclasses.asdict(self)
        for key in ("mean", "std"):
            if data[key] is not None:
                data[key] = [float(v) for v in data[key]]
        data["options"] = copy.deepcopy(self.options)
        data["meta"] = copy.deepcopy(self.meta)
        data["imports"] = list(self.imports)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild a spec from :meth:`to_dict` output; unknown keys raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError(f"A model spec must be a mapping, got {type(data).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ConfigError(
                f"Unknown model spec key {unknown[0]!r}.{suggest(str(unknown[0]), names)} "
                f"Valid keys: {', '.join(names)}."
            )
        values = dict(data)
        for key in ("mean", "std"):
            if values.get(key) is not None:
                values[key] = tuple(float(v) for v in values[key])
        if values.get("class_names") is not None:
            values["class_names"] = [str(n) for n in values["class_names"]]
        values["options"] = copy.deepcopy(values.get("options") or {})
        values["meta"] = copy.deepcopy(values.get("meta"))
        values["imports"] = [str(m) for m in values.get("imports") or []]
        return cls(**values)

    def architecture_options(self) -> dict[str, Any]:
        """``options`` without the metadata keys: what the builder receives."""
        return {k: v for k, v in self.options.items() if k not in METADATA_OPTIONS}

    def validate(self) -> None:
        """Raise ConfigError when a field has an impossible value."""
        for key in ("classes", "in_channels", "base_channels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Model {key} must be an integer >= 1, got {value!r}.")
        if self.upsample not in UPSAMPLE_MODES:
            raise ConfigError(
                f"Unknown upsample mode {self.upsample!r}.{suggest(str(self.upsample), UPSAMPLE_MODES)}"
                f" Use one of {', '.join(UPSAMPLE_MODES)}."
            )
        if self.class_names is not None:
            multilabel = self.task == "multilabel"
            expected = 2 if self.classes == 1 and not multilabel else self.classes
            if len(self.class_names) != expected:
                raise ConfigError(
                    f"{len(self.class_names)} class names {self.class_names} do not fit "
                    f"classes={self.classes}: a model with {self.classes} output channel(s) "
                    f"needs {expected} names"
                    + (" (one per channel)." if multilabel else " (background included).")
                )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.in_channels:
                raise ConfigError(
                    f"Model {key} {tuple(value)} has {len(value)} values but in_channels is "
                    f"{self.in_channels}; give one value per input channel."
                )
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ConfigError(f"Model std {tuple(self.std)} must be positive.")
        if self.divisor is not None and (not isinstance(self.divisor, int) or self.divisor < 1):
            raise ConfigError(f"Model divisor must be an integer >= 1, got {self.divisor!r}.")
        if not isinstance(self.options, dict):
            raise ConfigError(f"Model options must be a mapping, got {self.options!r}.")
