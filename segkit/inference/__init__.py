"""Prediction: a :class:`Predictor` loads a model once and predicts files, folders or arrays.

- :mod:`~segkit.inference.predictor`: :class:`Predictor`, :func:`predict` (a one-call
  Predictor), :func:`load_model`.
- :mod:`~segkit.inference.options`: :class:`PredictOptions` (each option checked once, there),
  :class:`TTA` and :func:`parse_tta`.
- :mod:`~segkit.inference.probs`: probabilities from a model (padding, flip and multi-scale
  TTA) and label maps from probabilities.
- :mod:`~segkit.inference.recipe`: :class:`Recipe`, how a model sees images, decided once.
- :mod:`~segkit.inference.scoring`: :class:`Scorer`, a Predictor's labels counted per image
  (evaluate); the windows themselves are :mod:`segkit.models.windows`'s.
- :mod:`~segkit.inference.model`: :class:`InferenceModel`, a model returning the logits of
  TTA probabilities, for evaluation.
- :mod:`~segkit.inference.inputs`: finding, reading, batching and normalising image files.
- :mod:`~segkit.inference.outputs`: what is written per image, refused beforehand, in order.
- :mod:`~segkit.inference.stream`: the file pipeline (reading, model and writers taking turns).
"""

from segkit.data.meta import flip_pairs_from_names
from segkit.inference.inputs import (
    ImageFiles,
    close_batches,
    collate_images,
    find_images,
    normalize,
    pooled_batches,
    prefetch,
    read_for_model,
    sample_images,
)
from segkit.inference.model import InferenceModel
from segkit.inference.options import TTA, PredictOptions, check_overlap, parse_tta
from segkit.inference.outputs import ImageWriter, Outputs, check_outputs, output_names
from segkit.inference.predictor import Predictor, load_model, predict
from segkit.inference.probs import PROB_SCALE, predict_proba, probs_to_labels, resize_probs
from segkit.inference.recipe import Recipe

__all__ = [
    "PROB_SCALE",
    "TTA",
    "ImageFiles",
    "ImageWriter",
    "InferenceModel",
    "Outputs",
    "PredictOptions",
    "Predictor",
    "Recipe",
    "check_outputs",
    "check_overlap",
    "close_batches",
    "collate_images",
    "find_images",
    "flip_pairs_from_names",
    "load_model",
    "normalize",
    "output_names",
    "parse_tta",
    "pooled_batches",
    "predict",
    "predict_proba",
    "prefetch",
    "probs_to_labels",
    "read_for_model",
    "resize_probs",
    "sample_images",
]
