"""Losses against hand-computed values, plus NaN safety and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.errors import ConfigError
from segkit.losses import (
    CombinedLoss,
    build_loss,
    list_losses,
    parse_loss_expression,
    soft_dice_score,
)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# Binary case: four pixels, foreground probabilities P, labels T.
P = [0.8, 0.6, 0.1, 0.5]
T = [1, 1, 0, 0]
BIN_LOGITS = torch.tensor([logit(p) for p in P]).view(1, 1, 2, 2)
BIN_TARGET = torch.tensor(T).view(1, 2, 2)

# Multiclass case: two pixels, softmax(log p) == p exactly.
PIX = [(0.7, 0.2, 0.1), (0.1, 0.3, 0.6)]
MC_LOGITS = torch.tensor(PIX).log().T.reshape(1, 3, 1, 2)
MC_TARGET = torch.tensor([[[0, 2]]])

# Hand-computed expectations, loss name -> (binary value, multiclass value).
# soft Dice per class: (2·Σpt + 1) / (Σp² + Σt² + 1); plain Dice: (2·Σpt + 1) / (Σp + Σt + 1).
EXPECTED = {
    "soft_dice": (1 - 3.8 / 4.26, 1 - (2.4 / 2.5 + 1 / 1.13 + 2.2 / 2.37) / 3),
    "dice": (1 - 3.8 / 5.0, 1 - (2.4 / 2.8 + 1 / 1.5 + 2.2 / 2.7) / 3),
    "ce": (
        -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.5)) / 4,
        -(math.log(0.7) + math.log(0.6)) / 2,
    ),
    "bce": (
        -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.5)) / 4,
        # one-vs-rest over 3 channels x 2 pixels; sigmoid(log p) = p / (1 + p)
        (-math.log(0.7 / 1.7) + math.log(1.2) + math.log(1.1)) / 6
        + (math.log(1.1) + math.log(1.3) - math.log(0.6 / 1.6)) / 6,
    ),
    # the wrapped smp losses, with their default options and segkit's smooth=1
    "focal": (
        # mean over pixels of -(1 - p_t)^2 · log p_t
        sum(-((1 - q) ** 2) * math.log(q) for q in (0.8, 0.6, 0.9, 0.5)) / 4,
        # one-vs-rest per channel, averaged over channels: sigmoid(log p) = p / (1 + p)
        sum(
            sum(-((1 - q) ** 2) * math.log(q) for q in qs) / 2
            for qs in ((0.7 / 1.7, 1 / 1.1), (1 / 1.2, 1 / 1.3), (1 / 1.1, 0.6 / 1.6))
        )
        / 3,
    ),
    # (TP + 1) / (TP + 0.5·FP + 0.5·FN + 1); a class absent from the target counts 0
    "tversky": (
        1 - 2.4 / 3.0,
        (1 - 1.7 / 1.9 + 0 + 1 - 1.6 / 1.85) / 3,
    ),
    # (I + 1) / (U + 1), U = Σp + Σt - I; a class absent from the target counts 0
    "jaccard": (1 - 2.4 / 3.6, (1 - 1.7 / 2.1 + 0 + 1 - 1.6 / 2.1) / 3),
    # hinge errors 1 - logit·sign sorted [1, 1 - logit(0.6), ...] with Lovász gradient
    # [1/3, 1/3, 1/3, 0]; softmax: per present class, |fg - p| sorted, gradient [1, 0]
    "lovasz": ((2 - math.log(1.5)) / 3, (0.3 + 0.4) / 2),
}


def test_every_registered_loss_has_expected_values():
    assert set(EXPECTED) == set(list_losses()), "add hand-computed values for new losses"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_binary_hand_computed(name):
    loss = build_loss(name)(BIN_LOGITS, BIN_TARGET)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(EXPECTED[name][0], rel=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_multiclass_hand_computed(name):
    loss = build_loss(name)(MC_LOGITS, MC_TARGET)
    assert loss.item() == pytest.approx(EXPECTED[name][1], rel=1e-5)


def test_soft_dice_score_functional_per_image():
    p = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 0.5]]]])  # N=2, C=1
    t = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    per_image = soft_dice_score(p, t, smooth=0.0, dims=(2, 3))
    assert per_image.shape == (2, 1)
    assert per_image[0, 0].item() == pytest.approx(1.0)
    assert per_image[1, 0].item() == pytest.approx(1.0 / 1.5)  # 2·0.5 / (0.5 + 1)
    plain = soft_dice_score(p, t, smooth=0.0, dims=(2, 3), squared=False)
    assert plain[1, 0].item() == pytest.approx(1.0 / 2.0)  # 2·0.5 / (1 + 1)
    with pytest.raises(ValueError, match="shape"):
        soft_dice_score(p, t[:, :, :, :1])


def test_class_weights_hand_computed():
    w = [1.0, 0.0, 3.0]
    ce = build_loss("ce", class_weights=w)(MC_LOGITS, MC_TARGET)
    assert ce.item() == pytest.approx(-(math.log(0.7) + 3 * math.log(0.6)) / 4, rel=1e-5)
    dice = build_loss("soft_dice", class_weights=w)(MC_LOGITS, MC_TARGET)
    assert dice.item() == pytest.approx(1 - (2.4 / 2.5 + 3 * 2.2 / 2.37) / 4, rel=1e-5)
    # binary: (background, foreground) pixel weights on the cross-entropy
    bce = build_loss("bce", class_weights=[1.0, 2.0])(BIN_LOGITS, BIN_TARGET)
    terms = [2 * math.log(0.8), 2 * math.log(0.6), math.log(0.9), math.log(0.5)]
    assert bce.item() == pytest.approx(-sum(terms) / 6, rel=1e-5)


def test_ignore_index_hand_computed():
    target = torch.tensor([[[0, 255]]])
    assert build_loss("ce", ignore_index=255)(MC_LOGITS, target).item() == pytest.approx(
        -math.log(0.7), rel=1e-5
    )
    # Dice over the first pixel only: class 0 (1.4+1)/(0.49+1+1), 1: 1/(0.04+1), 2: 1/(0.01+1)
    expected = 1 - (2.4 / 2.49 + 1 / 1.04 + 1 / 1.01) / 3
    got = build_loss("soft_dice", ignore_index=255)(MC_LOGITS, target).item()
    assert got == pytest.approx(expected, rel=1e-5)
    everything = torch.full((1, 1, 2), 255)
    for name in list_losses():
        value = build_loss(name, ignore_index=255)(MC_LOGITS, everything)
        assert torch.isfinite(value), name


def test_weighted_sum_expression():
    combo = build_loss("0.5*ce + 1.0*soft_dice")
    assert isinstance(combo, CombinedLoss)
    expected = 0.5 * EXPECTED["ce"][1] + EXPECTED["soft_dice"][1]
    assert combo(MC_LOGITS, MC_TARGET).item() == pytest.approx(expected, rel=1e-5)
    plain = build_loss("ce + dice")(BIN_LOGITS, BIN_TARGET).item()
    assert plain == pytest.approx(EXPECTED["ce"][0] + EXPECTED["dice"][0], rel=1e-5)
    assert parse_loss_expression(" 2 * bce+.5*dice ") == [(2.0, "bce", {}), (0.5, "dice", {})]


@pytest.mark.parametrize(
    "expression, match",
    [
        ("ce + dcie", "Did you mean 'dice'"),
        ("ce +", "Cannot parse"),
        ("-1*ce", "Cannot parse"),
        ("softdice", "soft_dice"),
    ],
)
def test_bad_expressions(expression, match):
    with pytest.raises(ConfigError, match=match):
        build_loss(expression)


@pytest.mark.parametrize("name", ["soft_dice", "dice", "ce", "bce", "ce + dice"])
@pytest.mark.parametrize("channels", [1, 3])
def test_empty_masks_give_finite_values_and_gradients(name, channels):
    torch.manual_seed(0)
    logits = (torch.randn(2, channels, 8, 8) * 5).requires_grad_()
    target = torch.zeros(2, 8, 8, dtype=torch.int64)  # all background
    loss = build_loss(name)(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_empty_mask_predicted_empty_scores_perfectly():
    logits = torch.full((1, 1, 4, 4), -30.0)
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    assert build_loss("soft_dice")(logits, target).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["soft_dice", "dice", "ce", "bce", "ce + dice"])
def test_half_precision_logits(name, dtype):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * 3
    logits[0, 0, 0, 0] = 6e4  # huge but representable in half precision
    target = torch.randint(0, 3, (2, 8, 8))
    target[1] = 0
    loss_fn = build_loss(name)
    half = logits.to(dtype).requires_grad_()
    value = loss_fn(half, target)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(value) and torch.isfinite(half.grad.float()).all()
    reference = loss_fn(half.detach().float(), target)
    assert value.item() == pytest.approx(reference.item(), rel=1e-4)


def test_bad_inputs_are_explained():
    loss = build_loss("ce")
    with pytest.raises(ValueError, match=r"label values \[3, 7\] outside 0..2"):
        loss(MC_LOGITS, torch.tensor([[[3, 7]]]))
    with pytest.raises(ValueError, match=r"label values \[2\] outside 0..1"):
        build_loss("dice")(BIN_LOGITS, torch.tensor([[[0, 2], [1, 1]]]))
    with pytest.raises(ValueError, match=r"\(1, 3, 1, 2\).*\(1, 2, 2\)"):
        loss(MC_LOGITS, torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer labels"):
        loss(MC_LOGITS, MC_TARGET.float())
    with pytest.raises(ValueError, match="class_weights has 2 values"):
        build_loss("ce", class_weights=[1, 2])(MC_LOGITS, MC_TARGET)
    with pytest.raises(ValueError, match="binary needs 1 channel"):
        build_loss("ce", mode="binary")(MC_LOGITS, MC_TARGET)
    with pytest.raises(ConfigError, match="mode"):
        build_loss("ce", mode="multilabel")
    with pytest.raises(ConfigError, match="negative"):
        build_loss("ce", class_weights=[1, -1, 1])


def test_target_with_channel_axis_is_accepted():
    value = build_loss("soft_dice")(BIN_LOGITS, BIN_TARGET.unsqueeze(1))
    assert value.item() == pytest.approx(EXPECTED["soft_dice"][0], rel=1e-5)


def test_loss_options_reach_the_terms():
    # gamma=0 turns focal into plain BCE: mean of -log p_t
    bce = -(math.log(0.8) + math.log(0.6) + math.log(0.9) + math.log(0.5)) / 4
    assert build_loss("focal", gamma=0)(BIN_LOGITS, BIN_TARGET).item() == pytest.approx(bce)
    gamma1 = sum(-(1 - q) * math.log(q) for q in (0.8, 0.6, 0.9, 0.5)) / 4
    assert build_loss("focal(gamma=1)")(BIN_LOGITS, BIN_TARGET).item() == pytest.approx(gamma1)
    both = build_loss("bce + focal", focal={"gamma": 1})(BIN_LOGITS, BIN_TARGET).item()
    assert both == pytest.approx(bce + gamma1)
    # Tversky alpha=0.3, beta=0.7, smooth=0: TP / (TP + 0.3·FP + 0.7·FN) = 1.4 / (1.4 + .18 + .42)
    tv = build_loss("tversky", smooth=0, alpha=0.3, beta=0.7)(BIN_LOGITS, BIN_TARGET).item()
    assert tv == pytest.approx(1 - 1.4 / 2.0, rel=1e-5)


def test_loss_option_errors_name_the_option():
    with pytest.raises(ConfigError, match="'gama'.*Did you mean 'gamma'"):
        build_loss("focal", gama=1)
    with pytest.raises(ConfigError, match="takes the option 'gamma'"):
        build_loss("ce + dice", gamma=1)
    with pytest.raises(ConfigError, match="name=value"):
        build_loss("focal(2)")
