"""The peers of ``bench_peers.py`` as their tutorials write them: the Carvana tutorial's plain
PyTorch loop, smp's LightningModule, and plain prediction loops (whole images and sliding
windows). Nothing here uses segkit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

LR = 1e-3
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)

Wrap = Callable[[Any], Any]


def same(loader: Any) -> Any:
    """The loader as it is (no timing)."""
    return loader


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Carvana tutorial's soft Dice loss of one-channel logits and a 0/1 ``N x H x W`` mask."""
    p = torch.sigmoid(logits[:, 0].float())
    t = target.float()
    return 1 - (2 * (p * t).sum() + 1) / ((p * p).sum() + (t * t).sum() + 1)


# ------------------------------------------------------------------ training


class TutorialSet(torch.utils.data.Dataset):
    """The tutorial's data set: OpenCV reads, an albumentations pipeline, a 0/1 mask."""

    def __init__(self, files: list[tuple[Path, Path]], transform: Any) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Any:
        import cv2

        image_path, mask_path = self.files[i]
        image = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.float32)
        out = self.transform(image=image, mask=mask)
        return out["image"], out["mask"]


def train_plain(
    net: torch.nn.Module, files: list, batch: int, workers: int, epochs: int, wrap: Wrap = same
) -> Any:
    """The tutorial's loop on ``files`` (image, mask) for ``epochs``; returns ``wrap(loader)``,
    the loader it iterated (the benchmark's wrapper times it)."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2
    from torch.utils.data import DataLoader

    transform = A.Compose([A.HorizontalFlip(p=0.5), A.Normalize(MEAN, STD), ToTensorV2()])
    loader = wrap(
        DataLoader(TutorialSet(files, transform), batch, shuffle=True, num_workers=workers)
    )
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    for _ in range(epochs):
        net.train()
        running = 0.0
        for images, masks in loader:
            optimizer.zero_grad()
            loss = soft_dice_loss(net(images), masks)
            loss.backward()
            optimizer.step()
            running += loss.item() * images.size(0)
    return loader


class SmpStyleSet(TutorialSet):
    """smp's example data sets: uint8 CHW images (normalised by the model), 1 x H x W masks."""

    def __getitem__(self, i: int) -> Any:
        image, mask = super().__getitem__(i)
        return {"image": np.moveaxis(image, -1, 0), "mask": mask[None]}


def train_lightning(
    net: torch.nn.Module,
    files: list,
    batch: int,
    workers: int,
    epochs: int,
    root: Path,
    wrap: Wrap = same,
) -> Any:
    """smp's LightningModule pattern, its run folder under ``root``; returns ``wrap(loader)``."""
    import albumentations as A
    import lightning as L
    from torch.utils.data import DataLoader

    class SegModule(L.LightningModule):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(MEAN * 255).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(STD * 255).view(1, 3, 1, 1))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.model((image - self.mean) / self.std)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            loss = soft_dice_loss(self(batch["image"]), batch["mask"][:, 0])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=LR)

    dataset = SmpStyleSet(files, A.Compose([A.HorizontalFlip(p=0.5)]))
    loader = wrap(DataLoader(dataset, batch, shuffle=True, num_workers=workers))
    trainer = L.Trainer(
        max_epochs=epochs,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SegModule(net), train_dataloaders=loader)
    return loader


# ------------------------------------------------------------------ prediction


def plain_model(weights: Path) -> torch.nn.Module:
    """The tutorial's way back to a model: build it, load its saved ``state_dict``."""
    import segmentation_models_pytorch as smp

    net = smp.Unet("resnet18", encoder_weights=None, classes=1)
    net.load_state_dict(torch.load(weights, weights_only=True))
    return net.eval()


def to_input(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 image as a normalised ``1 x 3 x H x W`` tensor."""
    x = (image.astype(np.float32) / 255 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1)).unsqueeze(0)


def plain_predict(weights: Path, jpegs: list[Path], out: Path, size: int) -> None:
    """JPEG -> resize -> model -> resize back -> threshold -> PNG, one image at a time."""
    import cv2
    import torch.nn.functional as F
    from PIL import Image

    net = plain_model(weights)
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for path in jpegs:
            image = np.asarray(Image.open(path).convert("RGB"))
            h, w = image.shape[:2]
            small = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            logits = F.interpolate(net(to_input(small)), (h, w), mode="bilinear")
            label = (torch.sigmoid(logits)[0, 0] > 0.5).numpy().astype(np.uint8)
            Image.fromarray(label).save(out / f"{path.stem}.png")


def starts(length: int, tile: int, stride: int) -> list[int]:
    """Window offsets along one side, the last one flush with the edge."""
    last = max(length - tile, 0)
    return sorted({*range(0, last, stride), last})


def plain_tiled(weights: Path, path: Path, out: Path, tile: int, overlap: float) -> None:
    """A sliding-window loop: windows one at a time, probabilities averaged, > 0.5, PNG."""
    from PIL import Image

    net = plain_model(weights)
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    stride = int(tile * (1 - overlap))
    with torch.inference_mode():
        for y in starts(h, tile, stride):
            for x in starts(w, tile, stride):
                window = to_input(image[y : y + tile, x : x + tile])
                total[y : y + tile, x : x + tile] += torch.sigmoid(net(window))[0, 0].numpy()
                count[y : y + tile, x : x + tile] += 1
    out.mkdir(parents=True, exist_ok=True)
    label = (total / count > 0.5).astype(np.uint8)
    Image.fromarray(label).save(out / f"{path.stem}.png")
