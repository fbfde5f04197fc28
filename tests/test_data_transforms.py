"""Transform pipelines: resize, normalisation against hand computation, flips, dataset output types."""

import cv2
import numpy as np
import pytest
import torch

from segkit.config import AugmentConfig
from segkit.data import (
    HELEN_FLIP_PAIRS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    HelenDataset,
    LabelAwareHorizontalFlip,
    build_transforms,
    synth_helen,
)
from segkit.errors import ConfigError

NO_AUG = AugmentConfig(hflip=0.0)


def _image(h=40, w=50):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_constants():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_eval_pipeline_resizes_and_scales_to_unit_range():
    image = _image()
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 5:30] = 3
    out = build_transforms(None, 32, train=False, mean=(0, 0, 0), std=(1, 1, 1))(
        image=image, mask=mask
    )
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    # shrinking: area averaging, as prediction's read_resized; masks by pixel centres
    expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA) / 255.0
    np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(
        out["mask"].numpy(), cv2.resize(mask, (32, 32), interpolation=cv2.INTER_NEAREST_EXACT)
    )
    # enlarging: bilinear
    big = build_transforms(None, 64, train=False, mean=(0, 0, 0), std=(1, 1, 1))(image=image)
    expected = cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR) / 255.0
    np.testing.assert_allclose(big["image"].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_training_and_prediction_see_the_same_pixels(tmp_path):
    from segkit.data.io import read_resized

    path = tmp_path / "a.png"  # not a JPEG: no reduced decode on the prediction side
    cv2.imwrite(str(path), cv2.cvtColor(_image(), cv2.COLOR_RGB2BGR))
    for size in (16, 32, 64):
        pipeline = build_transforms(None, size, train=False, mean=(0, 0, 0), std=(1, 1, 1))
        trained = pipeline(image=_image())["image"].permute(1, 2, 0).numpy() * 255.0
        predicted, _ = read_resized(path, size)
        np.testing.assert_allclose(trained, predicted, atol=1e-3)


def test_the_resized_mask_stays_on_the_image(tmp_path):
    image = np.zeros((1280, 1918, 3), np.uint8)
    mask = np.zeros((1280, 1918), np.uint8)
    image[400:900, 500:1400], mask[400:900, 500:1400] = 255, 1
    out = build_transforms(None, 128, train=False, mean=(0, 0, 0), std=(1, 1, 1))(
        image=image, mask=mask
    )
    ys, xs = np.nonzero(out["mask"].numpy())
    weights = out["image"][0].numpy()
    wy, wx = np.nonzero(weights >= 0.5)
    assert abs(ys.mean() - wy.mean()) < 0.3 and abs(xs.mean() - wx.mean()) < 0.3


def test_imagenet_normalisation_matches_hand_computation():
    image = _image(32, 32)
    out = build_transforms(NO_AUG, 32, train=False)(image=image, mask=np.zeros((32, 32), np.uint8))
    expected = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_train_pipeline_contents():
    augment = AugmentConfig(hflip=0.5, vflip=0.3, affine=0.2, color=0.4)
    names = [type(t).__name__ for t in build_transforms(augment, 64, True, flip_pairs=[(2, 3)])]
    assert names == [
        "Resize",
        "LabelAwareHorizontalFlip",
        "VerticalFlip",
        "Affine",
        "ColorJitter",
        "Normalize",
        "ToTensorV2",
    ]
    plain = [type(t).__name__ for t in build_transforms(augment, 64, True)]
    assert "HorizontalFlip" in plain and "LabelAwareHorizontalFlip" not in plain
    evaluation = [
        type(t).__name__ for t in build_transforms(augment, 64, False, flip_pairs=[(2, 3)])
    ]
    assert evaluation == ["Resize", "Normalize", "ToTensorV2"]
    assert [type(t).__name__ for t in build_transforms(NO_AUG, 64, True)] == evaluation


def test_affine_keeps_labels_from_the_label_set():
    mask = np.random.default_rng(1).integers(0, 4, (48, 48)).astype(np.uint8)
    pipeline = build_transforms(AugmentConfig(hflip=0, affine=1.0, rotate=30), 48, True)
    for _ in range(5):
        out = pipeline(image=_image(48, 48), mask=mask)["mask"].numpy()
        assert set(np.unique(out)) <= {0, 1, 2, 3}


def test_label_aware_flip_in_the_pipeline():
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :2] = 2  # class 2 on the left
    mask[:, 6:] = 3  # class 3 on the right
    out = build_transforms(AugmentConfig(hflip=1.0), 8, True, flip_pairs=[(2, 3)])(
        image=_image(8, 8), mask=mask
    )
    np.testing.assert_array_equal(out["mask"].numpy(), mask)  # mirrored and swapped = same layout
    plain = build_transforms(AugmentConfig(hflip=1.0), 8, True)(image=_image(8, 8), mask=mask)
    np.testing.assert_array_equal(plain["mask"].numpy(), mask[:, ::-1])


