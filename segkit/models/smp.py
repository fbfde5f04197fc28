"""segmentation-models-pytorch architectures x encoders, and encoder weights handling.

Every smp architecture is registered as ``smp.<Name>`` (``smp.Unet``, ``smp.FPN``, ...).
``spec.encoder`` is any smp encoder name or ``tu-<timm name>``. ``spec.encoder_weights``:

- ``None``: random initialisation, nothing is downloaded;
- a hub weights name (``"imagenet"``, ``"ssl"``, ...): the network is probed first, so that
  without one a :class:`WeightsError` comes in a few seconds instead of smp's retries;
- a local file: a torchvision / timm state dict (``conv1.weight``, ``layer1...``; the
  classifier ``fc.*`` is dropped) or an smp encoder state dict (optionally prefixed
  ``encoder.``), loaded into ``net.encoder`` with strict key checking.

smp's ``get_preprocessing_params`` downloads a config from the hub, so the normalisation is
worked out locally (:func:`encoder_normalization`).
"""

from __future__ import annotations

import inspect
import os
import socket
import threading
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import encoders as _SMP_ENCODERS
from segmentation_models_pytorch.encoders import get_encoder_names
from torch import nn

from segkit.errors import ConfigError, WeightsError, suggest, unknown_name
from segkit.models.registry import register_model
from segkit.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

#: seconds the hub reachability probe may take before weights are declared unreachable
PROBE_TIMEOUT = 3.0
#: constructor arguments segkit sets itself (from the spec) or does not support
_RESERVED = {
    "encoder_name": "set `encoder` instead",
    "encoder_weights": "set `encoder_weights` instead",
    "in_channels": "set `in_channels` instead",
    "classes": "set `classes` (or the data set's class names) instead",
    "activation": "segkit models return logits; losses and prediction apply sigmoid/softmax",
    "aux_params": "auxiliary classification heads are not supported",
}
#: classifier keys a torchvision / timm / pretrainedmodels state dict has and encoders lack
_HEAD_PREFIXES = ("fc.", "classifier.", "last_linear.", "_fc.", "head.", "logits.")
#: encoders whose pretrained weights expect something other than ImageNet statistics
_NORMALIZATION = {
    "inceptionv4": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "inceptionresnetv2": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "xception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
for _name in ("dpn68", "dpn68b", "dpn92", "dpn98", "dpn107", "dpn131"):
    _NORMALIZATION[_name] = ((124 / 255, 117 / 255, 104 / 255), (1 / (0.0167 * 255),) * 3)


def check_encoder(name: str | None) -> None:
    """Raise ConfigError naming close encoders when ``name`` is neither smp's nor timm's."""
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"An smp architecture needs an encoder name, got {name!r} (e.g. resnet18)."
        )
    if name.startswith("tu-"):
        import timm

        base = name[3:].split(".", 1)[0]
        if not timm.is_model(base):
            hint = suggest(base, timm.list_models()).replace(" '", " 'tu-")
            raise ConfigError(
                f"Unknown timm encoder {name!r}.{hint} List them with `segkit encoders 'tu-*'`."
            )
        return
    if name not in _SMP_ENCODERS:
        message = unknown_name("encoder", name, get_encoder_names())
        raise ConfigError(f"{message} List them with `segkit encoders`, or use 'tu-<timm name>'.")


def encoder_normalization(
    encoder: str | None, weights: str | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (0-1 scale) that ``encoder``'s pretrained ``weights`` expect; no download.

    EfficientNet's ``advprop`` weights were trained on ``x * 2 - 1`` (mean and std 0.5), its
    ``imagenet`` weights, like most, on ImageNet statistics.
    """
    if weights == "advprop" and (encoder or "").startswith(("efficientnet-", "timm-efficientnet")):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    if encoder and encoder.startswith("tu-"):
        import timm

        try:
            cfg = timm.get_pretrained_cfg(encoder[3:])
        except Exception:  # an unknown name is reported by check_encoder
            cfg = None
        if cfg is not None and cfg.mean and len(cfg.mean) == 3:
            return tuple(cfg.mean), tuple(cfg.std)
        return IMAGENET_MEAN, IMAGENET_STD
    return _NORMALIZATION.get(encoder or "", (IMAGENET_MEAN, IMAGENET_STD))


def hub_unreachable_reason(timeout: float = PROBE_TIMEOUT) -> str | None:
    """``None`` when the Hugging Face hub answers on port 443, else why not.

    Honours ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``. Name resolution runs in a worker thread
    so that a hanging DNS lookup cannot exceed ``timeout`` either.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or 443
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"{host}:{port} is unreachable ({exc})")

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else f"{host}:{port} did not answer within {timeout:g} s"


def _cached_weights(encoder: str, weights: str) -> Path | None:
    """The encoder's weights file in the local Hugging Face cache, if it is there."""
    settings = _SMP_ENCODERS.get(encoder, {}).get("pretrained_settings", {}).get(weights)
    if not settings:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        settings["repo_id"], "model.safetensors", revision=settings["revision"]
    )
    return Path(found) if isinstance(found, str) else None


def _hub_weights_names(encoder: str) -> list[str]:
    if encoder.startswith("tu-"):
        return ["imagenet"]
    return list(_SMP_ENCODERS[encoder]["pretrained_settings"])


def _looks_like_path(value: str) -> bool:
    suffixes = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
    return "/" in value or os.sep in value or value.lower().endswith(suffixes)


