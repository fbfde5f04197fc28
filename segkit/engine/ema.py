"""An exponential moving average of the model's weights, as a hook (``train.ema: 0.999``).

After every optimizer step the average moves towards the trained weights:
``average = d * average + (1 - d) * weights`` with ``d = min(decay, (1 + n) / (10 + n))``
after ``n`` steps (the short warm-up keeps the first epochs from being dominated by the
random initial weights). Floating-point buffers (batch-norm statistics) are averaged like the
weights, as timm's ``ModelEmaV2`` does; integer buffers (batch counts) are copied. When the
hook is on, validation scores the average, and checkpoints store it as ``model`` (so
``best.pt`` and prediction use it) with the trained weights beside it for resuming.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from segkit.engine.hooks import HookBase
from segkit.errors import ConfigError


class EMAHook(HookBase):
    """Keep an exponential moving average of the model's weights and evaluate it.

    Args:
        decay: the average's decay per optimizer step, in ``[0, 1)`` (0.999 is typical;
            closer to 1 averages over more steps).

    State: the number of steps averaged (the weights travel as the checkpoint's ``model``).
    """

    name = "ema"

    def __init__(self, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"train.ema must be in [0, 1) (e.g. 0.999) or null, got {decay}.")
        self.decay = decay
        self.updates = 0
        self.average: torch.nn.Module | None = None
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._buffers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def setup(self) -> None:
        """Make the average (a copy of the model) the module the trainer evaluates and saves."""
        model = self.trainer.model
        average = copy.deepcopy(model).eval().requires_grad_(False)
        ours, theirs = average.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        floats = [k for k, v in ours.items() if v.is_floating_point()]
        # the parameters themselves, not their .data: a change of memory layout on resume
        # (Trainer._resume_layout) gives each parameter new storage
        self._pairs = ([ours[k] for k in floats], [theirs[k] for k in floats])
        self._buffers = [(ours[k], theirs[k]) for k in ours if k not in floats]
        self.average = average
        self.trainer.evaluate_with(average)

    def after_step(self) -> None:
        if not self.trainer.stepped:
            return
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1.0 - decay)
            for ours, theirs in self._buffers:
                ours.copy_(theirs)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
