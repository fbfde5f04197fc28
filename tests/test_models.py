"""Model registry, factory, weights handling and checkpoint matching."""

from __future__ import annotations

import dataclasses
import io
import time

import pytest
import torch
import torchvision

import segkit.models.registry as registry
import segkit.models.smp as smp_models
from segkit.config import ModelConfig
from segkit.errors import CheckpointError, ConfigError, WeightsError
from segkit.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    build_model,
    check_spec_matches,
    crop,
    get_model_entry,
    list_encoders,
    list_models,
    load_state,
    model_from_config,
    pad_to_divisor,
    rebuild_model,
    register_model,
)

# One case per registered architecture: build arguments and the input side (64 unless noted).
SMALL = {"encoder": "resnet18"}
CASES: dict[str, dict] = {
    "unet": {"base_channels": 4},
    "smp.Unet": {**SMALL, "options": {"decoder_channels": [32, 16, 8, 8, 8]}},
    "smp.UnetPlusPlus": {**SMALL, "options": {"decoder_channels": [16, 8, 8, 8, 8]}},
    "smp.MAnet": {
        **SMALL,
        "options": {"decoder_channels": [16, 8, 8, 8, 8], "decoder_pab_channels": 8},
    },
    "smp.Linknet": SMALL,
    "smp.FPN": {
        **SMALL,
        "options": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    },
    "smp.PSPNet": {**SMALL, "options": {"psp_out_channels": 16}},
    "smp.DeepLabV3": {**SMALL, "options": {"decoder_channels": 16}},
    "smp.DeepLabV3Plus": {**SMALL, "options": {"decoder_channels": 16}},
    # PAN's feature pyramid attention pools the stride-16 map three times: needs >= 128 px
    "smp.PAN": {**SMALL, "options": {"decoder_channels": 16}, "size": 128},
    "smp.UPerNet": {**SMALL, "options": {"decoder_channels": 16}},
    "smp.Segformer": {**SMALL, "options": {"decoder_segmentation_channels": 16}},
    # DPT only builds with timm ViT encoders
    "smp.DPT": {
        "encoder": "tu-test_vit",
        "options": {"decoder_intermediate_channels": [8, 8, 8, 8], "decoder_fusion_channels": 8},
    },
}


def tiny(arch: str, **overrides):
    case = {k: v for k, v in CASES[arch].items() if k != "size"}
    return build_model(arch=arch, **{**case, **overrides})


def test_every_registered_model_has_a_case():
    missing = sorted(set(list_models()) - set(CASES))
    assert not missing, f"add a test case to CASES for {missing}"
    assert not set(CASES) - set(list_models())


@pytest.mark.parametrize("arch", list_models())
def test_forward_backward(arch):
    if arch not in CASES:
        pytest.fail(f"{arch} has no test case in CASES")
    torch.manual_seed(0)
    model = tiny(arch, classes=3).train()
    side = CASES[arch].get("size", 64)
    x = torch.randn(2, 3, side, side)
    y = model(x)
    assert y.shape == (2, 3, side, side)
    y.square().mean().backward()
    # only encoder parts can be unused (PSPNet stops after layer2, timm ViTs keep a classifier)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert all(n.startswith("net.encoder.") for n in unused), unused
    assert len(unused) < len(list(model.parameters())) / 2
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.spec.task == "multiclass"
    assert model.spec.divisor == get_model_entry(arch).divisor  # what the registry declares
    assert side % model.spec.divisor == 0


def test_unet_shapes_from_the_issue():
    model = build_model(arch="unet", classes=11, base_channels=4).eval()
    with torch.no_grad():
        y = model(torch.randn(10, 3, 256, 256))
    assert y.shape == (10, 11, 256, 256)


def double_conv_params(cin: int, cout: int, mid: int | None = None) -> int:
    mid = mid or cout
    return 9 * cin * mid + 2 * mid + 9 * mid * cout + 2 * cout  # convs without bias + 2 BN


