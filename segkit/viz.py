"""Pictures: colour label maps, overlays, prediction grids and training curves.

The array functions are pure NumPy. The figure functions import matplotlib when called and
draw with its object API (``matplotlib.figure.Figure``, rendered by Agg), so they never
change the pyplot backend of the calling program.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# background black, then matplotlib's tab20 order (distinct, colour-blind friendlier first)
_COLORS = [
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip


def palette(n: int) -> np.ndarray:
    """``n x 3`` uint8 colours: black for label 0, then distinct colours (cycled past 21)."""
    idx = [0] + [1 + (i - 1) % (len(_COLORS) - 1) for i in range(1, n)]
    return np.array([_COLORS[i] for i in idx[:n]], dtype=np.uint8).reshape(n, 3)


def overlap_labels(masks: Any) -> Any:
    """A label map for drawing ``... x C x H x W`` 0/1 multi-label masks (numpy or torch):
    ``c + 1`` for the highest-numbered class present, 0 where none is (``H x W`` per image;
    where classes overlap the later one is drawn)."""
    c = masks.shape[-3]
    if hasattr(masks, "detach"):
        import torch

        weights = torch.arange(1, c + 1, device=masks.device).view(c, 1, 1)
        return (masks.long() * weights).amax(dim=-3)
    weights = np.arange(1, c + 1).reshape(c, 1, 1)
    return (np.asarray(masks).astype(np.int64) * weights).max(axis=-3)


def colorize(mask: np.ndarray, colors: np.ndarray | None = None) -> np.ndarray:
    """A label map ``H x W`` as an RGB image ``H x W x 3`` uint8.

    Raises:
        ValueError: a label has no colour (only when ``colors`` is given).
    """
    mask = np.asarray(mask).astype(np.int64)
    if colors is None:
        colors = palette(int(mask.max(initial=0)) + 1)
    if mask.size and (mask.min() < 0 or mask.max() >= len(colors)):
        raise ValueError(
            f"Label values {mask.min()}..{mask.max()} do not fit a palette of {len(colors)} colours."
        )
    return np.asarray(colors, dtype=np.uint8)[mask]


#: class-0 names that mean "no class here" (compared lower-case, without ``_``, ``-`` and spaces)
BACKGROUND_NAMES = frozenset(
    {"background", "bg", "backgrounds", "unlabeled", "unlabelled", "void", "none", "nodata"}
)


def background_label(class_names: Sequence[str] | None, multilabel: bool = False) -> int | None:
    """The label an overlay leaves clear: 0 when class 0 is background, None when it is a real
    class that is tinted like the others.

    Class 0 is background for a multi-label model (0 draws "no class"), a binary one, when
    nothing names the classes, and when its name says so (``background``, ``_background_``,
    Helen's ``bg``, ``unlabelled``, ``void``, ``no-data``...); otherwise (Cityscapes' road,
    CamVid's sky, a colour table whose first row is a class) it is a real class.
    """
    if multilabel or not class_names or len(class_names) <= 2:
        return 0
    name = "".join(c for c in str(class_names[0]).lower() if c not in "_- ")
    return 0 if name in BACKGROUND_NAMES else None


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    colors: np.ndarray | None = None,
    background: int | None = 0,
) -> np.ndarray:
    """Blend the colours of ``mask`` over ``image`` (``H x W x 3`` uint8); the ``background``
    label stays clear (None: every label is tinted; see :func:`background_label`)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    mask = np.asarray(mask)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"Image size {image.shape[:2]} and mask size {mask.shape} differ.")
    color = colorize(mask, colors).astype(np.float32)
    out = image.astype(np.float32)
    fg = mask != background if background is not None else np.ones(mask.shape, bool)
    out[fg] = (1.0 - alpha) * out[fg] + alpha * color[fg]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def display_bands(image: np.ndarray) -> np.ndarray:
    """An ``H x W x 3`` uint8 picture of an ``H x W x C`` input: its first three bands as RGB
    (the first band as grey when it has fewer), each stretched between its 2nd and 98th
    percentile, for overlays and previews."""
    image = np.asarray(image, dtype=np.float32)
    image = image[..., None] if image.ndim == 2 else image
    picked = image[..., :3] if image.shape[2] >= 3 else image[..., :1]
    out = np.zeros(picked.shape, np.uint8)
    for i in range(picked.shape[2]):
        band = picked[..., i]
        finite = band[np.isfinite(band)]
        if not finite.size:
            continue
        low, high = np.percentile(finite, (2, 98))
        span = high - low if high > low else 1.0
        out[..., i] = np.clip((np.nan_to_num(band, nan=low) - low) / span * 255 + 0.5, 0, 255)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def to_image(
    tensor: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """A normalised ``C x H x W`` image tensor/array back to ``H x W x 3`` uint8.

    With ``mean``/``std`` (0-1 scale, as the model's spec gives them) the normalisation is
    undone; without them each image is stretched to its own min..max. An image of other than
    1 or 3 channels (bands; a tensor is always ``C x H x W``) shows its first bands
    (:func:`display_bands`).
    """
    is_tensor = hasattr(tensor, "detach")
    arr = tensor.detach().float().cpu().numpy() if is_tensor else np.asarray(tensor)
    arr = arr.astype(np.float32)
    if arr.ndim == 3 and (arr.shape[0] in (1, 3) or is_tensor):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] not in (1, 3):
        return display_bands(arr)
    if mean is not None and std is not None and len(mean) == arr.shape[2]:
        arr = arr * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
    else:
        low, high = float(arr.min()), float(arr.max())
        arr = (arr - low) / (high - low) if high > low else np.zeros_like(arr)
    arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr


