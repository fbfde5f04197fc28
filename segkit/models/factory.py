"""Build models from a spec or config, check inputs, and match checkpoints to models."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segkit.errors import CheckpointError, ConfigError, suggest
from segkit.models.registry import get_model_entry
from segkit.models.spec import ModelSpec

#: spec fields that decide the network's structure (what a checkpoint must agree on)
STRUCTURE_FIELDS = (
    "arch",
    "encoder",
    "classes",
    "in_channels",
    "base_channels",
    "upsample",
    "options",
)


def padded_size(height: int, width: int, divisor: int) -> tuple[int, int]:
    """The smallest size >= (height, width) whose sides are multiples of ``divisor``."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def pad_to_divisor(
    x: torch.Tensor, divisor: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom and right of ``x`` (``... x H x W``) to multiples of ``divisor``.

    Args:
        x: a 3-D or 4-D tensor.
        divisor: the model's ``spec.divisor``.
        mode: ``F.pad`` mode; ``"reflect"`` falls back to ``"replicate"`` when the
            padding is larger than the image.

    Returns:
        The padded tensor and the original ``(height, width)`` for :func:`crop`.
    """
    h, w = x.shape[-2:]
    new_h, new_w = padded_size(h, w, divisor)
    pad = (0, new_w - w, 0, new_h - h)
    if pad[1] == 0 and pad[3] == 0:
        return x, (h, w)
    if mode == "reflect" and (pad[1] >= w or pad[3] >= h):
        mode = "replicate"
    if mode == "constant":
        return F.pad(x, pad), (h, w)
    return F.pad(x, pad, mode=mode), (h, w)


def crop(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_divisor`: keep the top-left ``(height, width)`` of ``y``."""
    h, w = size
    return y[..., :h, :w]