def reference_unet_params(classes: int, base: int = 64, bilinear: bool = False) -> int:
    c = [base * m for m in (1, 2, 4, 8, 16)]
    f = 2 if bilinear else 1
    n = double_conv_params(3, c[0])
    n += sum(double_conv_params(c[i], c[i + 1]) for i in range(3))
    n += double_conv_params(c[3], c[4] // f)
    outs = [c[3] // f, c[2] // f, c[1] // f, c[0]]
    for cin, cout in zip(c[::-1][:4], outs):
        if bilinear:
            n += double_conv_params(cin, cout, cin // 2)
        else:
            n += 4 * cin * (cin // 2) + cin // 2 + double_conv_params(cin, cout)
    return n + c[0] * classes + classes


@pytest.mark.parametrize("upsample", ["transpose", "bilinear"])
def test_unet_default_width_matches_the_paper(upsample):
    model = build_model(arch="unet", classes=1, upsample=upsample)
    n = sum(p.numel() for p in model.parameters())
    assert n == reference_unet_params(1, bilinear=upsample == "bilinear")
    if upsample == "transpose":
        assert n == 31_037_633  # the well-known count of the paper's U-Net (3 in, 1 out)
    net = model.net
    assert net.inc[0].out_channels == 64 and net.down3[1][3].out_channels == 512
    assert net.down4[1][3].out_channels == (1024 if upsample == "transpose" else 512)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 32, 16)).shape == (1, 1, 32, 16)


def test_specs_carry_preprocessing():
    smp_model = build_model(arch="smp.Linknet", encoder="resnet18", classes=1)
    s = smp_model.spec
    assert (s.mean, s.std, s.divisor, s.task) == (IMAGENET_MEAN, IMAGENET_STD, 32, "binary")
    unet = build_model(arch="unet", base_channels=4, classes=3, class_names=["a", "b", "c"])
    assert (unet.spec.mean, unet.spec.std) == ((0.0,) * 3, (1.0,) * 3)
    assert unet.spec.divisor == 16 and unet.spec.encoder is None
    grey = build_model(arch="unet", base_channels=4, in_channels=1)
    assert grey.spec.mean == (0.0,)
    assert grey.eval()(torch.randn(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_model_from_config():
    cfg = ModelConfig(arch="unet", base_channels=4, upsample="bilinear")
    binary = model_from_config(cfg, ["background", "car"])
    assert binary.spec.classes == 1 and binary.spec.class_names == ["background", "car"]
    helen = model_from_config(cfg, [str(i) for i in range(11)])
    assert helen.spec.classes == 11 and helen.spec.upsample == "bilinear"
    with pytest.raises(ConfigError, match="at least 2 class names"):
        model_from_config(cfg, ["car"])


def test_indivisible_input_is_explained_and_pad_then_crop_works():
    model = build_model(arch="unet", base_channels=4, classes=2).eval()
    x = torch.randn(1, 3, 40, 50)
    with pytest.raises(ValueError, match=r"height=40, width=50.*divisible by 16.*\(48, 64\)"):
        model(x)
    padded, size = pad_to_divisor(x, model.spec.divisor)
    assert padded.shape[-2:] == (48, 64) and size == (40, 50)
    torch.testing.assert_close(padded[..., :40, :50], x)
    with torch.no_grad():
        y = crop(model(padded), size)
    assert y.shape == (1, 2, 40, 50)
    tiny_img = torch.randn(1, 3, 5, 3)
    assert pad_to_divisor(tiny_img, 16)[0].shape[-2:] == (16, 16)  # replicate fallback
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": "smp.Unte"}, "Did you mean 'smp.Unet'"),
        ({"encoder": "resnet81"}, "Did you mean 'resnet18'"),
        ({"encoder": "tu-resnet81"}, "'tu-resnet18'"),
        ({"classes": 0}, "classes must be an integer >= 1"),
        ({"arch": "unet", "upsample": "bilinar"}, "Did you mean 'bilinear'"),
        ({"arch": "unet", "encoder_weights": "imagenet"}, "no pretrained encoder"),
        ({"arch": "unet", "options": {"dropout": 0.1}}, "takes no options"),
        ({"options": {"decoder_chanels": [8] * 5}}, "Did you mean 'decoder_channels'"),
        ({"options": {"activation": "sigmoid"}}, "logits"),
        ({"arch": "smp.DPT"}, "Cannot build smp.DPT"),
        ({"classes": 1, "class_names": ["a", "b", "c"]}, "needs 2 names"),
        ({"clases": 2}, "Did you mean 'classes'"),
    ],
)
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model(**kwargs)


def test_listing_with_wildcards():
    assert list_models("smp.Unet*") == ["smp.Unet", "smp.UnetPlusPlus"]
    assert "unet" in list_models()
    assert list_encoders("resnet1*") == ["resnet101", "resnet152", "resnet18"]
    assert "tu-resnet18" in list_encoders("tu-resnet1*")


def test_register_model_with_one_decorator(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))

    @register_model("tiny_conv", divisor=1, mean=(0.5,) * 3, std=(0.5,) * 3, uses_encoder=False)
    def build_tiny(spec: ModelSpec) -> torch.nn.Module:
        """A single convolution."""
        return torch.nn.Conv2d(spec.in_channels, spec.classes, 3, padding=1)

    model = build_model(arch="tiny_conv", classes=2)
    assert model(torch.randn(1, 3, 7, 9)).shape == (1, 2, 7, 9)
    assert model.spec.mean == (0.5,) * 3
    assert registry.get_model_entry("tiny_conv").description == "A single convolution."
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_conv")(build_tiny)


# ------------------------------------------------------------------------ weights


def test_imagenet_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # an empty weights cache, so the result does not depend on what this machine downloaded
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"(?s)Could not fetch.*resnet18.*path.*None"):
        build_model(encoder="resnet18", encoder_weights="imagenet")
    assert time.monotonic() - start < 5