def test_flip_swaps_non_uint8_masks_too():
    flip = LabelAwareHorizontalFlip([(0, 1)], p=1.0)
    mask = np.array([[0, 1, 5]], np.int32)
    np.testing.assert_array_equal(flip.apply_to_mask(mask), [[5, 0, 1]])


def test_dataset_output_types_with_transform(tmp_path):
    root = synth_helen(tmp_path / "h", n=2, size=40)
    pipeline = build_transforms(AugmentConfig(), 32, True, flip_pairs=HELEN_FLIP_PAIRS)
    item = HelenDataset(root, transform=pipeline)[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (32, 32) and item["mask"].dtype == torch.int64
    batch = torch.utils.data.default_collate([item, HelenDataset(root, transform=pipeline)[1]])
    assert batch["image"].shape == (2, 3, 32, 32) and batch["id"] == ["image_1", "image_2"]


def test_dataset_converts_numpy_transform_output(tmp_path):
    root = synth_helen(tmp_path / "h", n=1, size=24)
    item = HelenDataset(root, transform=lambda image, mask: {"image": image, "mask": mask})[0]
    assert item["image"].shape == (3, 24, 24) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "positive integer"),
        ({"augment": AugmentConfig(hflip=1.5)}, r"augment.hflip.*0..1"),
        ({"augment": AugmentConfig(color=0.5, hue=0.7)}, r"augment.hue .*0..0.5, got 0.7"),
        ({"std": (0.2, 0.0, 0.2)}, "std > 0"),
        ({"mean": (0.5,)}, "3 values"),
    ],
)
def test_bad_settings(kwargs, match):
    args = {"augment": AugmentConfig(), "size": 32, "train": True, **kwargs}
    with pytest.raises(ConfigError, match=match):
        build_transforms(**args)


def test_the_border_an_affine_brings_in_takes_the_ignore_label():
    mask = np.full((40, 50), 3, np.uint8)  # no background anywhere
    augment = AugmentConfig(hflip=0.0, affine=1.0, rotate=30.0, scale=0.3)
    for ignore, border in ((None, 0), (255, 255)):
        pipeline = build_transforms(augment, 32, train=True, ignore_index=ignore)
        values = set()
        for _ in range(10):
            values |= set(np.unique(pipeline(image=_image(), mask=mask)["mask"].numpy()))
        assert values == {3, border}


def test_hue_jitter_turns_a_colour_round_the_wheel():
    """augment.hue reaches albumentations' ColorJitter (the demo turns cars to any hue)."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0] = 200  # pure red
    augment = AugmentConfig(hflip=0.0, color=1.0, hue=0.5)
    pipeline = build_transforms(augment, 8, True, (0.0,) * 3, (1.0,) * 3)
    greens = [
        pipeline(image=image, mask=np.zeros((8, 8), np.uint8))["image"][1].mean() for _ in range(20)
    ]
    assert max(greens) > 0.2  # some draws turned red far round the wheel
