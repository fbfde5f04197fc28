"""Models: the from-scratch U-Net and segmentation-models-pytorch architectures x encoders.

``build_model(arch="smp.Unet", encoder="resnet18", classes=1)`` builds any registered
architecture; ``list_models("smp.*")`` and ``list_encoders("resnet*")`` show what exists.
Add an architecture with one file holding a builder decorated by ``@register_model(name)``
and one import line below.
"""

from segkit.models import smp as _smp  # noqa: F401  (registers smp.<Name>)
from segkit.models import unet as _unet  # noqa: F401  (registers unet)
from segkit.models.factory import (
    SegmentationModel,
    build_model,
    check_spec_matches,
    crop,
    load_state,
    model_from_config,
    pad_to_divisor,
    padded_size,
    rebuild_model,
)
from segkit.models.registry import (
    ModelEntry,
    get_model_entry,
    list_encoders,
    list_models,
    register_model,
)
from segkit.models.spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    METADATA_OPTIONS,
    UNIT_MEAN,
    UNIT_STD,
    ModelSpec,
)
from segkit.models.tta import FlipTTA, flip_average, swap_channels
from segkit.models.windows import (
    ScaledWindows,
    Windows,
    blend_bands,
    blend_image,
    blend_weights,
    window_boxes,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "METADATA_OPTIONS",
    "UNIT_MEAN",
    "UNIT_STD",
    "Windows",
    "FlipTTA",
    "ModelEntry",
    "ModelSpec",
    "SegmentationModel",
    "ScaledWindows",
    "blend_bands",
    "blend_image",
    "blend_weights",
    "build_model",
    "check_spec_matches",
    "crop",
    "flip_average",
    "get_model_entry",
    "list_encoders",
    "list_models",
    "load_state",
    "model_from_config",
    "pad_to_divisor",
    "padded_size",
    "rebuild_model",
    "register_model",
    "swap_channels",
    "window_boxes",
]
