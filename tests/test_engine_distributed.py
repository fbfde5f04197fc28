"""Distributed training: samplers without padding, and a real 2-process gloo run via torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from segkit.engine import (
    DistInfo,
    ShardSampler,
    evaluate_model,
    load_checkpoint,
    make_loader,
    shard_loader,
)

TESTS = Path(__file__).resolve().parent


def test_shard_sampler_covers_every_index_once():
    shards = [list(ShardSampler(7, rank, 3)) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]


def test_shard_loader_picks_the_sampler(tiny_set):
    info = DistInfo(rank=1, world_size=2)
    shuffled = make_loader(tiny_set(6), 2, shuffle=True, seed=3)
    train = shard_loader(shuffled, info, seed=3, train=True)
    assert isinstance(train.sampler, DistributedSampler) and train.sampler.rank == 1
    assert train.sampler.shuffle and train.batch_size == 2 and len(train) == 2
    # an ordered training loader is padded too, so every rank runs the same steps
    ordered = shard_loader(make_loader(tiny_set(5), 2, shuffle=False), info, train=True)
    assert not ordered.sampler.shuffle and len(ordered.sampler) == 3
    val = shard_loader(make_loader(tiny_set(5), 2, shuffle=False), info)
    assert isinstance(val.sampler, ShardSampler)
    assert [i for b in val for i in b["id"]] == ["s1", "s3"]
    single = make_loader(tiny_set(5), 2, shuffle=False)
    assert shard_loader(single, DistInfo()) is single
    assert shard_loader([1, 2], info) == [1, 2]


SCRIPT = """
import json, os, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
import segkit.engine.hooks as H
import segkit.engine.loggers as L
import segkit.engine.trainer as T
import segkit.viz as V
from conftest import build_trainer as make_trainer
from segkit.config import HooksConfig

out = sys.argv[1]
calls = []
save, copy, write = T.save_checkpoint, T.copy_checkpoint, H._write_atomic
curves, grid = V.plot_curves, V.prediction_grid


def spy_save(path, state):
    calls.append(os.path.basename(str(path)))
    return save(path, state)


def spy_copy(src, dst):  # best.pt: a link to (or copy of) the fresh last.pt
    calls.append(os.path.basename(str(dst)))
    return copy(src, dst)


def spy_write(path, text):
    calls.append(os.path.basename(str(path)))
    return write(path, text)


def spy_curves(rows, path, **kwargs):
    calls.append(os.path.basename(str(path)))
    return curves(rows, path, **kwargs)


def spy_grid(images, masks, preds, path, **kwargs):
    calls.append(os.path.basename(str(path)))
    return grid(images, masks, preds, path, **kwargs)


T.save_checkpoint, T.copy_checkpoint, H._write_atomic = spy_save, spy_copy, spy_write
L._write_atomic = spy_write
V.plot_curves, V.prediction_grid = spy_curves, spy_grid
# the W&B hook rides along (offline, its caches beside the run): rank 0 alone logs
home = os.path.join(os.path.dirname(out), "wandb-home")
os.environ.update(WANDB_SILENT="true", WANDB_MODE="offline", WANDB_CACHE_DIR=home,
                  WANDB_DATA_DIR=home, WANDB_CONFIG_DIR=home)
trainer = make_trainer(out, epochs=2, n_train=8, n_val=5, monitor="val_miou", preview=2,
                       full_config={{"name": "ddp"}}, hooks_cfg=HooksConfig(wandb=True))
