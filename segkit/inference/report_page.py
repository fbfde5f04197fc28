"""The HTML of the report page (:mod:`segkit.inference.report`): one file, inline CSS and SVG,
no script, pictures as PNG files beside it (``images/``, ``curves.png``)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em;margin:0 0 .3em} h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em} td,th{padding:2px 6px;border:1px solid #ddd;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} .about td{text-align:left}
.cm td{width:3.2em;text-align:center} .cm th.r{text-align:left;white-space:nowrap}
.cm th.c{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left;white-space:nowrap}
.cases td{vertical-align:top} .cases td.l{max-width:15em;word-break:break-all}
.cases img{width:192px;image-rendering:pixelated;display:block}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #888;vertical-align:middle;margin:0 .25em 0 .8em}
.note{color:#555;font-size:.9em;max-width:70em} .li{white-space:nowrap}
"""


def page(report: Any, result: Mapping[str, float], rows: Mapping[str, list], curves: Any) -> str:
    """The page's HTML."""
    setup = report.setup
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>segkit evaluation report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>segkit evaluation report</h1>",
        f"<p class='note'>{report.count} images scored; per-image table: "
        "<a href='per_image.csv'>per_image.csv</a> (summing its tp/fp/fn columns gives the "
        "figures below).</p>",
        "<h2>What was evaluated</h2>",
        _about(setup.about),
        "<h2>Summary</h2>",
        _summary(report.names, list(setup.groups), result),
        "<h2>Per class</h2>",
        _bars(report.names, result),
    ]
    if setup.boundary is not None:
        parts += [f"<h2>Boundaries (tolerance {setup.boundary:g} px, mean over images)</h2>"]
        parts += [_boundary(report)]
    if not setup.multilabel and report.total is not None:
        parts += ["<h2>Confusion matrix (rows: truth, normalised per row)</h2>"]
        parts += [_confusion(report.total, report.names)]
    for kind in ("worst", "best"):
        parts += [f"<h2>The {len(rows[kind])} {kind} images</h2>", _cases(report, rows[kind])]
    if curves:
        parts += ["<h2>Training curves</h2>", f"<img src='{curves}' alt='training curves'>"]
    parts += ["</body></html>"]
    return "\n".join(parts)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _about(about: Mapping[str, str]) -> str:
    rows = "".join(f"<tr><th class='l'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in about.items())
    return f"<table class='about'>{rows}</table>"


def _summary(names: list[str], groups: list[str], result: Mapping[str, float]) -> str:
    head = (
        "<tr><th class='l'>class</th><th>F1</th><th>IoU</th><th>precision</th><th>recall</th></tr>"
    )
    body = []
    for name in names:
        cells = "".join(f"<td>{_fmt(result.get(f'{k}_{name}'))}</td>" for k in _SCORES)
        body.append(f"<tr><td class='l'>{_e(name)}</td>{cells}</tr>")
    for group in groups:
        f1 = _fmt(result.get(f"f1_{group}"))
        body.append(
            f"<tr><td class='l'>group {_e(group)}</td><td>{f1}</td><td colspan=3></td></tr>"
        )
    shown = {f"{k}_{n}" for k in _SCORES for n in names} | {f"f1_{g}" for g in groups}
    rest = [(k, v) for k, v in result.items() if k not in shown]
    for key, value in rest:
        body.append(f"<tr><td class='l'>{_e(key)}</td><td colspan=4>{_fmt(value)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


_SCORES = ("f1", "iou", "precision", "recall")


def _boundary(report: Any) -> str:
    means = report.boundary_means()
    head = "<tr><th class='l'>class</th><th>boundary IoU</th><th>boundary F</th><th>HD95 (px)</th></tr>"
    body = []
    for name in report.names:
        cells = "".join(
            f"<td>{_fmt(means.get(f'boundary_{k}_{name}'), 3)}</td>" for k in ("biou", "bf", "hd95")
        )
        body.append(f"<tr><td class='l'>{_e(name)}</td>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _bars(names: list[str], result: Mapping[str, float]) -> str:
    """An SVG bar chart: each class's IoU and F1 (0..1)."""
    row_h, label_w, bar_w = 30, 150, 420
    height = row_h * len(names) + 30
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 120}' "
        f"height='{height}' font-size='12' font-family='sans-serif'>"
    ]
    for i, name in enumerate(names):
        y = 20 + i * row_h
        out.append(f"<text x='{label_w - 6}' y='{y + 13}' text-anchor='end'>{_e(name)}</text>")
        for j, (key, color) in enumerate((("iou", "#4c78a8"), ("f1", "#f58518"))):
            value = result.get(f"{key}_{name}", float("nan"))
            width = 0 if math.isnan(value) else bar_w * max(0.0, min(1.0, value))
            yy = y + j * 12
            out.append(
                f"<rect x='{label_w}' y='{yy}' width='{width:.1f}' height='8' fill='{color}'/>"
            )
            out.append(
                f"<text x='{label_w + width + 4:.1f}' y='{yy + 9}' font-size='10'>"
                f"{_fmt(value, 3)}</text>"
            )
    out.append(
        f"<rect x='{label_w}' y='2' width='10' height='8' fill='#4c78a8'/>"
        f"<text x='{label_w + 14}' y='10'>IoU</text>"
        f"<rect x='{label_w + 50}' y='2' width='10' height='8' fill='#f58518'/>"
        f"<text x='{label_w + 64}' y='10'>F1</text></svg>"
    )
    return "".join(out)


def _confusion(total: np.ndarray, names: list[str]) -> str:
    """A heatmap table of the confusion matrix, each truth row divided by its pixels."""
    m = np.asarray(total, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    head = "".join(f"<th class='c'>{_e(n)}</th>" for n in names)
    body = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            v = share[i, j]
            light = int(255 - 200 * v)
            ink = "#fff" if v > 0.55 else "#222"
            color = f"rgb({light},{light},255)" if i == j else f"rgb(255,{light},{light})"
            cells.append(f"<td style='background:{color};color:{ink}'>{v:.2f}</td>")
        body.append(
            f"<tr><th class='r'>{_e(name)} <small>({int(rows[i, 0])} px)</small></th>"
            f"{''.join(cells)}</tr>"
        )
    return (
        f"<table class='cm'><tr><th class='l'>truth \\ predicted</th>{head}</tr>"
        f"{''.join(body)}</table>"
    )


def _legend(report: Any) -> str:
    setup, colors = report.setup, report.colors
    items = []
    for c, name in enumerate(report.names):
        if c == setup.background:
            items.append(f"<span class='sw' style='background:none'></span>{_e(name)} (clear)")
            continue
        r, g, b = (int(x) for x in colors[c])
        items.append(f"<span class='sw' style='background:rgb({r},{g},{b})'></span>{_e(name)}")
    errors = dict(report.error_colors)
    if setup.background is None:
        errors.pop("false positive")
        errors.pop("false negative")
    for name, (r, g, b) in errors.items():
        items.append(f"<span class='sw' style='background:rgb({r},{g},{b})'></span>{name}")
    return "<p class='note'>" + "".join(f"<span class='li'>{i}</span> " for i in items) + "</p>"


def _cases(report: Any, rows: list[dict[str, Any]]) -> str:
    """The kept images: id, score and the present classes' IoU beside their four pictures."""
    if not rows:
        return "<p class='note'>none</p>"
    setup = report.setup
    out = [
        f"<p class='note'>Score: mean IoU of the classes in the image's truth or prediction"
        f"{' (background left out)' if setup.background is not None else ''}. "
        f"{_e(setup.scored_at)}</p>",
        _legend(report),
        "<table class='cases'><tr><th>#</th><th class='l'>image</th><th>image</th>"
        "<th>truth</th><th>prediction</th><th>errors</th></tr>",
    ]
    for rank, entry in enumerate(rows, 1):
        row = entry["row"]
        present = [
            f"{_e(n)} {_fmt(row[f'iou_{n}'], 3)}"
            for n in report.names
            if not (isinstance(row[f"iou_{n}"], float) and math.isnan(row[f"iou_{n}"]))
        ]
        info = (
            f"<b>{_e(row['id'])}</b><br>score {_fmt(row['score'])}<br>"
            f"<small>{_e(row['path'])}</small><br><small>IoU: {'; '.join(present)}</small>"
        )
        pics = "".join(f"<td><img src='{f}' alt='{_e(f)}'></td>" for f in entry["files"])
        if not entry["files"]:
            pics = "<td colspan=4>(no pictures for multi-label models)</td>"
        out.append(f"<tr><td>{rank}</td><td class='l'>{info}</td>{pics}</tr>")
    out.append("</table>")
    return "".join(out)
