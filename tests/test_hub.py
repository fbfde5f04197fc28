"""Hub folders: segkit export --hub writes config.json + model.safetensors + a model card that
segkit (load_checkpoint, Predictor, predict) and smp.from_pretrained read back; no network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segkit.cli import main
from segkit.engine.checkpoint import load_checkpoint, save_checkpoint
from segkit.errors import CheckpointError, ConfigError
from segkit.hub import export_hub
from segkit.inference import Predictor
from segkit.models import build_model

NAMES = ["background", "skin", "hair"]


def _checkpoint(tmp_path, arch="smp.Unet", **kwargs):
    torch.manual_seed(0)
    model = build_model(arch=arch, classes=3, class_names=NAMES, **kwargs)
    state = {
        "model": model.state_dict(),
        "model_spec": model.spec.to_dict(),
        "class_names": NAMES,
        "config": {"data": {"image_size": 64}},
        "epoch": 7,
        "hooks": {
            "eval": {"metrics": {"val_loss": 0.25, "val_miou": 0.75, "val_f1_hair": float("nan")}},
            "best": {"best": 0.75, "best_epoch": 6, "monitor": "val_miou", "mode": "max"},
        },
    }
    return save_checkpoint(tmp_path / "best.pt", state)


@pytest.fixture
def smp_unet(tmp_path):
    return _checkpoint(tmp_path, encoder="resnet18", encoder_weights=None)


def test_a_hub_folder_loads_as_the_checkpoint_it_was_exported_from(tmp_path, smp_unet):
    hub = export_hub(smp_unet, tmp_path / "hub")
    assert sorted(p.name for p in hub.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    ckpt, folder = load_checkpoint(smp_unet), load_checkpoint(hub)
    assert folder["model"].keys() == ckpt["model"].keys()
    for key, value in ckpt["model"].items():
        assert torch.equal(folder["model"][key], value), key
    assert folder["model_spec"] == ckpt["model_spec"]
    assert folder["class_names"] == NAMES and folder["config"] == ckpt["config"]
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    assert np.array_equal(
        Predictor(hub, device="cpu").labels(image), Predictor(smp_unet).labels(image)
    )


def test_smp_from_pretrained_builds_the_same_network(tmp_path, smp_unet):
    smp = pytest.importorskip("segmentation_models_pytorch")
    hub = export_hub(smp_unet, tmp_path / "hub")
    config = json.loads((hub / "config.json").read_text())
    assert config["_model_class"] == "Unet" and config["encoder_name"] == "resnet18"
    assert config["encoder_weights"] is None and config["classes"] == 3
    net = smp.from_pretrained(str(hub)).eval()
    assert type(net).__name__ == "Unet"
    weights = load_checkpoint(smp_unet)["model"]  # segkit's model holds smp's as .net
    assert len(net.state_dict()) == len(weights)
    for key, value in net.state_dict().items():
        assert torch.equal(value, weights[f"net.{key}"]), key


def test_the_model_card_says_what_how_well_and_how_to_run_it(tmp_path, smp_unet):
    card = (export_hub(smp_unet, tmp_path / "hub") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: segmentation-models-pytorch\n")
    assert (
        "| 2 | hair |" in card
        and "| val_miou | 0.7500 |" in card
        and "| val_f1_hair | n/a |" in card
    )
    assert "Best val_miou: 0.7500 at epoch 6." in card
    assert "segkit predict --checkpoint hub image.jpg" in card
    assert 'smp.from_pretrained("hub")' in card


def test_a_from_scratch_unet_exports_without_smp_config(tmp_path):
    ckpt = _checkpoint(tmp_path, arch="unet", base_channels=4)
    hub = export_hub(ckpt, tmp_path / "hub")
    config = json.loads((hub / "config.json").read_text())
    assert list(config) == ["_segkit"]
    assert "from_pretrained" not in (hub / "README.md").read_text()
    image = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(Predictor(hub, device="cpu").labels(image), Predictor(ckpt).labels(image))


def test_cli_export_hub_then_predict_from_the_folder(tmp_path, smp_unet, capsys):
    from segkit.data.io import write_image

    hub = tmp_path / "hub"
    assert main(["export", "--checkpoint", str(smp_unet), "--hub", str(hub)]) == 0
    assert f"wrote {hub}" in capsys.readouterr().out
    write_image(tmp_path / "x.jpg", np.full((40, 56, 3), 120, np.uint8))
    for source, out in ((hub, "from_hub"), (smp_unet, "from_ckpt")):
        args = ["predict", "--checkpoint", str(source), str(tmp_path / "x.jpg")]
        assert main([*args, "--out", str(tmp_path / out), "--device", "cpu"]) == 0
    assert (tmp_path / "from_hub" / "x.png").read_bytes() == (
        tmp_path / "from_ckpt" / "x.png"
    ).read_bytes()
    with pytest.raises(
        ConfigError, match="already holds config.json, model.safetensors, README.md"
    ):
        export_hub(smp_unet, hub)
    export_hub(smp_unet, hub, overwrite=True)


def test_a_foreign_hub_folder_is_refused_naming_its_config(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "config.json").write_text('{"_model_class": "Unet"}')
    save_file({"w": torch.zeros(1)}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="config.json.*has no segkit description"):
        load_checkpoint(folder)