def test_unreachable_hub_fails_fast_through_the_real_probe(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setattr(smp_models, "_cached_weights", lambda encoder, weights: None)
    start = time.monotonic()
    with pytest.raises(WeightsError, match=r"127\.0\.0\.1:9 is unreachable"):
        build_model(arch="smp.FPN", encoder="resnet18", encoder_weights="imagenet")
    assert time.monotonic() - start < 5


def test_probe_timeout_bounds_a_hanging_connection(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def hang(*args, **kwargs):
        time.sleep(2)
        raise OSError("gave up")

    monkeypatch.setattr(smp_models.socket, "create_connection", hang)
    start = time.monotonic()
    assert "did not answer" in smp_models.hub_unreachable_reason(timeout=0.2)
    assert time.monotonic() - start < 1


def test_unreachable_hub_uses_cached_weights(monkeypatch, tmp_path):
    from safetensors.torch import save_file

    source = build_model(encoder="resnet18", options={"decoder_channels": [8] * 5})
    path = tmp_path / "model.safetensors"
    save_file(source.net.encoder.state_dict(), str(path))
    monkeypatch.setattr(smp_models, "hub_unreachable_reason", lambda: "no network in the test")
    monkeypatch.setattr(smp_models, "_cached_weights", lambda encoder, weights: path)
    model = build_model(encoder="resnet18", encoder_weights="imagenet")
    torch.testing.assert_close(model.net.encoder.conv1.weight, source.net.encoder.conv1.weight)
    monkeypatch.setattr(smp_models, "_cached_weights", lambda encoder, weights: None)
    with pytest.raises(WeightsError, match="no network in the test"):
        build_model(encoder="resnet18", encoder_weights="imagenet")


@pytest.fixture(scope="module")
def torchvision_resnet18(tmp_path_factory):
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18-local.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_local_torchvision_state_dict(torchvision_resnet18):
    reference, path = torchvision_resnet18
    model = build_model(encoder="resnet18", encoder_weights=str(path), classes=2)
    enc = model.net.encoder
    torch.testing.assert_close(enc.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(enc.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.spec.encoder_weights == str(path)
    grey = build_model(encoder="resnet18", encoder_weights=str(path), in_channels=1)
    assert grey.net.encoder.conv1.weight.shape[1] == 1
    assert grey.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_local_smp_encoder_state_dict_with_prefix(tmp_path):
    source = build_model(encoder="resnet18", options={"decoder_channels": [8] * 5})
    path = tmp_path / "smp_full.pt"
    torch.save(source.net.state_dict(), path)  # encoder.* and decoder.* keys
    model = build_model(arch="smp.FPN", encoder="resnet18", encoder_weights=str(path))
    torch.testing.assert_close(
        model.net.encoder.layer1[0].conv1.weight, source.net.encoder.layer1[0].conv1.weight
    )


def test_bad_local_weights_name_the_file(tmp_path, torchvision_resnet18):
    _, resnet18_path = torchvision_resnet18
    with pytest.raises(WeightsError, match=r"resnet18-local\.pth.*missing keys"):
        build_model(encoder="resnet34", encoder_weights=str(resnet18_path))
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=r"nope\.pth.*does not exist"):
        build_model(encoder="resnet18", encoder_weights=str(missing))
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(WeightsError, match=r"junk\.pth.*state dict"):
        build_model(encoder="resnet18", encoder_weights=str(junk))
    with pytest.raises(WeightsError, match="neither a weights name"):
        build_model(encoder="resnet18", encoder_weights="imagenett")


# --------------------------------------------------------------- checkpoint rebuild


def plain_types_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_types_only(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_checkpoint_round_trip_with_weights_only_load(torchvision_resnet18):
    _, path = torchvision_resnet18
    model = build_model(
        arch="smp.Unet",
        encoder="resnet18",
        encoder_weights=str(path),
        classes=3,
        class_names=["a", "b", "c"],
        options={"decoder_channels": [16, 8, 8, 8, 8]},
    ).eval()
    spec = model.spec.to_dict()
    assert plain_types_only(spec)
    buffer = io.BytesIO()
    torch.save({"spec": spec, "model": model.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    rebuilt = rebuild_model(ckpt["spec"]).eval()
    load_state(rebuilt, ckpt["model"], source="ckpt.pt")
    assert rebuilt.spec == model.spec
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert ModelSpec.from_dict(spec) == model.spec
    with pytest.raises(ConfigError, match="Did you mean 'classes'"):
        ModelSpec.from_dict({**spec, "clases": 3})


def test_load_state_handles_prefixes():
    model = build_model(arch="unet", base_channels=4, classes=2)
    other = build_model(arch="unet", base_channels=4, classes=2)
    load_state(other, {f"module.{k}": v for k, v in model.state_dict().items()}, "ddp.pt")
    load_state(other, model.net.state_dict(), "bare.pt")
    torch.testing.assert_close(other.net.head.weight, model.net.head.weight)


def test_mismatched_checkpoints_are_explained():
    model = build_model(arch="unet", base_channels=4, classes=11)
    state = model.state_dict()
    two = build_model(arch="unet", base_channels=4, classes=2)
    with pytest.raises(CheckpointError, match=r"run/best\.pt has 11 output classes.*has 2"):
        load_state(two, state, "run/best.pt")
    wider = build_model(arch="unet", base_channels=8, classes=11)
    with pytest.raises(CheckpointError, match=r"run/best\.pt.*differ in shape"):
        load_state(wider, state, "run/best.pt")
    smp_model = build_model(arch="smp.Linknet", encoder="resnet18", classes=11)
    with pytest.raises(CheckpointError, match=r"run/best\.pt.*smp\.Linknet.*182 missing keys"):
        load_state(smp_model, state, "run/best.pt")
    with pytest.raises(CheckpointError, match="state dict"):
        load_state(two, {"epoch": 3}, "run/last.pt")
    with pytest.raises(CheckpointError, match=r"classes: 11 in the checkpoint, 2 here"):
        check_spec_matches(two.spec, model.spec.to_dict(), "run/best.pt")
    check_spec_matches(model.spec, model.spec, "run/best.pt")


@pytest.mark.parametrize("arch", ["unet", "smp.Linknet"])
def test_metadata_options_travel_but_do_not_reach_the_builder(arch):
    model = tiny(arch, classes=2, options={**CASES[arch].get("options", {}), "image_size": 64})
    assert model.spec.options["image_size"] == 64
    rebuilt = rebuild_model(model.spec.to_dict())
    load_state(rebuilt, model.state_dict(), "best.pt")
    assert rebuilt.spec.options["image_size"] == 64
    other = dataclasses.replace(model.spec, options={**model.spec.options, "image_size": 32})
    check_spec_matches(model.spec, other, "best.pt")  # the data size is not the architecture


def test_advprop_weights_get_their_own_normalisation():
    from segkit.models import ModelSpec
    from segkit.models.factory import resolve_spec

    for encoder in ("efficientnet-b0", "timm-efficientnet-b0"):
        spec = resolve_spec(ModelSpec(arch="smp.Unet", encoder=encoder, encoder_weights="advprop"))
        assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
        spec = resolve_spec(ModelSpec(arch="smp.Unet", encoder=encoder, encoder_weights="imagenet"))
        assert spec.mean == IMAGENET_MEAN and spec.std == IMAGENET_STD
