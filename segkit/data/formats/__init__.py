"""Readers for data sets in the layouts they are released in (each registers itself):
Pascal VOC (``voc``), Cityscapes (``cityscapes``), SegNet's CamVid (``camvid``), colour-coded masks (``color_masks``),
multi-label masks (``multilabel``), multi-band / high bit depth rasters paired by name
patterns (``raster``), and annotation-tool exports: COCO (``coco``), labelme (``labelme``),
YOLO segmentation (``yolo_seg``) and CVAT's Segmentation mask 1.1 (``cvat_mask``)."""

from segkit.data.formats.camvid import CAMVID_CLASSES, CAMVID_PALETTE, CamVidDataset
from segkit.data.formats.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    CityscapesDataset,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from segkit.data.formats.coco import CocoDataset
from segkit.data.formats.color_masks import ColorMaskDataset, colors_to_ids, read_class_table
from segkit.data.formats.cvat_mask import CvatMaskDataset, read_labelmap
from segkit.data.formats.labelme import LabelmeDataset
from segkit.data.formats.multilabel import MultiLabelDataset, read_stack
from segkit.data.formats.raster import RasterDataset
from segkit.data.formats.voc import VOC_CLASSES, VOCDataset, voc_palette
from segkit.data.formats.yolo_seg import YoloSegDataset

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CamVidDataset",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "VOC_CLASSES",
    "CityscapesDataset",
    "CocoDataset",
    "ColorMaskDataset",
    "CvatMaskDataset",
    "LabelmeDataset",
    "MultiLabelDataset",
    "RasterDataset",
    "VOCDataset",
    "YoloSegDataset",
    "colors_to_ids",
    "label_ids_to_train_ids",
    "read_class_table",
    "read_labelmap",
    "read_stack",
    "train_ids_to_label_ids",
    "voc_palette",
]
