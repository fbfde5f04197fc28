"""Dataset metadata: declared by each data set, recorded in the checkpoint, read back everywhere."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from segkit.api import evaluate, train
from segkit.config import load_config
from segkit.data import DatasetMeta, dataset_metas, list_datasets, synth_helen
from segkit.data.helen import HELEN_CLASSES, HELEN_FLIP_PAIRS, HELEN_GROUPS
from segkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from segkit.engine import load_checkpoint, model_from_checkpoint
from segkit.errors import ConfigError
from segkit.inference import predict
from segkit.metrics import score_folders

ROOT = Path(__file__).resolve().parents[1]
DATASET_WORDS = re.compile(r"helen|carvana|HELEN")


def _documentation(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings or argparse ``help=`` texts."""
    docs = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docs.add(id(value))
        if isinstance(node, ast.keyword) and node.arg == "help":
            docs |= {id(n) for n in ast.walk(node.value)}
    return docs


@pytest.mark.parametrize(
    "name",
    ["api/__init__.py", "api/data.py", "api/training.py", "api/evaluation.py", "api/labels.py"]
    + ["cli.py", "metrics.py"],
)
def test_generic_modules_name_no_data_set(name):
    """The issue's acceptance grep: only documentation may mention a data set."""
    tree = ast.parse((ROOT / "segkit" / name).read_text())
    docs = _documentation(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.alias):
            text = node.name
        elif isinstance(node, ast.ImportFrom):
            text = node.module or ""
        else:
            continue
        if DATASET_WORDS.search(text) and id(node) not in docs:
            found.append(f"line {getattr(node, 'lineno', '?')}: {text!r}")
    assert not found, f"segkit/{name} names a data set outside documentation: {found}"


@pytest.mark.parametrize("name", list_datasets())
def test_every_registered_data_set_declares_its_meta(name):
    meta = dataset_metas()[name]
    assert isinstance(meta, DatasetMeta) and meta.dataset == name
    assert DatasetMeta.from_dict(meta.to_dict()).to_dict() == meta.to_dict()


def test_declared_meta_of_the_tutorial_data_sets():
    helen, carvana = dataset_metas()["helen"], dataset_metas()["carvana"]
    assert list(helen.classes) == HELEN_CLASSES
    assert [list(p) for p in helen.flip_pairs] == [list(p) for p in HELEN_FLIP_PAIRS]
    assert {k: list(v) for k, v in helen.groups.items()} == HELEN_GROUPS
    assert carvana.split_group("0cdf5b5d0ce1_03") == "0cdf5b5d0ce1"
    assert carvana.prepare is not None and helen.synth is not None


def test_meta_refuses_ids_outside_its_classes():
    with pytest.raises(ConfigError, match="outside 0..2"):
        DatasetMeta(classes=("bg", "a", "b"), groups={"ab": (1, 3)})


@pytest.fixture(scope="module")
def imagenet_run(tmp_path_factory):
    """A tiny from-scratch U-Net trained with augment.normalize=imagenet on 64 px faces."""
    tmp = tmp_path_factory.mktemp("imagenet")
    synth_helen(tmp / "faces", n=6, seed=0, size=64)
    synth_helen(tmp / "faces", n=2, seed=1, size=64, split="test")
    cfg = load_config(
        None,
        [
            "data.dataset=helen",
            f"data.root={tmp / 'faces'}",
            "data.image_size=64",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.val_fraction=0.34",
            "model.arch=unet",
            "model.encoder=null",
            "model.base_channels=4",
            "augment.normalize=imagenet",
            "loss.name=ce",
            "train.epochs=1",
            "train.progress=false",
            "train.preview=0",
            f"train.out_dir={tmp / 'run'}",
        ],
    )
    train(cfg)
    return tmp


def test_checkpoint_records_the_meta_and_the_normalisation_training_used(imagenet_run):
    spec = load_checkpoint(imagenet_run / "run" / "last.pt")["model_spec"]
    assert spec["encoder"] is None and spec["arch"] == "unet"
    assert spec["mean"] == pytest.approx(IMAGENET_MEAN) and spec["std"] == pytest.approx(
        IMAGENET_STD
    )
    assert spec["meta"]["dataset"] == "helen"
    assert spec["meta"]["groups"] == HELEN_GROUPS
    assert spec["meta"]["flip_pairs"] == [list(p) for p in HELEN_FLIP_PAIRS]


def _model_inputs(monkeypatch) -> list[torch.Tensor]:
    """Every image tensor a segkit model is called on from now (the network's real input)."""
    from segkit.models import SegmentationModel

    seen: list[torch.Tensor] = []
    forward = SegmentationModel.forward

    def recording(self, x):
        seen.extend(x.detach().cpu())
        return forward(self, x)

    monkeypatch.setattr(SegmentationModel, "forward", recording)
    return seen