class SegmentationModel(nn.Module):
    """A network plus the :class:`ModelSpec` that rebuilds it and describes its input.

    ``forward(x)`` takes normalised ``N x in_channels x H x W`` images whose sides are
    multiples of ``spec.divisor`` and returns logits ``N x classes x H x W``.

    Attributes:
        net: the wrapped network.
        spec: the resolved spec (mean, std, divisor, task filled in).
    """

    def __init__(self, net: nn.Module, spec: ModelSpec):
        super().__init__()
        self.net = net
        self.spec = spec

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError when ``x`` has the wrong rank, channels, or indivisible sides."""
        if x.ndim != 4:
            raise ValueError(
                f"Expected a batch of images N x C x H x W, got a tensor of shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.spec.in_channels:
            raise ValueError(
                f"Input has {x.shape[1]} channels but the model expects "
                f"{self.spec.in_channels} (shape {tuple(x.shape)})."
            )
        h, w = x.shape[-2:]
        d = self.spec.divisor or 1
        if h % d or w % d:
            new_h, new_w = padded_size(h, w, d)
            raise ValueError(
                f"Wrong input shape height={h}, width={w}. Expected image height and width "
                f"divisible by {d}. Consider pad your images to shape ({new_h}, {new_w}) "
                "(segkit.models.pad_to_divisor), or choose an image size that is a multiple of "
                f"{d}."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (
            torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
        ):
            self.check_input(x)
        return self.net(x)

    def extra_repr(self) -> str:
        s = self.spec
        return f"arch={s.arch!r}, encoder={s.encoder!r}, classes={s.classes}, divisor={s.divisor}"


def _fit(values: Sequence[float], n: int) -> tuple[float, ...]:
    """Repeat 3-channel statistics cyclically to ``n`` channels."""
    return tuple(float(values[i % len(values)]) for i in range(n))


def resolve_spec(spec: ModelSpec) -> ModelSpec:
    """Validate ``spec`` and fill in task, mean, std and divisor from the registry."""
    spec.validate()
    entry = get_model_entry(spec.arch)
    changes: dict[str, Any] = {"options": dict(spec.options)}
    if not entry.uses_encoder:
        if spec.encoder_weights is not None:
            raise ConfigError(
                f"{spec.arch} has no pretrained encoder; set encoder_weights to None "
                f"(got {spec.encoder_weights!r}) or pick an smp architecture."
            )
        changes["encoder"] = None
    task = "binary" if spec.classes == 1 else "multiclass"
    if spec.task == "multilabel" and spec.classes > 1:
        task = "multilabel"  # one sigmoid per class; classes may overlap
    if spec.task is not None and spec.task != task:
        raise ConfigError(
            f"task={spec.task!r} does not fit classes={spec.classes}: "
            "1 output channel is a binary task, more are multiclass or multilabel."
        )
    changes["task"] = task
    if spec.mean is None or spec.std is None:
        mean, std = entry.default_normalization(spec)
        changes["mean"] = spec.mean or _fit(mean, spec.in_channels)
        changes["std"] = spec.std or _fit(std, spec.in_channels)
    if spec.divisor is None:
        changes["divisor"] = entry.divisor
    elif spec.divisor % entry.divisor:
        raise ConfigError(
            f"divisor={spec.divisor} is not a multiple of {entry.divisor}, which {spec.arch} "
            "needs; leave it unset."
        )
    resolved = dataclasses.replace(spec, **changes)
    resolved.validate()
    return resolved


def _spec_from_kwargs(spec: ModelSpec | None, kwargs: dict[str, Any]) -> ModelSpec:
    names = [f.name for f in dataclasses.fields(ModelSpec)]
    for key in kwargs:
        if key not in names:
            raise ConfigError(
                f"Unknown model argument {key!r}.{suggest(key, names)} Valid: {', '.join(names)}."
            )
    if spec is None:
        return ModelSpec(**kwargs)
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model expects a ModelSpec or None, got {type(spec).__name__}.")
    return dataclasses.replace(spec, **kwargs)


def build_model(spec: ModelSpec | None = None, **kwargs: Any) -> SegmentationModel:
    """Build a model from a spec and/or :class:`ModelSpec` fields given as keywords.

    Example: ``build_model(arch="unet", classes=11, base_channels=16)``.

    Raises:
        ConfigError: unknown architecture, encoder or option; impossible values.
        WeightsError: ``encoder_weights`` cannot be fetched or loaded.
    """
    spec = resolve_spec(_spec_from_kwargs(spec, kwargs))
    builder_spec = dataclasses.replace(spec, options=spec.architecture_options())
    net = get_model_entry(spec.arch).builder(builder_spec)
    return SegmentationModel(net, spec)


def rebuild_model(spec: ModelSpec | Mapping[str, Any]) -> SegmentationModel:
    """Rebuild a model for loading a checkpoint into: no weights are fetched or read.

    ``spec.encoder_weights`` is kept in the returned model's spec as a record of how it was
    initialised, but the network starts random (the checkpoint's state dict replaces it).
    The plugin modules ``spec.imports`` names are imported first.
    """
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(dict(spec))
    if spec.imports:  # the modules that registered its parts (a plugin architecture, ...)
        from segkit.plugins import import_plugins

        import_plugins(spec.imports, where="the checkpoint (spec.imports)")
    model = build_model(spec, encoder_weights=None)
    model.spec = dataclasses.replace(model.spec, encoder_weights=spec.encoder_weights)
    return model


def model_from_config(
    cfg: Any, class_names: Sequence[str], multilabel: bool = False
) -> SegmentationModel:
    """Build the model a :class:`segkit.config.ModelConfig` describes for these classes.

    Two class names (background + one) give a binary model with 1 output channel;
    otherwise one channel per class name. ``multilabel``: one sigmoid channel per class
    name (no background), ``task="multilabel"``.
    """
    names = [str(n) for n in class_names]
    if len(names) < 2:
        raise ConfigError(
            f"A segmentation task needs at least 2 class names (background included), got {names}."
        )
    return build_model(
        arch=cfg.arch,
        encoder=cfg.encoder,
        encoder_weights=cfg.encoder_weights,
        classes=len(names) if multilabel else 1 if len(names) == 2 else len(names),
        task="multilabel" if multilabel else None,
        in_channels=getattr(cfg, "in_channels", 3),
        base_channels=cfg.base_channels,
        upsample=cfg.upsample,
        class_names=names,
        options=dict(cfg.options),
    )


def check_spec_matches(
    expected: ModelSpec, found: ModelSpec | Mapping[str, Any], source: str
) -> None:
    """Raise CheckpointError when ``found`` (from ``source``) builds a different network."""
    if not isinstance(found, ModelSpec):
        found = ModelSpec.from_dict(dict(found))
    fields = [f for f in STRUCTURE_FIELDS if f not in ("base_channels", "upsample")]
    if expected.arch == "unet":
        fields += ["base_channels", "upsample"]

    def value(spec: ModelSpec, name: str) -> Any:
        return spec.architecture_options() if name == "options" else getattr(spec, name)

    diffs = [
        f"{f}: {value(found, f)!r} in the checkpoint, {value(expected, f)!r} here"
        for f in fields
        if value(found, f) != value(expected, f)
    ]
    if diffs:
        raise CheckpointError(
            f"Checkpoint {source} was trained with a different model ({'; '.join(diffs)}). "
            "Use the checkpoint's own model settings, or start a new run."
        )


def _strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix in ("module.", "_orig_mod."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    if out and not any(k.startswith("net.") for k in out):
        out = {f"net.{k}": v for k, v in out.items()}
    return out


def load_state(model: SegmentationModel, state_dict: Mapping[str, Any], source: str) -> None:
    """Load ``state_dict`` into ``model`` strictly, explaining any mismatch.

    Accepts keys with or without the ``net.`` prefix, and DDP (``module.``) or
    ``torch.compile`` (``_orig_mod.``) prefixes.

    Raises:
        CheckpointError: naming ``source`` and the missing/unexpected keys, the shapes that
            differ, or the class counts when the output head differs.
    """
    if not isinstance(state_dict, Mapping) or not all(
        torch.is_tensor(v) for v in state_dict.values()
    ):
        raise CheckpointError(f"Checkpoint {source} does not hold a model state dict.")
    state = _strip_prefixes(state_dict)
    own = model.state_dict()
    spec = model.spec
    what = f"{spec.arch} (encoder={spec.encoder!r}, classes={spec.classes})"
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"Checkpoint {source} does not fit model {what}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}. Was it trained "
            "with another architecture or encoder?"
        )
    wrong = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if wrong:
        head = list(own)[-2:]
        for key, theirs, ours in wrong:
            if key in head and theirs[1:] == ours[1:]:
                raise CheckpointError(
                    f"Checkpoint {source} has {theirs[0]} output classes but model {what} has "
                    f"{ours[0]}. Use the class names the checkpoint was trained with."
                )
        listed = ", ".join(f"{k}: {a} in checkpoint vs {b}" for k, a, b in wrong[:5])
        raise CheckpointError(
            f"Checkpoint {source} does not fit model {what}: {len(wrong)} tensors differ in "
            f"shape ({listed})."
        )
    model.load_state_dict(state, strict=True)
