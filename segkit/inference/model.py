"""A model that predicts the way a :class:`~segkit.inference.Predictor` does, as logits.

Evaluation scores logits; wrapping a model in :class:`InferenceModel` makes what is scored
the probabilities of test-time augmentation, so ``evaluate`` and ``predict`` agree on the
same image. (Windows are scored band by band: :mod:`segkit.inference.scoring`.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from segkit.inference.options import TTA, parse_tta
from segkit.inference.probs import predict_proba


class InferenceModel(nn.Module):
    """Wrap a segkit model: ``forward`` returns the logits of its TTA probabilities.

    The arg-max (and for one channel the sign) of the returned logits is that of the
    probabilities, so metrics computed from logits score what prediction would write.

    Args:
        model: a model with a ``.spec`` (``classes``, ``divisor``).
        tta: test-time augmentation (:func:`~segkit.inference.options.parse_tta`).
        flip_pairs: class pairs that flip TTA swaps back.
    """

    def __init__(
        self,
        model: nn.Module,
        tta: TTA | str | None = None,
        flip_pairs: Sequence[tuple[int, int]] = (),
    ) -> None:
        super().__init__()
        self.model, self.spec = model, model.spec
        self.tta, self.flip_pairs = parse_tta(tta), [tuple(p) for p in flip_pairs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = predict_proba(self.model, x, self.tta, self.flip_pairs)
        if probs.shape[1] == 1 or self.spec.task == "multilabel":  # sigmoid probabilities
            return torch.logit(probs, eps=1e-6)
        return torch.log(probs.clamp_min(1e-12))
