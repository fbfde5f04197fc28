"""Checkpoints: contents, atomic writes, safe loading, clear errors, rebuilding a model."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from segkit.data.meta import DatasetMeta
from segkit.engine import load_checkpoint, model_from_checkpoint, save_checkpoint
from segkit.engine.checkpoint import (
    copy_checkpoint,
    recorded_classes,
    rng_state,
    set_rng_state,
    to_plain,
    upgrade,
)
from segkit.errors import CheckpointError


class WithSpec(torch.nn.Sequential):
    """A tiny net carrying a ``spec`` as segkit models do."""

    class Spec:
        def to_dict(self):
            return {"arch": "tiny", "classes": 3, "mean": (0.5, 0.5, 0.5), "path": Path("/x")}

    spec = Spec()


@pytest.fixture(scope="module")
def run_dir(make_trainer, tiny_net, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = WithSpec(*tiny_net(3))
    trainer = make_trainer(
        out, model=model, epochs=2, monitor="val_miou", full_config={"train": {"epochs": 2}}
    )
    trainer.fit()
    torch.set_num_threads(threads)
    return out


def test_checkpoint_contents(run_dir):
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["format"] == "segkit-checkpoint" and ckpt["version"] == 2
    assert (ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["step"], ckpt["iteration"]) == (2, 0, 8, 8)
    assert ckpt["model_spec"] == {
        "arch": "tiny",
        "classes": 3,
        "mean": [0.5, 0.5, 0.5],
        "path": "/x",
    }
    assert ckpt["config"] == {"train": {"epochs": 2}}
    assert ckpt["class_names"] == ["class_0", "class_1", "class_2"]
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert {"scaler", "model_spec", "epoch_lr"} <= set(ckpt) and "train_model" not in ckpt
    assert ckpt["optimizer"]["state"] and ckpt["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert set(ckpt["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    hooks = ckpt["hooks"]
    best = hooks["best"]
    assert (best["monitor"], best["mode"]) == ("val_miou", "max")
    assert hooks["early_stop"] == {"bad": 0 if best["best_epoch"] == 2 else 1}
    assert hooks["lr"]["name"] == "none" and "val_miou" in hooks["eval"]["metrics"]
    assert set(hooks) == {
        "config", "eval", "best", "lr", "early_stop", "history", "plot", "progress", "checkpoint"
    }  # fmt: skip
    best_pt = load_checkpoint(run_dir / "best.pt")
    assert best_pt["epoch"] == best_pt["hooks"]["best"]["best_epoch"] == best["best_epoch"]
    assert best["best"] == max(best["best"], hooks["eval"]["metrics"]["val_miou"])


def test_a_format_1_checkpoint_is_upgraded_on_loading():
    """tests/data/v1_*/last.pt were written by segkit before hooks owned their state."""
    path = Path(__file__).parent / "data" / "v1_plateau" / "last.pt"
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == 1
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == 2 and not {"best", "monitor", "scheduler", "metrics"} & set(ckpt)
    hooks = ckpt["hooks"]
    assert hooks["best"] == {
        "best": raw["best"], "best_epoch": raw["best_epoch"], "monitor": "val_loss", "mode": "min"
    }  # fmt: skip
    assert hooks["lr"]["name"] == "plateau" and hooks["lr"]["scheduler"] == raw["scheduler"]
    assert hooks["early_stop"] == raw["hooks"]["EarlyStopHook"]
    assert hooks["eval"]["metrics"] == raw["metrics"]


def test_an_old_checkpoint_loaded_once_has_the_current_formats_keys(run_dir):
    """Loading is the one upgrade path: callers read fields without fallbacks for old files."""
    old = load_checkpoint(Path(__file__).parent / "data" / "v1_cosine" / "last.pt")
    current = load_checkpoint(run_dir / "last.pt")
    assert set(old) == set(current)
    assert {"best", "lr", "eval"} <= set(old["hooks"])
    assert old["channels_last"] is False  # its config's train.channels_last
    assert old["model_spec"] is None and old["config"]["train"]["epochs"] == 3
    assert upgrade(old).keys() == old.keys()


def test_loading_fills_in_what_older_versions_did_not_record(tmp_path):
    """A spec without meta, image size or resize mode and a state without its layout, as older
    segkit versions wrote them: loading fills them in once, and loading is idempotent."""
    models = pytest.importorskip("segkit.models")
    from segkit.inference.predictor import load_model
    from segkit.models.spec import IMAGENET_MEAN

    model = models.build_model(arch="unet", classes=3, base_channels=4, class_names=list("abc"))
    spec = model.spec.to_dict()
    del spec["meta"], spec["imports"]
    assert "image_size" not in spec["options"] and "resize" not in spec["options"]
    config = {
        "train": {"channels_last": True},
        "data": {"image_size": 48, "dataset": "folder"},
        "augment": {"normalize": "imagenet"},
        "loss": {"ignore_index": 255},
    }
    state = {"model": model.state_dict(), "model_spec": spec, "config": config}
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "old.pt", state))
    assert ckpt["channels_last"] is True
    options, meta = ckpt["model_spec"]["options"], ckpt["model_spec"]["meta"]
    assert options["image_size"] == 48 and options["resize"] == "squash"
    assert meta["classes"] == ["a", "b", "c"] and meta["ignore_index"] == 255
    assert meta["dataset"] == "folder"
    assert ckpt["model_spec"]["mean"] == pytest.approx(IMAGENET_MEAN)  # what training used
    again = upgrade(ckpt)
    assert again["model_spec"] == ckpt["model_spec"] and again["config"] == ckpt["config"]
    assert again["channels_last"] is True
    rebuilt, size = load_model(tmp_path / "old.pt", device="cpu")
    assert size == 48 and rebuilt.spec.meta == meta
    assert recorded_classes(tmp_path / "old.pt") == (["a", "b", "c"], DatasetMeta.from_dict(meta))


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"x": torch.ones(2)})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"x": torch.zeros(2)})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_copy_checkpoint_links_and_survives_a_later_write(tmp_path):
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint(last, {"epoch": 1})
    copy_checkpoint(last, best)
    assert best.stat().st_ino == last.stat().st_ino  # a hard link: nothing serialised twice
    save_checkpoint(last, {"epoch": 2})  # a later epoch that did not improve
    assert load_checkpoint(best)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_copy_checkpoint_copies_where_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError("links not supported")

    monkeypatch.setattr("os.link", no_links)
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint(last, {"epoch": 3})
    save_checkpoint(best, {"epoch": 1})
    copy_checkpoint(last, best)
    assert best.stat().st_ino != last.stat().st_ino
    assert load_checkpoint(best)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_save_refuses_values_weights_only_cannot_load(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]\['p'\] is a PosixPath"):
        save_checkpoint(tmp_path / "x.pt", {"extra": {"p": Path("/a")}})
    assert not (tmp_path / "x.pt").exists()


@dataclass
class _Cfg:
    root: Path
    sizes: tuple = (1, 2)


def test_to_plain():
    assert to_plain({"cfg": _Cfg(Path("/d")), "v": np.float32(0.5), 3: {1, 2}}) == {
        "cfg": {"root": "/d", "sizes": [1, 2]},
        "v": 0.5,
        "3": [1, 2],
    }


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == first


class Custom:
    """Any class: weights_only loading refuses to import it."""


def test_load_errors_name_the_file_and_what_to_do(tiny_net, tmp_path, run_dir):
    with pytest.raises(CheckpointError, match=r"missing\.pt' does not exist.*best\.pt or last"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder.*holds best.pt and last.pt"):
        load_checkpoint(run_dir)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt' is not a PyTorch checkpoint"):
        load_checkpoint(garbage)
    cut = tmp_path / "cut.pt"
    data = (run_dir / "last.pt").read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt' could not be read.*corrupt or truncated"):
        load_checkpoint(cut)
    bare = tmp_path / "bare.pt"
    torch.save(tiny_net().state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare.pt' is not a segkit checkpoint"):
        load_checkpoint(bare)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "segkit-checkpoint", "x": Custom()}, evil)
    with pytest.raises(
        CheckpointError, match=r"evil.pt' asks to run code on load \(it names .*Custom\)"
    ):
        load_checkpoint(evil)
    future = tmp_path / "future.pt"
    torch.save({"format": "segkit-checkpoint", "version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99.*Upgrade segkit"):
        load_checkpoint(future)


def test_model_from_checkpoint_without_spec(make_trainer, tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(CheckpointError, match="holds no model description"):
        model_from_checkpoint(tmp_path / "last.pt")


def test_model_from_checkpoint_rebuilds_a_segkit_model(make_trainer, tmp_path):
    models = pytest.importorskip("segkit.models")
    model = models.build_model(arch="unet", classes=3, base_channels=4, class_names=list("abc"))
    trainer = make_trainer(tmp_path, model=model, epochs=1, monitor="val_miou")
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert ckpt["model_spec"]["arch"] == "unet" and ckpt["class_names"] == ["a", "b", "c"]
    rebuilt = model_from_checkpoint(tmp_path / "best.pt")
    assert not rebuilt.training
    x = torch.rand(1, 3, 32, 64)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
