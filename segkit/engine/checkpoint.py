"""Checkpoints: atomic writes, safe (``weights_only``) loading, rebuilding a model.

A segkit checkpoint is a ``dict`` of tensors and plain Python values only, so that
``torch.load(path, weights_only=True)`` can open it without running any code. What goes in
it is :meth:`segkit.engine.Trainer.state_dict`'s business (format 2: the model, its spec,
class names and config, the trainer's counters, optimizer, scaler and RNG, and ``hooks``:
each hook's state under its name). This module writes and reads the files, and is the one
place that knows older checkpoints: loading upgrades them (:func:`upgrade`: format 1's best
value, schedule and metrics at the top level and hook states under class names; fields older
versions did not record), so callers read the current format's fields as they are.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segkit._files import replace_atomically
from segkit.errors import CheckpointError

if TYPE_CHECKING:
    from segkit.data.meta import DatasetMeta

FORMAT = "segkit-checkpoint"
VERSION = 2
#: a Hub folder (``segkit export --hub``): the config (smp's init arguments beside segkit's
#: description under ``"_segkit"``) and the weights, as segmentation-models-pytorch and the
#: Hugging Face Hub share models
HUB_CONFIG, HUB_WEIGHTS = "config.json", "model.safetensors"

_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype)


def to_plain(value: Any) -> Any:
    """Convert config-like data to types ``weights_only`` loading accepts.

    Paths become strings, tuples and sets lists, dataclasses dicts; anything else that is not
    a plain value becomes its ``str``.
    """
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, _PLAIN):
        return value
    return str(value)


def _check_plain(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the key of the first value ``weights_only`` would refuse."""
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"Checkpoint value {where} is a {type(value).__name__}; checkpoints may hold only "
            "tensors and plain Python values (convert it, e.g. with segkit.engine.checkpoint"
            ".to_plain) so that they load with torch.load(weights_only=True)."
        )


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A crash during the write leaves the previous file at ``path`` untouched.

    Args:
        path: destination, e.g. ``runs/exp/best.pt``.
        state: tensors and plain Python values only (checked before writing).

    Returns:
        The path written.
    """
    path = Path(path)
    state = dict(state)
    state.setdefault("format", FORMAT)
    state.setdefault("version", VERSION)
    _check_plain(state, "state")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    return replace_atomically(path, write)


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` an atomic copy of the finished checkpoint ``src`` (a hard link where possible).

    Every checkpoint write makes a new file and renames it into place, so the file that ``dst``
    shares with ``src`` is never written again: linking is as safe as copying, and free.

    Args:
        src: a checkpoint written by :func:`save_checkpoint`, e.g. ``runs/exp/last.pt``.
        dst: the destination, e.g. ``runs/exp/best.pt``; replaced atomically.

    Returns:
        The path written.
    """
    src = Path(src)

    def link(tmp: Path) -> None:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links on this file system
            shutil.copyfile(src, tmp)

    return replace_atomically(Path(dst), link)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a segkit checkpoint safely (``torch.load(weights_only=True)``).

    Args:
        path: a ``best.pt`` / ``last.pt`` written by segkit, or a Hub folder written by
            ``segkit export --hub`` (read as the checkpoint it was exported from).
        map_location: device the tensors are loaded onto.

    Raises:
        CheckpointError: the file is missing, a folder, corrupt, unsafe to load, or not a
            segkit checkpoint; the message names the file and what to do.
    """
    path = Path(path)
    if is_hub_folder(path):
        state = _read_hub_folder(path, map_location)
    else:
        state = _read_file(path, map_location)
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} has format version {state['version']}, newer than this "
            f"segkit understands ({VERSION}). Upgrade segkit to load it."
        )
    return upgrade(state)


#: format 1 named hook states by class; format 2 by the hook's name
_V1_HOOK_NAMES = {"EarlyStopHook": "early_stop", "PlotHook": "plot"}


def _read_file(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """A checkpoint file as ``torch.load(weights_only=True)`` reads it, checked to be segkit's."""
    if path.is_dir():
        found = [p.name for p in (path / "best.pt", path / "last.pt") if p.is_file()]
        hint = f" It holds {' and '.join(found)}; pass one of those." if found else ""
        raise CheckpointError(
            f"Checkpoint path {str(path)!r} is a folder, not a file, and not a Hub folder "
            f"(no {HUB_CONFIG} + {HUB_WEIGHTS}).{hint} Pass the path of a best.pt or last.pt "
            "written by segkit train, or a folder written by segkit export --hub."
        )
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint file {str(path)!r} does not exist. Pass the path of a best.pt or last.pt "
            "from a run folder (train.out_dir, e.g. runs/exp/best.pt)."
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        kind = "a state dict without segkit metadata" if isinstance(state, dict) else type(state)
        raise CheckpointError(
            f"{str(path)!r} is not a segkit checkpoint (it holds {kind}). Pass a best.pt or "
            "last.pt written by segkit train; for bare weights build the model yourself and call "
            "model.load_state_dict(torch.load(path, weights_only=True))."
        )
    return state


