"""Readers for data sets in the layouts they are released in (each registers itself):
Pascal VOC (``voc``), Cityscapes (``cityscapes``), SegNet's CamVid (``camvid``), colour-coded masks (``color_masks``),
multi-label masks (``multilabel``), multi-band / high bit depth rasters paired by name
patterns (``raster``), and annotation-tool exports: COCO (``coco``), labelme (``labelme``),
YOLO segmentation (``yolo_seg``) and CVAT's Segmentation mask 1.1 (``cvat_mask``).

The names below are imported on first use, and a reader's module when its data set is first
looked up by name (see :mod:`segkit.data.registry`).
"""

from segkit._lazy import lazy_names

#: public name -> the module that defines it
_LAZY = {
    "CAMVID_CLASSES": "segkit.data.formats.camvid",
    "CAMVID_PALETTE": "segkit.data.formats.camvid",
    "CamVidDataset": "segkit.data.formats.camvid",
    "CITYSCAPES_CLASSES": "segkit.data.formats.cityscapes",
    "CITYSCAPES_PALETTE": "segkit.data.formats.cityscapes",
    "CityscapesDataset": "segkit.data.formats.cityscapes",
    "label_ids_to_train_ids": "segkit.data.formats.cityscapes",
    "train_ids_to_label_ids": "segkit.data.formats.cityscapes",
    "CocoDataset": "segkit.data.formats.coco",
    "ColorMaskDataset": "segkit.data.formats.color_masks",
    "colors_to_ids": "segkit.data.formats.color_masks",
    "read_class_table": "segkit.data.formats.color_masks",
    "CvatMaskDataset": "segkit.data.formats.cvat_mask",
    "read_labelmap": "segkit.data.formats.cvat_mask",
    "LabelmeDataset": "segkit.data.formats.labelme",
    "MultiLabelDataset": "segkit.data.formats.multilabel",
    "read_stack": "segkit.data.formats.multilabel",
    "RasterDataset": "segkit.data.formats.raster",
    "VOC_CLASSES": "segkit.data.formats.voc",
    "VOCDataset": "segkit.data.formats.voc",
    "voc_palette": "segkit.data.formats.voc",
    "YoloSegDataset": "segkit.data.formats.yolo_seg",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
