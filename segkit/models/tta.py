"""Flip test-time augmentation: average a prediction with the one on the mirrored input."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def swap_channels(probs: torch.Tensor, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Swap the channels of left/right class pairs (``N x C x H x W``), e.g. Helen's lb<->rb."""
    if not flip_pairs or probs.shape[1] == 1:
        return probs
    perm = list(range(probs.shape[1]))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return probs[:, perm]


def flip_average(
    probs_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> torch.Tensor:
    """Mean of ``probs_fn(x)`` and the mirrored ``probs_fn`` of the mirrored ``x``.

    Args:
        probs_fn: maps a batch ``N x 3 x H x W`` to probabilities ``N x C x H x W``.
        x: the batch.
        flip_pairs: classes that trade places under a horizontal flip.
    """
    mirrored = probs_fn(torch.flip(x, dims=[3])).flip(dims=[3])
    return (probs_fn(x) + swap_channels(mirrored, flip_pairs)) / 2


class FlipTTA(nn.Module):
    """Wrap a segmentation model so that it returns the logits of its flip-averaged probabilities.

    A drop-in for the model wherever logits are expected (evaluation, metrics, losses): the
    arg-max and sigmoid of the returned logits are those of the averaged probabilities.
    """

    def __init__(self, model: nn.Module, flip_pairs: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__()
        self.model = model
        self.flip_pairs = [tuple(p) for p in flip_pairs]
        self.spec = getattr(model, "spec", None)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x).float()
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = flip_average(self._probs, x, self.flip_pairs)
        if probs.shape[1] == 1:
            return torch.logit(probs, eps=1e-6)
        return torch.log(probs.clamp_min(1e-12))
