"""``segkit prepare coco|labelme|yolo_seg``: the export rasterised once into the folder layout
gives the same masks and class metadata as reading the export directly (synthetic exports in
the tools' layouts, and the real samples), resumes, and leaves the export as it was."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from segkit.cli import main
from segkit.data import build_dataset
from segkit.data.formats.synth_annotations import synth_coco, synth_labelme, synth_yolo_seg
from segkit.data.registry import run_dataset_step
from segkit.errors import ConfigError, DataError

pytest.importorskip("pycocotools.mask")

DATA = Path(
    os.environ.get("SEGKIT_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
).resolve()

#: name, synthetic writer, reader split (None: the export without one), reader options
CASES = [
    ("coco", synth_coco, "default", {}),
    ("coco", synth_coco, "default", {"crowd": "ignore"}),
    ("labelme", synth_labelme, None, {}),
    ("yolo_seg", synth_yolo_seg, "valid", {}),
]
REAL = [
    ("coco", "coco_cvat_interior", "default"),
    ("labelme", "labelme_instance", None),
    ("yolo_seg", "yolo_seg_cropweed", "valid"),
]


def _tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its hash (to check a source is left as it was)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _same_both_ways(name, src, dst, split, options):
    """Read the export directly and the prepared folder: pixel-equal masks, same images,
    same classes, ignore index and label record."""
    direct = build_dataset(name, src, split, **options)
    prepared = build_dataset("folder", dst, split)
    assert sorted(s.id for s in prepared.samples) == sorted(s.id for s in direct.samples)
    by_id = {s.id: i for i, s in enumerate(prepared.samples)}
    for i, sample in enumerate(direct.samples):
        image, mask, _ = direct.read(i)
        image2, mask2, _ = prepared.read(by_id[sample.id])
        np.testing.assert_array_equal(mask2, mask)
        np.testing.assert_array_equal(image2, image)
    a, b = direct.metadata(), prepared.metadata()
    assert (b.classes, b.ignore_index, b.labels) == (a.classes, a.ignore_index, a.labels)
    assert b.dataset == "folder"
    return direct


@pytest.mark.parametrize(("name", "synth", "split", "options"), CASES)
def test_prepared_masks_equal_direct(tmp_path, name, synth, split, options):
    src = synth(tmp_path / "export", n=3)
    before = _tree(src)
    message, _ = run_dataset_step("prepare", name, src, tmp_path / "out", split=split,
                                  workers=2, **options)  # fmt: skip
    assert "rasterised 3" in message
    out = tmp_path / "out" / split if split else tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "images", "masks"]
    _same_both_ways(name, src, tmp_path / "out", split, options)
    assert _tree(src) == before  # the export is only read


def test_prepare_resumes_and_refuses_other_options(tmp_path):
    src = synth_coco(tmp_path / "export", n=3)
    dst = tmp_path / "out"
    run_dataset_step("prepare", "coco", src, dst, split="default")
    masks = sorted((dst / "default" / "masks").iterdir())
    masks[0].unlink()  # as if interrupted before this pair's mask
    stamp = masks[1].stat().st_mtime_ns
    message, _ = run_dataset_step("prepare", "coco", src, dst, split="default")
    assert message.startswith("rasterised 1 coco image(s), 2 already prepared")
    assert masks[0].is_file() and masks[1].stat().st_mtime_ns == stamp
    assert not [p for p in (dst / "default").rglob(".*.tmp")]
    with pytest.raises(DataError, match="other classes or options.*--overwrite"):
        run_dataset_step("prepare", "coco", src, dst, split="default", crowd="ignore")
    message, _ = run_dataset_step("prepare", "coco", src, dst, split="default", crowd="ignore",
                                  overwrite=True)  # fmt: skip
    assert message.startswith("rasterised 3")
    with pytest.raises(DataError, match="inside the source"):
        run_dataset_step("prepare", "coco", src, src / "prepared", split="default")
    with pytest.raises(ConfigError, match="--crowd applies to coco only"):
        run_dataset_step("prepare", "labelme", src, dst, crowd="ignore")


def test_prepare_cli_then_train_on_folder(tmp_path, capsys):
    src = synth_labelme(tmp_path / "export", n=2)
    assert main(["prepare", "labelme", str(src), str(tmp_path / "out"), "--workers", "1"]) in (
        0,
        None,
    )
    assert "rasterised 2 labelme image(s)" in capsys.readouterr().out
    ds = build_dataset("folder", tmp_path / "out", None)
    assert ds.class_names == build_dataset("labelme", src, None).class_names
    assert ds.ignore_index == 255


def test_folder_ignores_a_dataset_json_of_something_else(tmp_path):
    src = synth_coco(tmp_path / "export", n=2)
    run_dataset_step("prepare", "coco", src, tmp_path / "out", split="default")
    (tmp_path / "out" / "default" / "dataset.json").write_text('{"name": "mine"}')
    with pytest.raises(DataError, match="not binary"):  # binary by default, as before
        build_dataset("folder", tmp_path / "out", "default")[0]
    ds = build_dataset("folder", tmp_path / "out", "default", classes=3)
    assert ds.class_names == ["background", "class_1", "class_2"]


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "folder", "split"), REAL)
def test_real_prepared_masks_equal_direct(tmp_path, name, folder, split):
    src = DATA / folder
    if not src.is_dir():
        pytest.skip(f"real sample not found at {src}")
    before = _tree(src)
    run_dataset_step("prepare", name, src, tmp_path / "out", split=split)
    _same_both_ways(name, src, tmp_path / "out", split, {})
    assert _tree(src) == before


def test_training_on_the_export_or_the_prepared_copy_is_the_same(tmp_path):
    """Same images, masks, order and metadata: one epoch from the same seed gives the same
    weights and the same recorded classes, and evaluate scores both the same."""
    import torch

    src = synth_coco(tmp_path / "export", n=4)
    run_dataset_step("prepare", "coco", src, tmp_path / "prep", split="default")
    results = {}
    for name, root in (("coco", src), ("folder", tmp_path / "prep")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(
            f"data:\n  dataset: {name}\n  root: {root}\n  train_split: default\n"
            "  val_fraction: 0.25\n  image_size: 32\n  batch_size: 2\n  num_workers: 0\n"
            "model:\n  arch: unet\n  encoder: null\n  base_channels: 4\nloss:\n  name: ce\n"
            f"train:\n  epochs: 1\n  out_dir: {tmp_path / name}\n  progress: false\n"
        )
        assert main(["train", str(cfg)]) == 0
        ckpt = torch.load(tmp_path / name / "best.pt", weights_only=True)
        assert main(["evaluate", "--checkpoint", str(tmp_path / name / "best.pt"),
                     "--split", "val"]) == 0  # fmt: skip
        results[name] = ckpt
    a, b = results["coco"], results["folder"]
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0)
    meta_a, meta_b = a["model_spec"]["meta"], b["model_spec"]["meta"]
    assert {k: meta_a[k] for k in ("classes", "ignore_index", "labels")} == {
        k: meta_b[k] for k in ("classes", "ignore_index", "labels")
    }
    assert meta_b["labels"]["category_ids"] == {"1": 1, "2": 2, "3": 3}
    assert meta_b["classes"] == ["background", "box", "disc", "unused"]
