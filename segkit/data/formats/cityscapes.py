"""Cityscapes layout: ``leftImg8bit/<split>/<city>/`` images + ``gtFine/<split>/<city>/`` labels.

::

    <root>/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png
    <root>/gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png   (ids 0..33)

The ``labelIds`` files hold Cityscapes' 34 label ids; training uses the 19 evaluated classes,
so each mask goes through the standard labelId -> trainId table on load (ids without a
trainId, such as ``parking`` or ``ego vehicle``, become 255 and are left out). Files that
``createTrainIdLabelImgs`` wrote (``*_gtFine_labelTrainIds.png``) are read as they are with
``label_type="labelTrainIds"``; coarse labels with ``annotations="gtCoarse"``.

Its metadata declares the way back (``output_ids``, trainId -> labelId), so ``segkit predict``
writes labelIds PNGs as in ``gtFine`` (trainIds with ``--ids``, or for a model trained on
``labelTrainIds`` files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from segkit.data.base import Sample, SegmentationDataset, pair_files, select_ids, unique_keys
from segkit.data.io import DataNotFoundError, name_some, read_mask, require_dir
from segkit.data.meta import DatasetMeta
from segkit.data.registry import register_dataset
from segkit.errors import DataError

#: (labelId, name, trainId, colour) of cityscapesScripts' labels.py; trainId 255: not evaluated
CITYSCAPES_LABELS = (
    (0, "unlabeled", 255, (0, 0, 0)),
    (1, "ego vehicle", 255, (0, 0, 0)),
    (2, "rectification border", 255, (0, 0, 0)),
    (3, "out of roi", 255, (0, 0, 0)),
    (4, "static", 255, (0, 0, 0)),
    (5, "dynamic", 255, (111, 74, 0)),
    (6, "ground", 255, (81, 0, 81)),
    (7, "road", 0, (128, 64, 128)),
    (8, "sidewalk", 1, (244, 35, 232)),
    (9, "parking", 255, (250, 170, 160)),
    (10, "rail track", 255, (230, 150, 140)),
    (11, "building", 2, (70, 70, 70)),
    (12, "wall", 3, (102, 102, 156)),
    (13, "fence", 4, (190, 153, 153)),
    (14, "guard rail", 255, (180, 165, 180)),
    (15, "bridge", 255, (150, 100, 100)),
    (16, "tunnel", 255, (150, 120, 90)),
    (17, "pole", 5, (153, 153, 153)),
    (18, "polegroup", 255, (153, 153, 153)),
    (19, "traffic light", 6, (250, 170, 30)),
    (20, "traffic sign", 7, (220, 220, 0)),
    (21, "vegetation", 8, (107, 142, 35)),
    (22, "terrain", 9, (152, 251, 152)),
    (23, "sky", 10, (70, 130, 180)),
    (24, "person", 11, (220, 20, 60)),
    (25, "rider", 12, (255, 0, 0)),
    (26, "car", 13, (0, 0, 142)),
    (27, "truck", 14, (0, 0, 70)),
    (28, "bus", 15, (0, 60, 100)),
    (29, "caravan", 255, (0, 0, 90)),
    (30, "trailer", 255, (0, 0, 110)),
    (31, "train", 16, (0, 80, 100)),
    (32, "motorcycle", 17, (0, 0, 230)),
    (33, "bicycle", 18, (119, 11, 32)),
)
_TRAIN = sorted((t, name, color) for _, name, t, color in CITYSCAPES_LABELS if t != 255)
CITYSCAPES_CLASSES = tuple(name for _, name, _ in _TRAIN)
CITYSCAPES_PALETTE = tuple(color for _, _, color in _TRAIN)

#: labelId -> trainId lookup table over 0..255; values past the known ids stay 255
LABEL_TO_TRAIN = np.full(256, 255, dtype=np.uint8)
for _label, _, _train, _ in CITYSCAPES_LABELS:
    LABEL_TO_TRAIN[_label] = _train
#: trainId -> labelId, to write predictions in Cityscapes' own ids (for its evaluation scripts)
TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)
for _label, _, _train, _ in CITYSCAPES_LABELS:
    if _train != 255:
        TRAIN_TO_LABEL[_train] = _label


#: how each label_type's files became class ids, recorded in ``DatasetMeta.labels``
LABEL_RECORDS = {
    "labelIds": {
        "rule": "label_type=labelIds: labelId -> trainId by cityscapesScripts' table (ids "
        "without a trainId: 255, left out); predictions written back as labelIds",
        "label_type": "labelIds",
    },
    "labelTrainIds": {
        "rule": "label_type=labelTrainIds: the files hold trainIds (255: left out)",
        "label_type": "labelTrainIds",
    },
}


def label_ids_to_train_ids(mask: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """Map a labelIds map (0..33) to trainIds (0..18, 255 = not evaluated).

    Raises:
        DataError: a value that is no Cityscapes labelId (names ``path``).
    """
    top = len(CITYSCAPES_LABELS)
    if mask.size and int(mask.max()) >= top:
        bad = np.unique(mask[mask >= top]).tolist()
        raise DataError(
            f"Mask {str(path)!r} holds values {name_some(bad, 8)} that are not Cityscapes "
            f"labelIds (0..{top - 1}). Use the *_gtFine_labelIds.png files, or "
            "label_type='labelTrainIds' for masks already in trainIds."
        )
    return LABEL_TO_TRAIN[mask]


def train_ids_to_label_ids(mask: np.ndarray) -> np.ndarray:
    """Map a trainId map (e.g. a prediction) back to labelIds; 255 becomes 0 (unlabeled)."""
    return TRAIN_TO_LABEL[np.asarray(mask, dtype=np.uint8)]


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """``<city>_<seq>_<frame>`` -> file, over every city folder of a split."""
    files = sorted(folder.glob(f"*/*{suffix}"))
    return unique_keys(files, lambda p: p.name[: -len(suffix)], folder)


def _synth(dst: str | Path, n: int = 2, seed: int = 0, overwrite: bool = False) -> str:
    """``segkit synth``: a small synthetic set in this layout; the message to show."""
    from segkit.data.formats.synth import synth_cityscapes

    synth_cityscapes(dst, n=n, seed=seed, overwrite=overwrite)
    return (
        f"wrote {n} synthetic frames per city (aachen, bochum) and split (train, val) in the "
        f"Cityscapes layout to {dst}"
    )


@register_dataset("cityscapes")
class CityscapesDataset(SegmentationDataset):
    """Cityscapes fine (or coarse) annotations as the 19 evaluated classes, 255 left out.

    Args:
        root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test``.
        transform: albumentations pipeline, or None.
        annotations: ``gtFine`` or ``gtCoarse``.
        label_type: ``labelIds`` (mapped to trainIds on load) or ``labelTrainIds``.
        cities: keep only these cities (folder names).
        ids: keep only these ids (``<city>_<seq>_<frame>``), in this order.
    """

    meta = DatasetMeta(
        classes=CITYSCAPES_CLASSES,
        palette=CITYSCAPES_PALETTE,
        ignore_index=255,
        flip_pairs=(),
        output_ids=tuple(int(i) for i in TRAIN_TO_LABEL[: len(CITYSCAPES_CLASSES)]),
        labels=LABEL_RECORDS["labelIds"],  # the default label_type; instances record theirs
        synth=_synth,
        source="unpack leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
        "cityscapes-dataset.com there (leftImg8bit/ and gtFine/)",
    )

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        transform: Callable[..., dict[str, Any]] | None = None,
        annotations: str = "gtFine",
        label_type: str = "labelIds",
        cities: Iterable[str] | None = None,
        ids: Iterable[str] | None = None,
    ) -> None:
        if label_type not in ("labelIds", "labelTrainIds"):
            raise DataError(
                f"label_type must be 'labelIds' or 'labelTrainIds', got {label_type!r}."
            )
        root = require_dir(root, "Data root")
        split = split or "train"
        image_dir, label_dir = root / "leftImg8bit" / split, root / annotations / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DataNotFoundError(
                    f"No Cityscapes split folder {str(folder)!r}. Point data.root at the folder "
                    f"holding leftImg8bit/ and {annotations}/, with <split>/<city>/ inside."
                )
        samples = pair_files(
            _files(image_dir, "_leftImg8bit.png"),
            _files(label_dir, f"_{annotations}_{label_type}.png"),
            root / "*" / split,
        )
        if cities is not None:
            keep = {str(c) for c in cities}
            samples = [s for s in samples if s.image_path.parent.name in keep]
        self.split, self.label_type = split, label_type
        super().__init__(select_ids(samples, ids, image_dir), transform, None, root)

    def metadata(self) -> DatasetMeta:
        """The declared metadata; predictions are written in the label files' own ids
        (labelIds, or trainIds when those are what it reads), and the label type is recorded
        (``labels``; ``segkit score`` names it when files hold the other kind)."""
        meta = super().metadata().replace(labels=LABEL_RECORDS[self.label_type])
        return meta if self.label_type == "labelIds" else meta.replace(output_ids=None)

    def load_mask(self, sample: Sample, shape: tuple[int, int]) -> np.ndarray:
        """The label map in trainIds (0..18, 255 = left out)."""
        mask = read_mask(sample.mask_path)
        if self.label_type == "labelTrainIds":
            return mask
        return label_ids_to_train_ids(mask, sample.mask_path)
