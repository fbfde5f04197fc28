"""Colour-coded RGB masks mapped to class ids by a class-colour table.

::

    <root>/[<split>/]images/<name>.jpg
    <root>/[<split>/]masks/<name>.png       RGB: each class painted in its colour
    class_dict.csv                          name,r,g,b  (CamVid's file), or a YAML/JSON table
    classes.json                            {"Water": "#50E3C2", ...} (hex colours), or
                                            Supervisely's {"classes": [{"title", "color"}]}

The table's row order gives the class ids (first row: id 0) and its colours travel into the
model's metadata, so overlays and ``segkit predict --color`` paint predictions the same way.
CamVid's Kaggle layout (``train/`` + ``train_labels/<name>_L.png``) reads with
``images="{split}"``, ``masks="{split}_labels"``, ``mask_suffix="_L"``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import Sample, SegmentationDataset, select_ids
from segkit.data.io import DataNotFoundError, read_image, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.pairs import folder_pairs, read_masks
from segkit.data.registry import register_dataset
from segkit.errors import DataError

Color = tuple[int, int, int]


def _hex_color(text: str, where: str) -> Color:
    """``#RRGGBB`` or ``#RGB`` (any case, ``#`` optional) as RGB."""
    digits = text.strip().removeprefix("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    try:
        if len(digits) != 6:
            raise ValueError(digits)
        return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    except ValueError:
        raise DataError(
            f"{where}: colour {text!r} is not a hex colour; write it as '#RRGGBB' (e.g. "
            "'#50E3C2') or as three values 0..255, [r, g, b]."
        ) from None


def _color(value: Any, where: str) -> Color:
    from segkit._yaml import plain

    if isinstance(plain(value), str):  # a YAML scalar that reads as text, or a JSON string
        return _hex_color(value, where)
    if plain(value) is None:  # YAML's `Water: #50E3C2` is a comment: no value at all
        raise DataError(
            f"{where}: no colour given. In YAML an unquoted '#' starts a comment: quote a hex "
            "colour ('#50E3C2') or write [r, g, b]."
        )
    try:
        rgb = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise DataError(f"{where}: colour {value!r} is not three values 0..255 (r, g, b).")
    return rgb  # type: ignore[return-value]


def _csv_table(path: Path) -> list[tuple[str, Color]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if not {"name", "r", "g", "b"} <= set(header):
        raise DataError(
            f"Class table {str(path)!r} needs a header with the columns name,r,g,b (as CamVid's "
            f"class_dict.csv), got {','.join(header) or 'an empty file'}."
        )
    at = [header.index(k) for k in ("name", "r", "g", "b")]
    return [
        (row[at[0]].strip(), _color([row[i] for i in at[1:]], f"{path} line {n}"))
        for n, row in enumerate(rows[1:], start=2)
        if any(cell.strip() for cell in row)
    ]


def _mapping_table(path: Path) -> list[tuple[str, Color]]:
    """A YAML or JSON table: ``name: colour`` pairs, or a list of ``{name, color}`` items
    (Supervisely's ``classes.json``: ``title`` and a hex ``color``), at the top or under
    ``classes``; a colour is ``[r, g, b]`` or hex ``"#RRGGBB"``."""
    data = _read_mapping(path)
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if isinstance(data, dict):  # name: [r, g, b] or name: "#RRGGBB"
        return [(str(k), _color(v, f"{path} class {str(k)!r}")) for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        names = [str(d.get("name", d.get("title"))) for d in data]
        return [
            (name, _color(d.get("color", d.get("colour")), f"{path} class {name!r}"))
            for name, d in zip(names, data)
        ]
    raise DataError(
        f"Class table {str(path)!r} is neither a mapping 'name: [r, g, b]' (or 'name: \"#RRGGBB\"') "
        "nor a list of {name: ..., color: ...} items."
    )


def _read_mapping(path: Path) -> Any:
    """A JSON (``.json``) or YAML class table's plain data."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"Class table {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg})."
            ) from None
    from segkit._yaml import load_yaml

    return load_yaml(text)


def read_class_table(path: str | Path) -> tuple[list[str], list[Color]]:
    """Class names and colours of a CSV (``name,r,g,b``), YAML or JSON table, in id order
    (YAML/JSON colours as ``[r, g, b]`` or hex ``"#RRGGBB"``, any case).

    Raises:
        DataError: missing or malformed file, repeated names or colours (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"Class table {str(path)!r} does not exist. Give a CSV with name,r,g,b columns or a "
            "YAML/JSON file (relative paths are taken from the data root)."
        )
    mapping = path.suffix.lower() in (".yaml", ".yml", ".json")
    table = _mapping_table(path) if mapping else _csv_table(path)
    names, colors = [n for n, _ in table], [c for _, c in table]
    for what, values in (("name", names), ("colour", colors)):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise DataError(f"Class table {str(path)!r} repeats the {what} {twice[0]}.")
    if len(names) < 2:
        raise DataError(f"Class table {str(path)!r} lists {len(names)} class(es); give at least 2.")
    return names, colors


def colors_to_ids(
    rgb: np.ndarray,
    colors: Sequence[Color],
    names: Sequence[str],
    path: str | Path = "<array>",
    unknown_to: int | None = None,
) -> np.ndarray:
    """Map an HxWx3 RGB mask to class ids (HxW uint8) by the table's colours.

    Args:
        unknown_to: id for pixels of a colour not in the table; None: such a colour is an error.

    Raises:
        DataError: a colour not in the table (names the file, the colour and the nearest class).
    """
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    table = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int32)
    order = np.argsort(table)
    at = np.clip(np.searchsorted(table[order], codes), 0, len(table) - 1)
    ids = order[at]
    known = table[ids] == codes
    if not known.all():
        if unknown_to is None:
            raise _unknown_color(codes[~known], colors, names, path)
        ids = np.where(known, ids, unknown_to)
    return ids.astype(np.uint8)


def _unknown_color(
    codes: np.ndarray, colors: Sequence[Color], names: Sequence[str], path
) -> DataError:
    values, counts = np.unique(codes, return_counts=True)
    code = int(values[np.argmax(counts)])
    color = np.array([(code >> 16) & 255, (code >> 8) & 255, code & 255])
    nearest = int(np.argmin(((np.array(colors) - color) ** 2).sum(axis=1)))
    return DataError(
        f"Mask {str(path)!r} holds colour {tuple(color.tolist())} ({int(counts.max())} pixels"
        + (f", {len(values) - 1} other unknown colours" if len(values) > 1 else "")
        + f") that is not in the class table; nearest class: {names[nearest]!r} "
        f"{tuple(colors[nearest])}. Add the colour to the table, or set unknown='ignore' to "
        "leave such pixels out (JPEG-saved or resized masks blur colours: keep masks PNG)."
    )


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth``: a small synthetic set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_color_masks

    synth_color_masks(dst, n=n, seed=seed, overwrite=overwrite)
    return f"wrote {n} synthetic images with colour-coded masks and class_dict.csv to {dst}"


@register_dataset("color_masks")
class ColorMaskDataset(SegmentationDataset):
    """Images with RGB colour-coded masks, read as class ids through a class-colour table.

    Args:
        root: data set folder.
        split: sub-folder holding the image and mask folders (None or ".": ``root``); with
            ``{split}`` in ``images``/``masks`` it fills that in instead.
        transform: albumentations pipeline, or None.
        class_table: CSV (``name,r,g,b``), YAML or JSON class-colour table (colours as
            ``[r, g, b]`` or hex ``"#RRGGBB"``); a relative path is taken from ``root``.
        images: image folder name.
        masks: mask folder name.
        mask_suffix: what mask names add to the image's (CamVid: ``_L``).
        unknown: ``error`` (a colour not in the table stops with its file) or ``ignore``
            (its pixels become 255 and are left out of loss and metrics).
        ids: keep only these ids (image file stems), in this order.
        roots: folders (or globs, ``Tile *``) of ``root``/``split`` that each hold
            ``images``/``masks``; sample ids are then ``<folder>/<stem>`` (Dubai's tiles).
        merge_masks: ``union``: an image's further masks ``<name><mask_suffix>_1``, ... are
            merged with its mask (the larger class id wins); None: several are an error.
        resize_masks: resize a mask of another size than its image to it (nearest
            neighbour); False: such a mask is an error naming both files.
    """

    meta = DatasetMeta(flip_pairs=None, synth=_synth)

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        *,
        class_table: str | Path = "class_dict.csv",
        images: str = "images",
        masks: str = "masks",
        mask_suffix: str = "",
        unknown: str = "error",
        ids: Iterable[str] | None = None,
        roots: str | Sequence[str] | None = None,
        merge_masks: str | None = None,
        resize_masks: bool = False,
    ) -> None:
        if unknown not in ("error", "ignore"):
            raise DataError(f"unknown must be 'error' or 'ignore', got {unknown!r}.")
        root = require_dir(root, "Data root")
        table = Path(class_table)
        self.table_path = table if table.is_absolute() else root / table
        names, self.colors = read_class_table(self.table_path)
        if unknown == "ignore" and len(names) > 255:
            raise DataError(
                f"unknown='ignore' needs id 255 free; the table has {len(names)} classes."
            )
        templated = "{split}" in images or "{split}" in masks
        base = root if templated or split in (None, "", ".") else root / split
        samples = folder_pairs(
            base,
            images.format(split=split or ""),
            masks.format(split=split or ""),
            roots=roots,
            mask_suffix=mask_suffix,
            merge_masks=merge_masks,
        )
        self.split, self.unknown, self.resize_masks = split, unknown, bool(resize_masks)
        facts = {"ignore_index": 255} if unknown == "ignore" else {}
        super().__init__(select_ids(samples, ids, base), transform, names, root, facts=facts)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The colour mask as class ids (unknown colours: an error, or 255 when ignored)."""
        to = 255 if self.unknown == "ignore" else None

        def read(path: Path) -> np.ndarray:
            return colors_to_ids(read_image(path), self.colors, self.class_names, path, to)

        return read_masks(sample, shape, read, self.resize_masks)

    def metadata(self) -> DatasetMeta:
        """The built metadata with the table's colours as the palette."""
        return super().metadata().replace(palette=tuple(self.colors))
