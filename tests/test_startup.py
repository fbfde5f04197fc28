"""``segkit predict`` imports what prediction needs only (docs/benchmarks.md section 11)."""

import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from segkit.data.meta import DatasetMeta
from segkit.engine.checkpoint import save_checkpoint
from segkit.models import build_model

#: packages prediction never uses: the data set readers' (pandas, pycocotools, tifffile),
#: training's (albumentations, scikit-learn, scipy), plots' (matplotlib), optional extras'
NOT_ON_THE_PREDICT_PATH = (
    "pandas",
    "albumentations",
    "sklearn",
    "scipy",
    "matplotlib",
    "pycocotools",
    "tifffile",
    "onnx",
    "onnxruntime",
    "tensorboard",
    "mlflow",
    "lightning",
    "segkit.data.transforms",
    "segkit.data.formats",
    "segkit.data.carvana",
    "segkit.data.helen",
)

CHECK = """
import sys
from segkit.cli import main
code = main(sys.argv[1:])
heavy = [m for m in {names!r} if m in sys.modules]
print(code, heavy)
"""


def test_predict_imports_no_reader_no_training_package(tmp_path):
    torch.manual_seed(0)
    model = build_model(arch="unet", base_channels=4, classes=3, class_names=["bg", "a", "b"])
    spec = model.spec.to_dict()
    spec["meta"] = DatasetMeta(classes=("bg", "a", "b")).to_dict()  # what training records
    state = {"model": model.state_dict(), "model_spec": spec, "config": {}}
    ckpt = save_checkpoint(tmp_path / "best.pt", state)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(photo)
    argv = ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(tmp_path / "out")]
    argv += ["--runtime", "torch"]  # the CPU default runs onnxruntime where installed (section 7)
    code = CHECK.format(names=NOT_ON_THE_PREDICT_PATH)
    done = subprocess.run(
        [sys.executable, "-c", code, *argv, "--device", "cpu", "--overlay"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout
    assert (tmp_path / "out" / "photo.png").is_file()