def _offline_message(encoder: str, weights: str, reason: str) -> str:
    return (
        f"Could not fetch the {weights!r} weights of encoder {encoder!r}: {reason}. "
        "Download the weights file elsewhere and pass its path as encoder_weights "
        "(e.g. model.encoder_weights=/path/to/resnet18-f37072fd.pth), or set "
        "encoder_weights to None to train from random initialisation."
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file (``.pth``/``.pt``/``.bin`` or ``.safetensors``) into a flat dict.

    Checkpoint wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and the prefixes
    ``module.``, ``_orig_mod.``, ``net.`` are removed; when keys start with ``encoder.`` only
    those are kept, without the prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"Encoder weights file {str(path)!r} does not exist. Pass the path of a state dict "
            "file, 'imagenet' (needs network), or None."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"Could not read encoder weights file {str(path)!r}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(torch.is_tensor(v) for v in data.values()):
        raise WeightsError(
            f"Encoder weights file {str(path)!r} does not hold a state dict (a mapping of "
            "parameter names to tensors)."
        )
    state = dict(data)
    for prefix in ("module.", "_orig_mod.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if any(k.startswith("encoder.") for k in state):
        state = {k[8:]: v for k, v in state.items() if k.startswith("encoder.")}
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``encoder`` (or the timm model inside it), strictly.

    Raises:
        WeightsError: naming the file when keys are missing or unexpected, or shapes differ.
    """
    state = read_state_dict(path)
    targets = [encoder]
    if isinstance(getattr(encoder, "model", None), nn.Module):
        targets.append(encoder.model)  # timm universal encoders wrap the timm model
    best = max(targets, key=lambda t: len(set(t.state_dict()) & set(state)))
    expected = set(best.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(_HEAD_PREFIXES)}
    missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise WeightsError(
            f"Encoder weights file {str(path)!r} does not fit encoder "
            f"{type(encoder).__name__}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}. Is it the state dict of the "
            "same backbone (e.g. torchvision resnet18 for encoder resnet18)?"
        )
    try:
        best.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"Encoder weights file {str(path)!r} does not fit: {exc}") from None


def _constructor_kwargs(cls: type, spec: ModelSpec) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    names = [n for n in params if n not in ("self", "kwargs") and n not in _RESERVED]
    for key in spec.options:
        if key in _RESERVED:
            raise ConfigError(
                f"Model option {key!r} is not allowed for {spec.arch}: {_RESERVED[key]}."
            )
        if key not in names and not spec.encoder.startswith("tu-"):
            raise ConfigError(
                f"Unknown option {key!r} for {spec.arch}.{suggest(key, names)} "
                f"Valid options: {', '.join(names)}."
            )
    return dict(spec.options)


def build_smp(cls: type, spec: ModelSpec) -> nn.Module:
    """Build smp architecture ``cls`` from ``spec``, fetching or loading encoder weights."""
    check_encoder(spec.encoder)
    kwargs = _constructor_kwargs(cls, spec)
    weights = spec.encoder_weights
    local: Path | None = None
    hub_weights: str | bool | None = None
    if weights is not None:
        names = _hub_weights_names(spec.encoder)
        if weights in names:
            reason = hub_unreachable_reason()
            if reason is None:
                hub_weights = True if spec.encoder.startswith("tu-") else weights
            else:
                local = _cached_weights(spec.encoder, weights)
                if local is None:
                    raise WeightsError(_offline_message(spec.encoder, weights, reason))
        elif Path(weights).expanduser().is_file() or _looks_like_path(weights):
            local = Path(weights).expanduser()
            read_state_dict(local)  # fail before building when the file is missing or bad
        else:
            raise WeightsError(
                f"encoder_weights {weights!r} is neither a weights name of encoder "
                f"{spec.encoder!r} ({', '.join(names)}) nor an existing file.{suggest(weights, names)}"
                " Pass one of those names, a path to a state dict file, or None."
            )
    in_channels = 3 if local is not None else spec.in_channels
    try:
        net = cls(
            encoder_name=spec.encoder,
            encoder_weights=hub_weights,
            in_channels=in_channels,
            classes=spec.classes,
            **kwargs,
        )
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise ConfigError(
            f"Cannot build {spec.arch} with encoder {spec.encoder!r}: {exc}"
        ) from None
    except (OSError, RuntimeError) as exc:
        if hub_weights is None:
            raise
        raise WeightsError(_offline_message(spec.encoder, str(weights), str(exc))) from None
    if local is not None:
        load_encoder_weights(net.encoder, local)
        if spec.in_channels != 3:
            if hasattr(net.encoder, "set_in_channels"):
                net.encoder.set_in_channels(spec.in_channels, pretrained=True)
            else:
                from segmentation_models_pytorch.encoders._utils import patch_first_conv

                patch_first_conv(net.encoder, spec.in_channels, pretrained=True)
    return net


def _smp_normalization(spec: ModelSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    weights = spec.encoder_weights if isinstance(spec.encoder_weights, str) else None
    return encoder_normalization(spec.encoder, weights)


# One registration per smp architecture: smp.Unet, smp.UnetPlusPlus, smp.FPN, ...
# smp.DPT only builds with timm ViT encoders (e.g. tu-vit_base_patch16_224).
for _cls in smp.MODEL_ARCHITECTURES_MAPPING.values():
    register_model(
        f"smp.{_cls.__name__}",
        divisor=32,
        normalization=_smp_normalization,
        description=f"segmentation-models-pytorch {_cls.__name__} (any encoder)",
    )(partial(build_smp, _cls))
