"""segkit's data layer: dataset adapters, registry, transforms, preparation, RLE, synthetic data.

Every adapter is a ``torch.utils.data.Dataset`` whose items are dicts with ``image``,
``mask``, ``id`` and ``image_path``; see docs/data.md for the layouts each one reads.

The names below are imported on first use (``from segkit.data import CarvanaDataset`` imports
``segkit.data.carvana`` then): reading an image or predicting does not import every data set
reader, albumentations and pandas. The registry imports a built-in data set's module when its
name is first looked up.
"""

from segkit._lazy import lazy_names

#: public name -> the module that defines it
_LAZY = {
    "Sample": "segkit.data.base",
    "SegmentationDataset": "segkit.data.base",
    "CARVANA_CLASSES": "segkit.data.carvana",
    "CarvanaDataset": "segkit.data.carvana",
    "parse_carvana_id": "segkit.data.carvana",
    "prepare_carvana": "segkit.data.carvana",
    "split_by_car": "segkit.data.carvana",
    "FolderDataset": "segkit.data.folder",
    "CityscapesDataset": "segkit.data.formats.cityscapes",
    "ColorMaskDataset": "segkit.data.formats.color_masks",
    "VOCDataset": "segkit.data.formats.voc",
    "HELEN_CLASSES": "segkit.data.helen",
    "HELEN_FLIP_PAIRS": "segkit.data.helen",
    "HELEN_GROUPS": "segkit.data.helen",
    "HelenDataset": "segkit.data.helen",
    "prepare_helen": "segkit.data.helen",
    "DataNotFoundError": "segkit.data.io",
    "decode_strategy": "segkit.data.io",
    "read_image": "segkit.data.io",
    "read_mask": "segkit.data.io",
    "read_resized": "segkit.data.io",
    "write_image": "segkit.data.io",
    "write_mask": "segkit.data.io",
    "DatasetMeta": "segkit.data.meta",
    "split_ids": "segkit.data.meta",
    "build_dataset": "segkit.data.registry",
    "dataset_metas": "segkit.data.registry",
    "get_dataset_meta": "segkit.data.registry",
    "list_datasets": "segkit.data.registry",
    "register_dataset": "segkit.data.registry",
    "read_rle_csv": "segkit.data.rle",
    "rle_decode": "segkit.data.rle",
    "rle_encode": "segkit.data.rle",
    "write_rle_csv": "segkit.data.rle",
    "synth_carvana": "segkit.data.synth",
    "synth_helen": "segkit.data.synth",
    "IMAGENET_MEAN": "segkit.data.meta",
    "IMAGENET_STD": "segkit.data.meta",
    "LabelAwareHorizontalFlip": "segkit.data.transforms",
    "build_transforms": "segkit.data.transforms",
    "check_crop": "segkit.data.transforms",
    "crop_steps": "segkit.data.transforms",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
