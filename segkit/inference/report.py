"""The report page of an evaluation (``evaluate --report DIR``): where the model fails.

:class:`Report` takes each scored image as the scorer counts it
(:class:`~segkit.inference.scoring.ScoredImage`) and streams: its row of the per-image table
(``per_image.csv``: per-class pixel counts ``tp``/``fp``/``fn``, IoU and F1, which summed
over the rows give the data set's figures exactly) is written at once, and only the ``n``
worst and ``n`` best images are kept, as small pictures made when an image enters either
list. :meth:`Report.write` then writes ``index.html`` beside its pictures (no server, no
script, no network: it opens from disk): the summary table, a per-class bar chart, the
row-normalised confusion matrix, the worst and best images (image | truth | prediction |
error map), the training curves of the checkpoint's run and what was evaluated.

An image's *score* (what ranks it) is the mean IoU of the classes present in its truth or
its prediction, background left out while another class is present; 1 where neither holds
anything but background.
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segkit.inference.report_page import page

#: images kept at each end of the ranking (``evaluate --report-n``)
REPORT_N = 8
#: the kept pictures' longer side at most, in pixels
THUMB_SIDE = 256


@dataclass
class ReportSetup:
    """What the report needs to know of the model and the data.

    Attributes:
        class_names: one per class (a binary model: two, background first).
        ignore_index: the truth label left out of the counts (None: none).
        background: the class left out of an image's score and left clear in overlays
            (None: class 0 is a real class).
        groups: class groups whose F1 is reported (``{"eyes": [4, 5]}``).
        colors: the class colours (``C x 3`` uint8); None: segkit's palette.
        multilabel: each class its own 0/1 mask (counts ``C x 2 x 2``; no pictures).
        boundary: the pixel tolerance of boundary metrics (None: none).
        about: what was evaluated, as label -> text (checkpoint, data, split, options...).
        scored_at: how the pictures' size relates to the images (said on the page).
    """

    class_names: Sequence[str]
    ignore_index: int | None = None
    background: int | None = 0
    groups: Mapping[str, Sequence[int]] = field(default_factory=dict)
    colors: np.ndarray | None = None
    multilabel: bool = False
    boundary: float | None = None
    about: dict[str, str] = field(default_factory=dict)
    scored_at: str = ""


@dataclass(order=True)
class _Kept:
    key: tuple[float, int]
    row: dict[str, Any] = field(compare=False)
    pictures: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(compare=False)


class Report:
    """The streaming report of one evaluation into ``folder``.

    Args:
        folder: where ``index.html``, ``per_image.csv`` and the pictures go (made if missing).
        setup: the classes and what was evaluated (:class:`ReportSetup`).
        n: how many worst and best images the page shows.
    """

    def __init__(self, folder: str | Path, setup: ReportSetup, n: int = REPORT_N) -> None:
        if n < 0:
            raise ValueError(f"report n={n}: give 0 or more images to show.")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.setup, self.n = setup, n
        self.names = [str(c) for c in setup.class_names]
        self.colors = class_colors(len(self.names), setup.colors, setup.background)
        self.error_colors = ERROR_COLORS
        self.columns = self._columns()
        # kept open across add() calls (rows stream out as images are scored); close() ends it
        self._file = open(self.folder / "per_image.csv", "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.DictWriter(self._file, self.columns)
        self._csv.writeheader()
        self.worst: list[_Kept] = []  # a max-heap of the lowest scores (keys negated)
        self.best: list[_Kept] = []  # a min-heap of the highest scores
        self.count = 0
        self.total: np.ndarray | None = None
        self._boundary_sums: dict[str, list[float]] = {}

    def _columns(self) -> list[str]:
        cols = ["id", "path", "score", "pixels"]
        for name in self.names:
            cols += [f"{k}_{name}" for k in ("iou", "f1", "tp", "fp", "fn")]
        for group in self.setup.groups:
            cols += [f"{k}_{group}" for k in ("f1", "tp", "fp", "fn")]
        if len(self.names) == 2 and not self.setup.multilabel:
            cols.append("dice")
        if self.setup.boundary is not None:
            from segkit.boundary import BOUNDARY_SCORES

            for name in self.names:
                cols += [f"{k}_{name}" for k in BOUNDARY_SCORES]
        return cols

    def add(self, image: Any) -> None:
        """Count one :class:`~segkit.inference.scoring.ScoredImage`: its CSV row now, its
        pictures if it is among the worst or best so far."""
        counts = image.counts.numpy()
        self.total = counts.copy() if self.total is None else self.total + counts
        row = self._row(image.id, image.path, counts)
        needs_view = self.setup.boundary is not None
        key = (float(row["score"]), self.count)
        keep_worst = self.n and (len(self.worst) < self.n or -self.worst[0].key[0] > key[0])
        keep_best = self.n and (len(self.best) < self.n or self.best[0].key[0] < key[0])
        pictures = None
        if image.view is not None and (needs_view or keep_worst or keep_best):
            picture, truth, pred = image.view()
            if needs_view:
                row.update(self._boundary(truth, pred))
                self._add_boundary(row)
            if keep_worst or keep_best:
                pictures = _thumbs(picture, truth, pred)
        self._csv.writerow({k: _cell(v) for k, v in row.items()})
        if keep_worst:
            _push(self.worst, _Kept((-key[0], -key[1]), row, pictures), self.n)
        if keep_best:
            _push(self.best, _Kept(key, row, pictures), self.n)
        self.count += 1

    def _row(self, image_id: str, path: str, counts: np.ndarray) -> dict[str, Any]:
        tp, fp, fn, pixels = pixel_counts(counts, self.setup.multilabel)
        iou = _ratio(tp, tp + fp + fn)
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        row: dict[str, Any] = {"id": image_id, "path": path, "pixels": int(pixels)}
        for c, name in enumerate(self.names):
            row.update({f"iou_{name}": iou[c], f"f1_{name}": f1[c]})
            row.update(
                {f"tp_{name}": int(tp[c]), f"fp_{name}": int(fp[c]), f"fn_{name}": int(fn[c])}
            )
        for group, classes in self.setup.groups.items():
            gtp, gfp, gfn = group_counts(counts, classes)
            row.update({f"tp_{group}": gtp, f"fp_{group}": gfp, f"fn_{group}": gfn})
            row[f"f1_{group}"] = _ratio(2 * gtp, 2 * gtp + gfp + gfn)
        if "dice" in self.columns:
            row["dice"] = f1[1]
        row["score"] = image_score(tp, fp, fn, self.setup.background)
        return row

    def _boundary(self, truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        from segkit.boundary import boundary_scores

        out: dict[str, float] = {}
        for c, name in enumerate(self.names):
            scores = boundary_scores(
                truth == c, pred == c, self.setup.boundary, ignore=_ignored(truth, self.setup)
            )
            out.update({f"{k}_{name}": v for k, v in scores.items()})
        return out

    def _add_boundary(self, row: dict[str, Any]) -> None:
        for name in self._boundary_keys():
            if not math.isnan(row[name]):
                sums = self._boundary_sums.setdefault(name, [0.0, 0])
                sums[0], sums[1] = sums[0] + row[name], sums[1] + 1

    def _boundary_keys(self) -> list[str]:
        if self.setup.boundary is None:
            return []
        from segkit.boundary import BOUNDARY_SCORES

        return [f"{k}_{n}" for n in self.names for k in BOUNDARY_SCORES]

    def boundary_means(self) -> dict[str, float]:
        """Each boundary score's mean over the images where it is defined (NaN: none), as
        ``boundary_<score>_<class>``; empty without boundary metrics."""
        out = {}
        for key in self._boundary_keys():
            total, n = self._boundary_sums.get(key, (0.0, 0))
            out[f"boundary_{key}"] = total / n if n else float("nan")
        return out

    def close(self) -> None:
        """Close the per-image table (also done by :meth:`write`)."""
        if not self._file.closed:
            self._file.close()

    def write(self, result: Mapping[str, float], history: Path | None = None) -> Path:
        """Write the page (and its pictures) with the data-set ``result``; its path.

        Args:
            result: evaluate's metric dict.
            history: the run's ``history.csv`` (its curves are drawn when it exists).
        """
        self.close()
        if self.total is None:
            raise ValueError("The report saw no images.")
        pictures = self.folder / "images"
        pictures.mkdir(exist_ok=True)
        worst = [k for k in sorted(self.worst, key=lambda k: (-k.key[0], -k.key[1]))]
        best = sorted(self.best, key=lambda k: (-k.key[0], k.key[1]))
        rows = {"worst": self._draw(worst, "worst"), "best": self._draw(best, "best")}
        curves = _curves(history, self.folder) if history is not None else None
        text = page(self, result, rows, curves)
        path = self.folder / "index.html"
        path.write_text(text, encoding="utf-8")
        return path

    def _draw(self, kept: list[_Kept], kind: str) -> list[dict[str, Any]]:
        """Write the kept images' pictures; the rows the page shows (with their files)."""
        from PIL import Image

        colors = self.colors
        out = []
        for rank, k in enumerate(kept, 1):
            entry: dict[str, Any] = {"row": k.row, "files": []}
            if k.pictures is not None:
                picture, truth, pred = k.pictures
                panels = draw_panels(picture, truth, pred, colors, self.setup)
                for name, panel in zip(("image", "truth", "prediction", "errors"), panels):
                    rel = f"images/{kind}_{rank:02d}_{name}.png"
                    Image.fromarray(panel).save(self.folder / rel)
                    entry["files"].append(rel)
            out.append(entry)
        return out


