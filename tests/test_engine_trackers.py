"""MLflow and W&B hooks: what each tracker wrote, read back with its own reader, against
history.csv; resume, rank 0 only, missing packages and bad options. No test uses the network."""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import socket
import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from segkit.config import HooksConfig, TrainConfig, flatten, from_dict, load_config
from segkit.engine import EpochLog, MLflowHook, WandbHook
from segkit.errors import ConfigError

FULL_CONFIG = {"name": "trackers", "model": {"arch": "tiny", "options": {"width": 4}}}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No connection leaves the machine; trackers keep their files under tmp_path."""
    connect = socket.socket.connect

    def local_only(sock, address):
        host = address[0] if isinstance(address, tuple) else "local"
        if host not in ("local", "localhost", "127.0.0.1", "::1"):
            raise AssertionError(f"network access to {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    for name in ("MLFLOW_TRACKING_URI", "WANDB_PROJECT", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def history(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    return [float(row[key]) for row in rows]


def train(make_trainer, out: Path, hooks: list[str], resume=None, **options):
    hooks_cfg = load_config(None, hooks).train.hooks
    trainer = make_trainer(
        out, hooks_cfg=hooks_cfg, full_config=FULL_CONFIG, monitor="val_miou", **options
    )
    return trainer, trainer.fit(resume=resume)


# ---------------------------------------------------------------------------------- MLflow


def test_mlflow_logs_config_epochs_pictures_and_best_checkpoint_and_resumes(make_trainer, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    on = ["train.hooks.mlflow=true"]
    trainer, result = train(make_trainer, out, on, epochs=2, preview=1)
    run_id = trainer.get_hook("mlflow").run_id
    shutil.copy(out / "last.pt", tmp_path / "epoch2.pt")
    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve()}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "trackers"
    params = {k: str(v) for k, v in flatten(trainer.config_dict()).items()}
    assert run.data.params == params and params["model.options"] == "{'width': 4}"
    rows = history(out)
    for key in ("train_loss", "val_loss", "val_miou", "lr"):
        points = client.get_metric_history(run_id, key)
        assert [m.step for m in points] == [1, 2], key
        assert [m.value for m in points] == pytest.approx(column(rows, key)), key
    (best,) = client.get_metric_history(run_id, "best_val_miou")
    assert (best.step, best.value) == (result["best_epoch"], pytest.approx(result["best_value"]))
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"config.yaml", "curves.png", "predictions.png", "checkpoints"}
    local = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tmp_path)))
    assert local.read_bytes() == (out / "best.pt").read_bytes()
    assert (out / "mlartifacts").is_dir()  # the artifacts stay in the run folder

    # --resume goes on in the same MLflow run: epoch 3 once, epochs 1-2 not again
    trainer, _ = train(make_trainer, out, on, resume=True, epochs=3, preview=1)
    assert trainer.get_hook("mlflow").run_id == run_id
    points = client.get_metric_history(run_id, "val_miou")
    assert [m.step for m in points] == [1, 2, 3]
    assert [m.value for m in points] == pytest.approx(column(history(out), "val_miou"))
    assert client.get_run(run_id).info.status == "FINISHED"

    # resuming an older checkpoint (epoch 2 of a history that reaches 3): a new MLflow run
    trainer, _ = train(make_trainer, out, on, resume=tmp_path / "epoch2.pt", epochs=3)
    again = trainer.get_hook("mlflow").run_id
    assert again != run_id
    assert [m.step for m in client.get_metric_history(again, "val_miou")] == [3]
    assert [m.step for m in client.get_metric_history(run_id, "val_miou")] == [1, 2, 3]


# ------------------------------------------------------------------------------------- W&B


def wandb_records(run_dir: Path) -> list:
    """The records of an offline run's ``run-<id>.wandb`` file: W&B's LevelDB-style log of
    32 KiB blocks (7-byte header ``:W&B`` + magic + version, then chunks of crc32, length,
    type: full, first, middle, last), each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pos, chunk = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # the block's zero padding
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