def test_predict_and_evaluate_give_the_same_labels(imagenet_run, tmp_path, monkeypatch):
    """The normalisation skew: predict fed x/255 to a model trained on ImageNet-normalised input."""
    ckpt = imagenet_run / "run" / "last.pt"
    test = imagenet_run / "faces" / "test"
    inputs = _model_inputs(monkeypatch)
    scores = evaluate(ckpt, split="test", num_workers=0)
    evaluated = sorted(inputs, key=lambda x: float(x.mean()))
    inputs.clear()
    predict(ckpt, test / "images", tmp_path / "pred")
    predicted = sorted(inputs, key=lambda x: float(x.mean()))
    # the same network input, image by image (64 px images at image_size 64: no resizing) ...
    assert len(evaluated) == len(predicted) == 2
    for a, b in zip(evaluated, predicted):
        assert torch.allclose(a, b, atol=1e-4), (float(a.mean()), float(b.mean()))
    # ... and so the same labels: scoring predict's PNGs gives evaluate's numbers
    again = score_folders(test / "labels", tmp_path / "pred", HELEN_CLASSES, HELEN_GROUPS)
    for key in ("accuracy", "miou", "f1_overall", "f1_eyes"):
        assert again[key] == pytest.approx(scores[key], abs=1e-9, nan_ok=True), key


@pytest.mark.default_runtime
def test_predict_and_evaluate_share_the_default_runtime(imagenet_run, tmp_path):
    """As users get them (runtime auto: onnxruntime on the CPU where installed), predict's
    label PNGs still score as evaluate scores, and both ran the one cached export."""
    pytest.importorskip("onnxruntime")
    ckpt = imagenet_run / "run" / "last.pt"
    test = imagenet_run / "faces" / "test"
    scores = evaluate(ckpt, split="test", num_workers=0)
    exports = sorted((imagenet_run / "run").glob("last.*.onnx"))
    assert len(exports) == 1  # evaluate ran onnxruntime, exported once beside the checkpoint
    stamp = exports[0].stat().st_mtime_ns
    predict(ckpt, test / "images", tmp_path / "pred")
    assert exports[0].stat().st_mtime_ns == stamp  # predict reused it
    again = score_folders(test / "labels", tmp_path / "pred", HELEN_CLASSES, HELEN_GROUPS)
    for key in ("accuracy", "miou", "f1_overall", "f1_eyes"):
        assert again[key] == pytest.approx(scores[key], abs=1e-9, nan_ok=True), key


def test_old_checkpoints_load_with_the_normalisation_they_were_trained_with(imagenet_run, tmp_path):
    state = load_checkpoint(imagenet_run / "run" / "last.pt")
    spec = dict(state["model_spec"])
    del spec["meta"], spec["imports"]  # what an older segkit wrote: the network's defaults
    spec["mean"], spec["std"] = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    state["model_spec"] = spec
    torch.save(state, tmp_path / "old.pt")
    model = model_from_checkpoint(tmp_path / "old.pt")
    assert model.spec.mean == pytest.approx(IMAGENET_MEAN)
    meta = DatasetMeta.from_dict(model.spec.meta)
    assert meta.groups_for(HELEN_CLASSES) == HELEN_GROUPS  # found from the class names
    assert sorted(meta.pairs_for(HELEN_CLASSES)) == sorted(HELEN_FLIP_PAIRS)
    new = evaluate(imagenet_run / "run" / "last.pt", split="test", num_workers=0)
    old = evaluate(tmp_path / "old.pt", split="test", num_workers=0)
    assert old["miou"] == pytest.approx(new["miou"])


def test_normalize_dataset_needs_declared_statistics(tmp_path):
    from segkit.data.meta import training_normalization

    meta = DatasetMeta(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert training_normalization("dataset", (0,) * 3, (1,) * 3, meta)[1] == (0.25,) * 3
    with pytest.raises(ConfigError, match="declares no mean/std"):
        training_normalization("dataset", (0,) * 3, (1,) * 3, DatasetMeta(dataset="x"))
    with pytest.raises(ConfigError, match="augment.normalize"):
        training_normalization("imagnet", (0,) * 3, (1,) * 3, meta)


FACTS = ("class_names", "flip_pairs", "ignore_index", "task")


def test_no_adapter_class_keeps_facts_beside_its_meta():
    """DatasetMeta is the one home: no registered class defines the facts as attributes."""
    from segkit.data.registry import get_dataset_class

    for name in list_datasets():
        for klass in get_dataset_class(name).__mro__:
            for fact in FACTS:
                value = klass.__dict__.get(fact)
                assert value is None or isinstance(value, property), (name, klass, fact)


def test_older_style_class_attributes_are_folded_into_meta():
    from segkit.data import SegmentationDataset

    class Old(SegmentationDataset):
        class_names = ["bg", "left_arm", "right_arm"]
        ignore_index = 255

    assert "class_names" not in Old.__dict__ and "ignore_index" not in Old.__dict__
    assert Old.meta.classes == ("bg", "left_arm", "right_arm")
    assert Old.meta.ignore_index == 255
    ds = Old([])
    assert ds.class_names == ["bg", "left_arm", "right_arm"] and ds.task == "multiclass"
    assert ds.flip_pairs == [(1, 2)] and ds.ignore_index == 255
    assert ds.metadata().flip_pairs == ((1, 2),)
    ds.ignore_index = 254  # the loss's choice replaces the declared one, in the meta
    assert ds.metadata().ignore_index == 254 and Old.meta.ignore_index == 255

    class Pairs(SegmentationDataset):
        meta = DatasetMeta(classes=("bg", "a", "b"))
        flip_pairs = [(1, 2)]
        task = "multilabel"

    assert Pairs.meta.flip_pairs == ((1, 2),) and Pairs.meta.multilabel
    with pytest.raises(TypeError, match="task = 'binary' contradicts its 3 classes"):

        class Wrong(SegmentationDataset):
            meta = DatasetMeta(classes=("bg", "a", "b"))
            task = "binary"