def pixel_counts(counts: np.ndarray, multilabel: bool = False) -> tuple[np.ndarray, ...]:
    """``(tp, fp, fn, pixels)`` per class of a confusion matrix (rows truth; multi-label:
    ``C x 2 x 2``), pixels being those counted (the ignore label left out)."""
    m = np.asarray(counts, dtype=np.int64)
    if multilabel:
        return m[:, 1, 1], m[:, 0, 1], m[:, 1, 0], m[0].sum()
    tp = np.diag(m)
    return tp, m.sum(axis=0) - tp, m.sum(axis=1) - tp, m.sum()


def group_counts(counts: np.ndarray, classes: Sequence[int]) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of a class group: its truth pixels predicted in the group, pixels
    predicted in it that are not, and its truth pixels predicted outside it."""
    m = np.asarray(counts, dtype=np.int64)
    idx = list(classes)
    tp = int(m[np.ix_(idx, idx)].sum())
    return tp, int(m[:, idx].sum()) - tp, int(m[idx, :].sum()) - tp


def image_score(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, background: int | None) -> float:
    """Mean IoU of the classes in an image's truth or prediction (background left out while
    another class is there); 1.0 when neither holds anything but background."""
    present = (tp + fp + fn) > 0
    if background is not None and present.sum() > 1:
        present[background] = False
    if background is not None and present.sum() == 1 and present[background]:
        return 1.0
    if not present.any():
        return 1.0
    return float(np.mean(tp[present] / (tp + fp + fn)[present]))


def class_colors(n: int, colors: np.ndarray | None, background: int | None) -> np.ndarray:
    """``n x 3`` colours of the classes: those recorded, else segkit's palette (whose black
    class 0 becomes a colour when class 0 is a real class)."""
    from segkit.viz import palette

    if colors is not None and len(colors) >= n:
        return np.asarray(colors, dtype=np.uint8)[:n]
    if background is None:
        return palette(n + 1)[1:]
    return palette(n)


#: error-map colours: false positive, false negative, one class for another, ignored
ERROR_COLORS = {
    "false positive": (235, 30, 30),
    "false negative": (30, 210, 60),
    "wrong class": (255, 170, 0),
    "ignored": (255, 255, 255),
}


def draw_panels(
    picture: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors: np.ndarray, setup: Any
) -> list[np.ndarray]:
    """image | truth | prediction | error map, each ``H x W x 3`` uint8.

    The error map greys the image and paints false positives (a class predicted on
    background), false negatives (background predicted on a class) and one class taken for
    another in their colours (:data:`ERROR_COLORS`); where class 0 is a real class every
    error is "wrong class". Ignored truth pixels are white in the truth and the error map.
    """
    ignored = _ignored(truth, setup)
    bg = setup.background
    safe = np.where(ignored, bg if bg is not None else 0, truth)
    panels = [picture]
    for labels in (safe, pred):
        tinted = _tint(picture, labels, colors, bg)
        panels.append(tinted)
    panels[1][ignored] = ERROR_COLORS["ignored"]
    grey = picture.mean(axis=2, keepdims=True).astype(np.float32) * 0.45
    errors = np.repeat(grey, 3, axis=2).astype(np.uint8)
    wrong = (pred != truth) & ~ignored
    if bg is not None:
        fp = wrong & (truth == bg)
        fn = wrong & (pred == bg)
        errors[fp] = ERROR_COLORS["false positive"]
        errors[fn] = ERROR_COLORS["false negative"]
        errors[wrong & ~fp & ~fn] = ERROR_COLORS["wrong class"]
    else:
        errors[wrong] = ERROR_COLORS["wrong class"]
    errors[ignored] = ERROR_COLORS["ignored"]
    panels.append(errors)
    return panels


def _tint(
    picture: np.ndarray, labels: np.ndarray, colors: np.ndarray, bg: int | None
) -> np.ndarray:
    out = picture.astype(np.float32)
    fg = labels != bg if bg is not None else np.ones(labels.shape, bool)
    color = colors[np.clip(labels, 0, len(colors) - 1)].astype(np.float32)
    out[fg] = 0.4 * out[fg] + 0.6 * color[fg]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _ignored(truth: np.ndarray, setup: Any) -> np.ndarray:
    n = len(setup.class_names)
    out = (truth < 0) | (truth >= n)
    if setup.ignore_index is not None:
        out |= truth == setup.ignore_index
    return out


def _thumbs(picture: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """The pictures at most :data:`THUMB_SIDE` on their longer side (labels: nearest)."""
    h, w = truth.shape
    step = max(1, math.ceil(max(h, w) / THUMB_SIDE))
    if step == 1:
        return picture.copy(), truth.copy(), pred.copy()
    from PIL import Image

    size = (max(1, w // step), max(1, h // step))
    small = np.asarray(Image.fromarray(picture).resize(size, Image.BILINEAR))
    return (
        small,
        truth[::step, ::step][: size[1], : size[0]].copy(),
        pred[::step, ::step][: size[1], : size[0]].copy(),
    )


def _push(heap: list[_Kept], item: _Kept, n: int) -> None:
    if len(heap) < n:
        heapq.heappush(heap, item)
    else:
        heapq.heapreplace(heap, item)


def _ratio(num: Any, den: Any) -> Any:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out if out.ndim else float(out)


def _cell(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return value


def _curves(history: Path, folder: Path) -> str | None:
    """``curves.png`` of the run's ``history.csv`` (None when there is none or it is empty)."""
    if not history.is_file():
        return None
    from segkit.viz import plot_curves

    with open(history, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    plot_curves(rows, folder / "curves.png")
    return "curves.png"


def open_report(
    folder: str | Path,
    predictor: Any,
    evaluator: Any,
    about: dict[str, str],
    *,
    n: int = REPORT_N,
    boundary: float | None = None,
) -> Report:
    """The report of an evaluation by ``predictor`` counted into ``evaluator`` (its classes,
    groups and ignore label; the recipe's colours, background and size)."""
    recipe = predictor.recipe
    if boundary is not None and not boundary > 0:
        raise ValueError(f"boundary={boundary!r}: give a positive tolerance in pixels, e.g. 2.")
    names = evaluator.class_names or [str(c) for c in range(max(2, predictor.spec.classes))]
    if recipe.windows is not None:
        scored_at = (
            f"Scored in windows of {recipe.windows.tile} px at each image's own size; pictures "
            f"are shown at most {THUMB_SIDE} px on their longer side."
        )
    else:
        scored_at = (
            f"Scored (and shown) at {recipe.size}x{recipe.size}, the training size, through the "
            f"validation transform (resize: {recipe.resize}), not at each image's own size."
        )
    setup = ReportSetup(
        class_names=names,
        ignore_index=evaluator.ignore_index,
        background=recipe.background,
        groups=dict(evaluator.groups or {}) if not recipe.multilabel else {},
        colors=recipe.colors,
        multilabel=recipe.multilabel,
        boundary=boundary,
        about=about,
        scored_at=scored_at,
    )
    return Report(folder, setup, n)
