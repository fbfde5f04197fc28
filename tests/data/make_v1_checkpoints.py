"""Write the format-1 checkpoints in this folder, as segkit wrote them before hooks owned their
state (commit e47c2a4). Kept to show how they were made; the tests only read the files.

Run from a checkout of that commit: ``python tests/data/make_v1_checkpoints.py OUT_DIR``.
"""

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
torch.set_num_threads(1)
from test_engine_utils import make_trainer, tiny_net  # noqa: E402  (the helpers of that commit)

from segkit.config import SchedulerConfig  # noqa: E402
from segkit.engine import HookBase  # noqa: E402


class InterruptAt(HookBase):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_step(self) -> None:
        if self.trainer.iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)


out = Path(sys.argv[1])
# cosine per batch, stopped inside epoch 2 (batch 2 of 4)
make_trainer(
    out / "cosine",
    model=tiny_net(3, dropout=0.2),
    epochs=3,
    deterministic=True,
    scheduler=SchedulerConfig(name="cosine", warmup_epochs=1),
    monitor="val_miou",
    hooks=[InterruptAt(6)],
).fit()
# plateau on the validation loss with early stopping, two complete epochs of four
make_trainer(
    out / "plateau",
    model=tiny_net(3, dropout=0.2),
    epochs=2,
    deterministic=True,
    scheduler=SchedulerConfig(name="plateau", patience=0, factor=0.5),
    early_stop=3,
).fit()