def is_hub_folder(path: str | Path) -> bool:
    """True for a folder holding a Hub model's ``config.json`` and ``model.safetensors``."""
    path = Path(path)
    return (path / HUB_CONFIG).is_file() and (path / HUB_WEIGHTS).is_file()


def _read_hub_folder(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """A Hub folder (:func:`segkit.hub.export_hub`) as the checkpoint it was written from:
    its description under ``config.json``'s ``"_segkit"``, the weights from safetensors."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((path / HUB_CONFIG).read_text(encoding="utf-8"))
        weights = load_file(path / HUB_WEIGHTS, device=str(map_location))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(
            f"Hub folder {str(path)!r} cannot be read: {exc}. Export it again with "
            "segkit export --checkpoint CKPT --hub DIR."
        ) from None
    described = config.get("_segkit") if isinstance(config, dict) else None
    if not isinstance(described, dict) or described.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path / HUB_CONFIG)!r} has no segkit description (a '_segkit' entry): the "
            "folder was not written by segkit export --hub. Load it with the library that wrote "
            "it (segmentation_models_pytorch.from_pretrained for an smp model)."
        )
    prefix = described.pop("weights_prefix", "")  # smp's names lack segkit's "net."
    return {**described, "model": {prefix + k: v for k, v in weights.items()}}


def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an older format in the current one (a current one as it is).

    :func:`load_checkpoint` calls it, so that every reader takes the fields as they are: this
    is the one place that knows what older segkit versions wrote.

    - Format 1 kept the best value, the schedule and the last metrics at the top level and hook
      states under class names; format 2 keeps them in the states of the hooks that own them
      (``best``, ``lr``, ``eval``).
    - ``config``: ``{}`` where none was stored.
    - ``channels_last`` (the layout the run trained in), absent before it was recorded: the
      config's ``train.channels_last``, contiguous unless it said true.
    - ``amp`` (the autocast the run trained in: "off", "bf16" or "fp16"), absent before it was
      recorded: None, which resuming under ``train.amp: auto`` reads as what ``auto`` was then
      (off on the CPU; on CUDA as ``auto`` still is).
    - ``model_spec`` (None: a model without a description): see :func:`upgrade_spec`.
    - ``rank_rng`` (a training state's RNG per DDP rank, recorded since elastic restarts
      resume under torchrun): None, every rank then continues from ``rng`` (rank 0's).
    """
    state = _hooks_by_name(state) if int(state.get("version", 1)) < 2 else dict(state)
    state["config"] = config = state.get("config") or {}
    if state.get("channels_last") is None:
        state["channels_last"] = (config.get("train") or {}).get("channels_last") is True
    state.setdefault("amp", None)
    state["model_spec"] = state.get("model_spec") or None
    if "rng" in state:
        state.setdefault("rank_rng", None)
    if state["model_spec"] is not None:
        state["model_spec"] = upgrade_spec(state["model_spec"], config)
    return state


def _hooks_by_name(state: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint's top-level best value, schedule and metrics moved into the states
    of the hooks that own them, and its hook states named as format 2 names them."""
    state = dict(state)
    hooks = {_V1_HOOK_NAMES.get(k, k): v for k, v in (state.pop("hooks", None) or {}).items()}
    measure = {"monitor": state.pop("monitor", None), "mode": state.pop("mode", None)}
    hooks["best"] = {"best": state.pop("best", None), "best_epoch": state.pop("best_epoch", None)}
    hooks["best"].update(measure)
    hooks["lr"] = {
        "scheduler": state.pop("scheduler", None),
        "name": state.pop("scheduler_name", None),
        **measure,
    }
    hooks["eval"] = {"metrics": state.pop("metrics", None) or {}}
    state["hooks"], state["version"] = hooks, 2
    return state


def upgrade_spec(spec: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's model spec with what older segkit versions did not record filled in.

    - ``meta``: what :func:`legacy_meta` finds; those versions also recorded the network's
      default mean/std even when training normalised otherwise (``augment.normalize`` of the
      stored config), and prediction then fed the model differently scaled input: the mean/std
      training used are set.
    - ``options["image_size"]``: the config's ``data.image_size``.
    - ``options["resize"]`` (``data.resize``, recorded since it existed): ``squash``, what
      training did before.
    """
    out = dict(spec)
    options = out["options"] = dict(out.get("options") or {})
    options.setdefault("resize", "squash")
    size = (config.get("data") or {}).get("image_size")
    if options.get("image_size") is None and size is not None:
        options["image_size"] = size
    if out.get("meta") is not None:
        return out
    from segkit.data.meta import DatasetMeta, training_normalization

    out["meta"] = legacy_meta(out, config)
    normalize = (config.get("augment") or {}).get("normalize", "model")
    if normalize in ("imagenet", "none") and out.get("mean") is not None:
        channels = len(out["mean"])
        mean, std = training_normalization(normalize, out["mean"], out["std"], DatasetMeta())
        out["mean"] = [mean[i % 3] for i in range(channels)]
        out["std"] = [std[i % 3] for i in range(channels)]
    return out


def legacy_meta(spec: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata an old checkpoint (without ``spec["meta"]``) would have recorded.

    The classes come from the spec; flip pairs and report groups from the registered data
    set with those classes (what segkit used to guess from the names); the ignore index
    from the training config.
    """
    from segkit.data.meta import DatasetMeta
    from segkit.data.registry import meta_for_classes

    names = list(spec.get("class_names") or [])
    meta = meta_for_classes(names) if names else DatasetMeta()
    loss = config.get("loss") or {}
    data = config.get("data") or {}
    ignore = loss.get("ignore_index")  # and class ids written as such, as those versions did
    out = meta.replace(classes=tuple(names), ignore_index=ignore, output_ids=None).to_dict()
    out["dataset"] = meta.dataset or data.get("dataset")
    if out["flip_pairs"] is None and names:
        out["flip_pairs"] = [list(p) for p in meta.pairs_for(names)]
    return out


def recorded_classes(path: str | Path) -> tuple[list[str], DatasetMeta]:
    """The class names a checkpoint's model predicts and the :class:`~segkit.data.DatasetMeta`
    its training recorded (found for older checkpoints); no names for a model without a spec.

    Raises:
        CheckpointError: an unreadable file (see :func:`load_checkpoint`).
    """
    from segkit.data.meta import DatasetMeta

    spec = load_checkpoint(path)["model_spec"] or {}
    return list(spec.get("class_names") or []), DatasetMeta.from_dict(spec.get("meta") or {})


def pickle_globals(path: Path) -> list[str] | None:
    """The globals (``module.name``) a checkpoint's pickle names, read without running it.

    None when the pickle cannot be parsed to its end (a corrupt or truncated file). Reads the
    ``data.pkl`` of a ``torch.save`` zip, or a bare pickle.
    """
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found: list[str] = []
        strings: list[str] = []
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:  # protocol 4+
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
        return found
    except Exception:  # any parse failure: not a whole pickle
        return None


#: modules whose globals a checkpoint of tensors and plain values names
_TENSOR_MODULES = ("torch", "collections", "builtins", "_codecs")
#: the globals every torch.save of tensors names (not worth naming in a message)
_TENSOR_GLOBALS = ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2")


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """Why ``torch.load(path, weights_only=True)`` failed, as segkit's own message.

    A whole pickle that the weights-only loader refuses (``pickle.UnpicklingError``, whatever
    the wording of this torch version) names globals to call on load: that is code, not a
    corrupt file. torch's advice to load without ``weights_only`` is never repeated.
    """
    import pickle

    names = pickle_globals(path)
    if names is not None:
        unique = list(dict.fromkeys(names))
        foreign = [n for n in unique if n.split(".")[0] not in _TENSOR_MODULES]
        refused = isinstance(exc, pickle.UnpicklingError)  # torch's type for a refusal
        if foreign or refused:
            shown = foreign or [n for n in unique if n not in _TENSOR_GLOBALS]
            named = f" (it names {', '.join(shown[:3])})" if shown else ""
            return CheckpointError(
                f"Checkpoint {str(path)!r} asks to run code on load{named}; segkit refuses it: "
                "it loads checkpoints with torch.load(weights_only=True), which runs no code. "
                "Only load checkpoints you trust, written by segkit train; a file from elsewhere "
                "should hold tensors and plain values only (e.g. a state dict)."
            )
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip, or a pickle
        return CheckpointError(
            f"{str(path)!r} is not a PyTorch checkpoint (torch.save writes a zip archive). "
            "Pass the best.pt or last.pt of a run folder."
        )
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if "weights_only" not in ln]  # never torch's advice
    reason = next((ln for ln in lines if "Unsupported operand" in ln), None)
    reason = reason or (lines[0] if lines else type(exc).__name__)
    return CheckpointError(
        f"Checkpoint {str(path)!r} could not be read ({reason}); the file is corrupt or "
        "truncated. Use another checkpoint of the run (best.pt or last.pt) or train again."
    )


def model_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights (in eval mode).

    Pretrained encoder weights are not fetched: the checkpoint holds the trained weights.

    Args:
        path: a segkit ``best.pt`` / ``last.pt``.
        device: where the model goes ("auto" picks CUDA when available).

    Raises:
        CheckpointError: unreadable file, no model description, or weights that do not fit.
    """
    return model_from_state(load_checkpoint(path), path, device)


def model_from_state(
    state: dict[str, Any], path: str | Path, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    """:func:`model_from_checkpoint` of a checkpoint already read (``load_checkpoint(path)``),
    for a caller that needs its other keys too (the config) without reading the file twice."""
    from segkit.errors import ConfigError
    from segkit.models import load_state, rebuild_model

    spec = state["model_spec"]
    if spec is None:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds no model description (model_spec): it was trained "
            "with a model that has no .spec. Build that model yourself and load "
            "load_checkpoint(path)['model'] into it with model.load_state_dict."
        )
    from segkit.plugins import PluginError

    try:
        model = rebuild_model(spec)
    except PluginError as exc:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be loaded: {exc}") from None
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} describes a model this segkit cannot build ({exc}). "
            "Use the segkit version (and plugins) that trained it."
        ) from None
    load_state(model, state["model"], source=str(path))
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) RNG states as checkpoint-safe values."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