def of_kind(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def nested(items) -> dict:
    """History or summary items (``nested_key`` paths, JSON values) as a nested dict."""
    out: dict = {}
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = json.loads(item.value_json)
    return out


def rows_of(records: list) -> list[dict]:
    return [nested(h.item) for h in of_kind(records, "history")]


def test_wandb_offline_run_holds_config_epochs_pictures_and_model_artifact(make_trainer, tmp_path):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    on = ["train.hooks.wandb.project=faces"]
    trainer, result = train(make_trainer, out, on, epochs=2, preview=1)
    run_id = trainer.get_hook("wandb").run_id
    (run_dir,) = (out / "wandb").glob(f"offline-run-*-{run_id}")
    records = wandb_records(run_dir)
    (run,) = of_kind(records, "run")
    assert (run.run_id, run.project, run.display_name) == (run_id, "faces", "run")
    config = {u.key: json.loads(u.value_json) for u in run.config.update if u.key != "_wandb"}
    assert config == json.loads(json.dumps(trainer.config_dict()))
    rows = rows_of(records)
    epochs = [r for r in rows if "train_loss" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for key in ("train_loss", "val_loss", "val_miou", "lr"):
        assert [r[key] for r in epochs] == pytest.approx(column(history(out), key)), key
    (pictures,) = [r for r in rows if "curves" in r]
    for name in ("curves", "predictions"):
        assert pictures[name]["_type"] == "image-file", name
        logged = (run_dir / "files" / pictures[name]["path"]).read_bytes()
        assert hashlib.sha256(logged).hexdigest() == pictures[name]["sha256"]
        assert logged == (out / f"{name}.png").read_bytes()
    summary = nested(u for s in of_kind(records, "summary") for u in s.update)
    assert summary["best_val_miou"] == pytest.approx(result["best_value"])
    assert summary["best_epoch"] == result["best_epoch"]
    (artifact,) = of_kind(records, "artifact")
    assert (artifact.name, artifact.type) == (f"model-{run_id}", "model")
    assert "best" in artifact.aliases
    files = {c.path: c.digest for c in artifact.manifest.contents}
    md5 = base64.b64encode(hashlib.md5((out / "best.pt").read_bytes()).digest()).decode()
    assert files["best.pt"] == md5 and "config.yaml" in files
    assert of_kind(records, "exit")[0].exit_code == 0

    # --resume: the same W&B run id, a second offline folder with epoch 3 only
    trainer, _ = train(make_trainer, out, on, resume=True, epochs=3)
    assert trainer.get_hook("wandb").run_id == run_id
    later = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(later) == 2
    rows = [r for r in rows_of(wandb_records(later[-1])) if "train_loss" in r]
    assert [r["epoch"] for r in rows] == [3]
    assert rows[0]["val_miou"] == pytest.approx(column(history(out), "val_miou")[2])


# ------------------------------------------------------------------------ without training


class Stub(SimpleNamespace):
    """The trainer attributes the trackers read."""


def stub(tmp_path: Path, rank: int) -> Stub:
    return Stub(
        out_dir=tmp_path,
        dist=SimpleNamespace(is_main=rank == 0, rank=rank, world_size=2),
        cfg=TrainConfig(epochs=2),
        epoch=0,
        status="completed",
        monitor="val_loss",
        full_config=None,
        config_dict=lambda: {"train": {"epochs": 2}},
    )


@pytest.mark.parametrize("cls", [MLflowHook, WandbHook])
def test_a_tracker_logs_nothing_on_another_rank_than_0(cls, tmp_path):
    hook = cls()
    hook.trainer = stub(tmp_path, rank=1)
    hook.setup()
    hook.before_train()
    hook.after_epoch(EpochLog(1, {"train_loss": 0.5}, best=0.5, best_epoch=1))
    hook.after_train()
    hook.close()
    assert hook.run_id is None and not hook.active and hook.state_dict() == {}
    assert list(tmp_path.iterdir()) == []  # no store, no offline run


@pytest.mark.parametrize(
    ("cls", "module", "extra"),
    [
        (MLflowHook, "mlflow", "mlflow"),
        (MLflowHook, "alembic", "mlflow"),
        (WandbHook, "wandb", "wandb"),
    ],
)
def test_a_missing_tracker_package_is_one_line_naming_the_extra(
    cls, module, extra, monkeypatch, make_trainer, tmp_path
):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    hooks_cfg = from_dict(HooksConfig, {extra: True})
    with pytest.raises(ConfigError, match=rf"needs .*{module}.*pip install 'segkit\[{extra}\]'"):
        make_trainer(tmp_path, hooks_cfg=hooks_cfg)


def test_tracker_options_come_from_yaml_and_bad_names_are_one_line(tmp_path):
    cfg = load_config(None, ["train.hooks.mlflow.experiment=faces", "train.hooks.wandb=true"])
    assert cfg.train.hooks.mlflow.experiment == "faces" and cfg.train.hooks.wandb.mode is None
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  hooks:\n    mlflow: false\n    wandb: {mode: online}\n")
    cfg = load_config(path, ["train.hooks.mlflow.run_name=r1"])  # a key switches it on
    assert cfg.train.hooks.mlflow.run_name == "r1" and cfg.train.hooks.wandb.mode == "online"
    with pytest.raises(
        ConfigError, match=r"'train.hooks.mlflow.experimnt'.*'train.hooks.mlflow.experiment'"
    ):
        load_config(None, ["train.hooks.mlflow.experimnt=x"])
    path.write_text("train:\n  hooks:\n    wandb: {projet: x}\n")
    with pytest.raises(
        ConfigError, match=r"'train.hooks.wandb.projet'. Did you mean 'train.hooks.wandb.project'"
    ):
        load_config(path)
    with pytest.raises(ConfigError, match="train.hooks.wandb: expected true, false or a mapping"):
        load_config(None, ["train.hooks.wandb=maybe"])
    with pytest.raises(ConfigError, match=r"mode='ofline' is not one of .*Did you mean 'offline'"):
        WandbHook(mode="ofline")