result = trainer.fit()
report = {{
    "wandb_run": trainer.get_hook("wandb").run_id,
    "calls": sorted(set(calls)),
    "metrics": result["metrics"],
    "weights": [p.detach().double().sum().item() for p in trainer.model.parameters()],
    "batches": trainer.n_batches,
    "world": trainer.dist.world_size,
    "ddp": type(trainer.train_net).__name__,
}}
with open(os.path.join(out, "rank" + os.environ["RANK"] + ".json"), "w") as f:
    json.dump(report, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_two(script: Path, out: Path, timeout: int) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 script out`` on CPU (gloo), one thread per process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        str(script),
        str(out),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def run_two_ranks(tmp_path: Path, template: str, timeout: int) -> Path:
    """Fill ``template`` in, run it on two gloo ranks, check both exited cleanly; the out path."""
    script, out = tmp_path / "script.py", tmp_path / "run"
    script.write_text(textwrap.dedent(template.format(tests=str(TESTS))))
    proc = torchrun_two(script, out, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_process_gloo_training_matches_single_process_metrics(tiny_net, tiny_set, tmp_path):
    out = run_two_ranks(tmp_path, SCRIPT, timeout=240)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and ranks[0]["ddp"] == "DistributedDataParallel"
    assert ranks[0]["batches"] == 2  # 8 samples / 2 ranks / batch 2
    # only rank 0 writes files
    assert ranks[1]["calls"] == []
    expected = {"best.pt", "last.pt", "history.csv", "config.yaml", "curves.png"}
    assert expected | {"predictions.png"} == set(ranks[0]["calls"])
    assert len((out / "history.csv").read_text().splitlines()) == 3
    assert ranks[1]["wandb_run"] is None and ranks[0]["wandb_run"] is not None
    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    assert wandb_run.name.endswith(ranks[0]["wandb_run"])
    # the ranks agree on weights and metrics
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-12)
    assert ranks[0]["metrics"] == ranks[1]["metrics"]
    # and the metrics equal one process evaluating all 5 validation images
    model = tiny_net(3)
    model.load_state_dict(load_checkpoint(out / "last.pt")["model"])
    single = evaluate_model(
        model,
        make_loader(tiny_set(5, 3, seed=1), 2, shuffle=False),
        device="cpu",
        loss_fn=torch.nn.CrossEntropyLoss(),
    )
    ddp = {k.removeprefix("val_"): v for k, v in ranks[0]["metrics"].items()}
    assert set(ddp) == set(single)
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key


EMPTY_VAL_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from segkit.errors import DataError
from conftest import build_trainer as make_trainer

try:
    make_trainer(sys.argv[1], n_val=1)  # rank 1 gets no validation sample
except DataError as exc:  # one file per rank: their printed lines would interleave
    Path(sys.argv[1] + f"-refused{{os.environ['RANK']}}.txt").write_text(str(exc))
    if torch.distributed.is_initialized():  # else gloo may abort the process at exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    os._exit(0)  # and skip C++ teardown, where gloo's threads can still abort it
"""


@pytest.mark.slow
def test_a_rank_without_validation_data_stops_every_rank(tmp_path):
    run_two_ranks(tmp_path, EMPTY_VAL_SCRIPT, timeout=120)
    for rank in (0, 1):
        refused = (tmp_path / f"run-refused{rank}.txt").read_text()
        assert refused.startswith("The validation loader yields no batches"), refused


NAN_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import torch
from torch import nn
torch.set_num_threads(1)
from segkit.errors import TrainingError
from conftest import build_trainer as make_trainer

RANK = int(os.environ["RANK"])


class NanOnRankOne(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        self.calls += torch.is_grad_enabled()
        return loss * float("nan") if RANK == 1 and self.calls == 2 else loss


trainer = make_trainer(sys.argv[1], epochs=2, n_train=8, loss=NanOnRankOne())
try:
    trainer.fit()
except TrainingError as exc:
    Path(sys.argv[1] + f"-stopped{{RANK}}.txt").write_text(str(exc))
torch.distributed.barrier()
torch.distributed.destroy_process_group()
os._exit(0)  # gloo's threads can abort C++ teardown at exit ("terminate called ...")
"""


@pytest.mark.slow
def test_a_nan_loss_on_one_rank_stops_every_rank(tmp_path):
    run_two_ranks(tmp_path, NAN_SCRIPT, timeout=120)
    stopped = [(tmp_path / f"run-stopped{rank}.txt").read_text() for rank in (0, 1)]
    assert stopped[0].startswith("Another rank's loss is not finite at epoch 1, step 2 of 2")
    assert stopped[1].startswith("The loss is nan at epoch 1, step 2 of 2")


CLI_SCRIPT = """
import sys
import torch
torch.set_num_threads(1)
from segkit.cli import main

sys.exit(main(["train", sys.argv[1]]))
"""


@pytest.mark.slow
def test_ddp_validates_the_saved_model_and_prints_the_summary_once(tmp_path):
    """BatchNorm statistics drift apart between ranks while the weights stay equal; the logged
    validation must be that of rank 0's model, the one saved (and later evaluated)."""
    from segkit.api import build_experiment, config_from_checkpoint
    from segkit.data import synth_helen
    from segkit.engine import model_from_checkpoint

    synth_helen(tmp_path / "helen", n=8, size=32)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  root: helen\n  image_size: 32\n  num_workers: 0\n  batch_size: 2\n"
        "  val_fraction: 0.5\nmodel:\n  arch: unet\n  base_channels: 4\n"
        "loss:\n  name: ce\n"  # a mean over pixels: the same however ranks split the images
        "train:\n  out_dir: run\n  epochs: 2\n  progress: false\n  device: cpu\n"
        "  amp: off\n"  # validation runs under training's autocast; evaluate_model in float32
    )
    script = tmp_path / "script.py"
    script.write_text(CLI_SCRIPT)
    proc = torchrun_two(script, cfg, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1, proc.stdout  # rank 0 only
    assert proc.stdout.count("training completed") == 1, proc.stdout
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    logged = dict(zip(rows[0].split(","), rows[-1].split(",")))
    last = tmp_path / "run" / "last.pt"
    exp = build_experiment(config_from_checkpoint(load_checkpoint(last)))
    loader = make_loader(exp.val_set, 2, shuffle=False)
    model = model_from_checkpoint(last)
    saved = evaluate_model(model, loader, exp.class_names, exp.groups, "cpu", loss_fn=exp.loss)
    assert "loss" in saved and "miou" in saved
    for key, value in saved.items():
        assert float(logged[f"val_{key}"]) == pytest.approx(value, rel=1e-6, nan_ok=True), key
