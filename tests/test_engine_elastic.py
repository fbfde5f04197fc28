"""Past one machine: a run restarted by torchrun's elastic agent, and two "nodes" on localhost.

Each test launches torchrun (gloo, CPU, one thread per process) on a tiny model with dropout,
so that every rank's random stream shapes the weights.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch

from segkit.engine import load_checkpoint

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from segkit.engine.hooks import HookBase
from conftest import build_tiny_net, build_trainer

KILL = os.environ.get("KILL_AT")  # "epoch,step": rank 1 kills itself there, first attempt only


class KillRankOne(HookBase):
    def after_step(self):
        t = self.trainer
        first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if KILL and first and os.environ["RANK"] == "1":
            if [t.epoch + 1, t.batch_in_epoch] == [int(v) for v in KILL.split(",")]:
                os.kill(os.getpid(), signal.SIGKILL)


trainer = build_trainer(sys.argv[1], model=build_tiny_net(3, dropout=0.3), epochs=3,
                        n_train=12, hooks=[KillRankOne()])
result = trainer.fit()
if os.environ["RANK"] == "0":  # one line: the ranks' prints would interleave
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    print(f"restart {{restart}} status {{result['status']}} epochs {{result['epochs']}}")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path, out: Path, *launch: str, env: dict | None = None):
    """``torchrun LAUNCH script out`` with a c10d rendezvous on a free loopback port."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
        f"--rdzv-id={uuid.uuid4()}",
        "--local-addr=127.0.0.1",
        *launch,
        str(script),
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(TESTS))))
    return script


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "last.pt")["model"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bit for bit


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_is_restarted_and_the_run_ends_as_an_uninterrupted_one(
    tmp_path,
):
    script = _script(tmp_path)
    two = ("--nnodes=1", "--nproc-per-node=2", "--max-restarts=1")
    _ok(torchrun(script, tmp_path / "whole", *two))
    killed = torchrun(script, tmp_path / "killed", *two, env={"KILL_AT": "2,2"})
    out = _ok(killed)
    # the agent saw rank 1 die, restarted both workers, and the same command resumed
    assert "failed (exitcode: -9) local_rank: 1" in killed.stderr, killed.stderr[-3000:]
    assert "torchrun restart 1 of run " in out and "continuing from its last.pt" in out, out
    assert "restart 1 status completed epochs 3" in out, out
    rows = (tmp_path / "killed" / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 3
    _assert_same_weights(tmp_path / "killed", tmp_path / "whole")


@pytest.mark.slow
def test_a_restart_does_not_take_over_a_folder_its_launch_did_not_start(tmp_path):
    """A first start refused (the folder holds another run) stays refused on the restart."""
    script = _script(tmp_path)
    one = ("--nnodes=1", "--nproc-per-node=1")
    _ok(torchrun(script, tmp_path / "run", *one))
    again = torchrun(script, tmp_path / "run", *one, "--max-restarts=1")
    assert again.returncode != 0
    assert again.stderr.count("already holds last.pt") >= 2, again.stderr[-3000:]
    assert "torchrun restart" not in again.stdout


@pytest.mark.slow
def test_two_nodes_of_one_process_train_as_one_node_of_two(tmp_path):
    """``--nnodes=2``: two agents meeting at one c10d rendezvous, here both on 127.0.0.1."""
    script = _script(tmp_path)
    _ok(torchrun(script, tmp_path / "one_node", "--nnodes=1", "--nproc-per-node=2"))
    port, run_id = _free_port(), str(uuid.uuid4())
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                f"--rdzv-id={run_id}",
                "--local-addr=127.0.0.1",
                str(script),
                str(tmp_path / "two_nodes"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        for rank in (0, 1)
    ]
    outs = [node.communicate(timeout=120) for node in nodes]
    for node, (stdout, stderr) in zip(nodes, outs):
        assert node.returncode == 0, stdout[-3000:] + stderr[-3000:]
    _assert_same_weights(tmp_path / "two_nodes", tmp_path / "one_node")