def preview_panels(
    images: Any,
    masks: Any,
    preds: Any,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    alpha: float = 0.5,
    *,
    background: int | None = 0,
) -> np.ndarray:
    """An ``H x W x 3`` uint8 array: a row per sample with image / ground truth / prediction.

    The array form of :func:`prediction_grid` (no figure, no legend), e.g. for TensorBoard.

    Args:
        images: ``N x C x H x W`` normalised images (tensor or array).
        masks: ``N x H x W`` ground-truth labels.
        preds: ``N x H x W`` predicted labels.
        num_classes: colours to allot (default: the largest label + 1).
        mean: normalisation mean to undo (see :func:`to_image`).
        std: normalisation std to undo.
        alpha: overlay opacity.
        background: the label left clear (None: class 0 is a real class, tinted too).
    """
    masks, preds = _numpy(masks), _numpy(preds)
    classes = max(int(masks.max(initial=0)), int(preds.max(initial=0))) + 1
    colors = palette(max(classes, num_classes or 0))
    rows = []
    for i in range(len(preds)):
        image = to_image(images[i], mean, std)
        overlays = [overlay(image, m[i], alpha, colors, background) for m in (masks, preds)]
        rows.append(np.concatenate([image, *overlays], axis=1))
    return np.concatenate(rows, axis=0)


def prediction_grid(
    images: Any,
    masks: Any,
    preds: Any,
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ids: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.5,
    background: int | None = 0,
) -> Path:
    """Write a PNG grid: a row per sample with image / ground truth / prediction overlays.

    Args:
        images: ``N x C x H x W`` normalised images (tensor or array).
        masks: ``N x H x W`` ground-truth labels.
        preds: ``N x H x W`` predicted labels.
        path: where the PNG goes.
        class_names: names for the colour legend.
        mean: normalisation mean to undo (see :func:`to_image`).
        std: normalisation std to undo.
        ids: sample names shown beside each row.
        title: figure title.
        alpha: overlay opacity.
        background: the label left clear and out of the legend (None: class 0 is a real
            class, tinted and listed too; see :func:`background_label`).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    masks, preds = _numpy(masks), _numpy(preds)
    n = len(preds)
    if n == 0:
        raise ValueError("prediction_grid needs at least one sample.")
    classes = max(int(masks.max()), int(preds.max())) + 1
    if class_names is not None:
        classes = max(classes, len(class_names))
    colors = palette(classes)
    height, width = masks.shape[-2:]
    fig = Figure(figsize=(9, n * 3 * height / width + 1.2), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        image = to_image(images[i], mean, std)
        panels = (
            image,
            overlay(image, masks[i], alpha, colors, background),
            overlay(image, preds[i], alpha, colors, background),
        )
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(("image", "ground truth", "prediction")[j])
        if ids is not None:
            axes[i][0].set_ylabel(str(ids[i]))
    if class_names is not None:
        handles = [
            Patch(color=colors[k] / 255.0, label=str(name))
            for k, name in enumerate(class_names)
            if k != background
        ]
        fig.legend(handles=handles, loc="outside lower center", ncol=min(6, max(1, len(handles))))
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_curves(
    history: Sequence[Mapping[str, Any]], path: str | Path, monitor: str | None = None
) -> Path:
    """Write a PNG with the train/validation loss and the monitored metric per epoch.

    Args:
        history: rows as in ``history.csv`` (``epoch``, ``train_loss``, ``val_loss``, ...).
        path: where the PNG goes.
        monitor: the metric to plot beside the losses; when it is a loss (or None) the first
            of ``val_f1_overall``, ``val_soft_dice``, ``val_miou``, ``val_mean_f1`` present.
    """
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("plot_curves needs at least one history row.")
    metric = monitor if monitor and "loss" not in monitor else None
    if metric is None:
        candidates = ("val_f1_overall", "val_soft_dice", "val_miou", "val_mean_f1")
        metric = next((m for m in candidates if any(_ok(r.get(m)) for r in history)), None)
    fig = Figure(figsize=(10 if metric else 5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if metric else 1, squeeze=False)[0]
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        _plot(axes[0], history, key, style)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    if metric:
        _plot(axes[1], history, metric, "-o")
        axes[1].set_xlabel("epoch")
        axes[1].set_title(metric)
    return _save(fig, path)


def _ok(value: Any) -> bool:
    return value is not None and value != "" and not math.isnan(float(value))


def _plot(ax: Any, history: Sequence[Mapping[str, Any]], key: str, style: str) -> None:
    points = [(float(r["epoch"]), float(r[key])) for r in history if _ok(r.get(key))]
    if points:
        x, y = zip(*points)
        from matplotlib.ticker import MaxNLocator

        ax.plot(x, y, style, label=key, markersize=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _save(fig: Any, path: str | Path) -> Path:
    """Write the figure atomically: an interrupted run leaves the previous image, not half one."""
    from segkit._files import replace_atomically

    kind = Path(path).suffix.lstrip(".").lower() or "png"
    return replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=80, format=kind))
