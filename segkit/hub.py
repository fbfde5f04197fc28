"""Models as Hub folders: ``config.json`` + ``model.safetensors`` + a README model card.

:func:`export_hub` writes the trained model of a checkpoint the way segmentation-models-pytorch
and the Hugging Face Hub share models. segkit reads such a folder back through
:func:`segkit.engine.load_checkpoint` (``segkit predict --checkpoint DIR``, ``Predictor(DIR)``);
when the architecture is one of smp's, ``config.json`` also holds the init arguments smp's hub
mixin expects (``_model_class`` and the constructor's keywords), so
``segmentation_models_pytorch.from_pretrained(DIR)`` builds the same network. Uploading is
``huggingface_hub``'s job: ``hf upload USER/REPO DIR``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from segkit._files import write_bytes_atomic
from segkit.engine.checkpoint import (
    FORMAT,
    HUB_CONFIG,
    HUB_WEIGHTS,
    VERSION,
    load_checkpoint,
    model_from_state,
)
from segkit.errors import ConfigError

CARD = "README.md"


def export_hub(checkpoint: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``checkpoint``'s model as a Hub folder ``out_dir`` and return it.

    The weights are those prediction uses (the evaluated model: the EMA average where the
    run kept one), bit for bit; the description (spec, class names, training config, last
    metrics) goes under ``config.json``'s ``"_segkit"``.

    Raises:
        CheckpointError: the checkpoint cannot be read or holds no model description.
        ConfigError: ``out_dir`` is a file, or already holds a Hub folder and not ``overwrite``.
    """
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    state = load_checkpoint(checkpoint)
    model = model_from_state(state, checkpoint)  # checks that the weights fit the spec
    smp = smp_config(model)
    # smp reads the network's own names; segkit's model holds the network as ``net``
    prefix = "net." if smp else ""
    weights = {
        k.removeprefix(prefix): v.detach().cpu().contiguous() for k, v in model.state_dict().items()
    }
    described = {
        "format": FORMAT,
        "version": VERSION,
        "model_spec": state["model_spec"],
        "class_names": state.get("class_names"),
        "config": state["config"],
        "hooks": {k: v for k, v in state.get("hooks", {}).items() if k in ("eval", "best")},
        "epoch": state.get("epoch"),
        "weights_prefix": prefix,
    }
    config = {**smp, "_segkit": described}
    from safetensors.torch import save

    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / HUB_WEIGHTS, save(weights, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, default=str, allow_nan=True)
    write_bytes_atomic(out / HUB_CONFIG, (text + "\n").encode())
    write_bytes_atomic(out / CARD, model_card(described, out, bool(smp)).encode())
    return out


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--hub {str(out)!r} is a file; give a folder (created if missing).")
    held = [n for n in (HUB_CONFIG, HUB_WEIGHTS, CARD) if (out / n).exists()]
    if held and not overwrite:
        raise ConfigError(
            f"{str(out)!r} already holds {', '.join(held)}. Choose another folder, or replace "
            "them with --overwrite (export_hub(..., overwrite=True))."
        )


def smp_config(model: torch.nn.Module) -> dict[str, Any]:
    """What smp's ``from_pretrained`` reads from ``config.json`` ({} for other models): the
    class name and the constructor's keywords, with no encoder weights to fetch (the folder
    holds the trained ones) and the input channels the weights have."""
    net = getattr(model, "net", None)
    init = getattr(net, "_hub_mixin_config", None)
    if init is None or not type(net).__module__.startswith("segmentation_models_pytorch"):
        return {}
    config = json.loads(json.dumps(dict(init), default=str))
    config.update(encoder_weights=None, in_channels=model.spec.in_channels)
    return {"_model_class": type(net).__name__, **config}


def model_card(described: dict[str, Any], out: Path, smp: bool) -> str:
    """The README model card: what the model segments, how well, and how to run it."""
    spec = described["model_spec"]
    names = described.get("class_names") or spec.get("class_names") or []
    hooks = described.get("hooks", {})
    metrics = (hooks.get("eval") or {}).get("metrics") or {}
    best = hooks.get("best") or {}
    library = "segmentation-models-pytorch" if smp else "segkit"
    lines = [
        "---",
        f"library_name: {library}",
        "pipeline_tag: image-segmentation",
        "tags: [segkit, semantic-segmentation, pytorch]",
        "---",
        "",
        f"# {spec['arch']}" + (f" ({spec['encoder']})" if spec.get("encoder") else ""),
        "",
        f"A segkit {spec.get('task', '')} segmentation model: {len(names)} classes, "
        f"{spec.get('in_channels', 3)} input channels, trained {described.get('epoch')} epochs"
        f" at {spec.get('options', {}).get('image_size')} pixels.",
        "",
        "## Classes",
        "",
        "| id | class |",
        "| --- | --- |",
        *[f"| {i} | {name} |" for i, name in enumerate(names)],
        "",
        "## Metrics (the last validation of training)",
        "",
        *_metric_lines(metrics, best),
        "",
        "## How to run it",
        "",
        "```bash",
        "pip install segkit",
        f"segkit predict --checkpoint {out.name} image.jpg --out predictions/",
        "```",
        "",
        "```python",
        "from segkit.inference import Predictor",
        "",
        f'Predictor("{out.name}").predict(["image.jpg"], "predictions/")  # label PNGs',
        "```",
    ]
    if smp:
        lines += [
            "",
            "The network alone, with segmentation-models-pytorch (feed it images normalised "
            f"with mean {spec.get('mean')} and std {spec.get('std')} on the 0-1 scale):",
            "",
            "```python",
            "import segmentation_models_pytorch as smp",
            "",
            f'model = smp.from_pretrained("{out.name}")',
            "```",
        ]
    return "\n".join(lines) + "\n"


def _metric_lines(metrics: dict[str, Any], best: dict[str, Any]) -> list[str]:
    if not metrics:
        return ["No validation metrics were recorded."]
    rows = ["| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        shown = "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.4f}"
        rows.append(f"| {key} | {shown} |")
    if best.get("best_epoch") is not None:
        rows.append("")
        rows.append(
            f"Best {best.get('monitor')}: {best.get('best'):.4f} at epoch {best['best_epoch']}."
        )
    return rows
