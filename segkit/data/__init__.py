"""segkit's data layer: dataset adapters, registry, transforms, preparation, RLE, synthetic data.

Every adapter is a ``torch.utils.data.Dataset`` whose items are dicts with ``image``,
``mask``, ``id`` and ``image_path``; see docs/data.md for the layouts each one reads.
"""

from segkit.data.base import Sample, SegmentationDataset
from segkit.data.carvana import (
    CARVANA_CLASSES,
    CarvanaDataset,
    parse_carvana_id,
    prepare_carvana,
    split_by_car,
)
from segkit.data.folder import FolderDataset
from segkit.data.formats import CityscapesDataset, ColorMaskDataset, VOCDataset
from segkit.data.helen import (
    HELEN_CLASSES,
    HELEN_FLIP_PAIRS,
    HELEN_GROUPS,
    HelenDataset,
    prepare_helen,
)
from segkit.data.io import (
    DataNotFoundError,
    decode_strategy,
    read_image,
    read_mask,
    read_resized,
    write_image,
    write_mask,
)
from segkit.data.meta import DatasetMeta, split_ids
from segkit.data.registry import (
    build_dataset,
    dataset_metas,
    get_dataset_meta,
    list_datasets,
    register_dataset,
)
from segkit.data.rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv
from segkit.data.synth import synth_carvana, synth_helen
from segkit.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LabelAwareHorizontalFlip,
    build_transforms,
    check_crop,
    crop_steps,
)

__all__ = [
    "CARVANA_CLASSES",
    "HELEN_CLASSES",
    "HELEN_FLIP_PAIRS",
    "HELEN_GROUPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CarvanaDataset",
    "CityscapesDataset",
    "ColorMaskDataset",
    "DataNotFoundError",
    "DatasetMeta",
    "FolderDataset",
    "HelenDataset",
    "LabelAwareHorizontalFlip",
    "Sample",
    "SegmentationDataset",
    "VOCDataset",
    "build_dataset",
    "build_transforms",
    "check_crop",
    "crop_steps",
    "dataset_metas",
    "get_dataset_meta",
    "decode_strategy",
    "read_resized",
    "list_datasets",
    "parse_carvana_id",
    "prepare_carvana",
    "prepare_helen",
    "read_image",
    "read_mask",
    "read_rle_csv",
    "register_dataset",
    "rle_decode",
    "rle_encode",
    "split_by_car",
    "split_ids",
    "synth_carvana",
    "synth_helen",
    "write_image",
    "write_mask",
    "write_rle_csv",
]
