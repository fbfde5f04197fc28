"""Importing segkit is cheap and offline; the public names resolve lazily."""

import subprocess
import sys

import pytest

import segkit

CHECK = """
import os, socket, sys
os.environ.pop("NO_ALBUMENTATIONS_UPDATE", None)
def refuse(*args, **kwargs):
    raise AssertionError("network access during import")
socket.socket.connect = refuse
socket.create_connection = refuse
import segkit
assert "torch" not in sys.modules, "import segkit pulled in torch"
assert os.environ["NO_ALBUMENTATIONS_UPDATE"] == "1"
import segkit.engine, segkit.cli
# the trackers import theirs when a run uses them (timm imports wandb where it is installed)
heavy = {"mlflow", "wandb", "tensorboard", "onnx", "onnxruntime"} & set(sys.modules)
assert not heavy, f"importing segkit.engine pulled in {heavy}"
import segkit.data, segkit.models, segkit.inference  # offline too
import segkit.data.transforms, segkit.data.formats.coco  # albumentations too (now lazy)
print("ok")
"""


def test_import_is_lazy_and_offline():
    proc = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("name", sorted(segkit._LAZY))
def test_every_public_name_resolves(name):
    assert getattr(segkit, name) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        segkit.no_such_thing  # noqa: B018


def test_version_has_one_source():
    from importlib.metadata import version

    assert version("segkit") == segkit.__version__
