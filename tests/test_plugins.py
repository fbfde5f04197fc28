"""Plugins: a module outside the package registers a data set, loss and model that every CLI
command reaches (the worked example of docs/adding_a_dataset.md, run as subprocesses)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segkit.api import modules_of
from segkit.data.io import write_image, write_mask
from segkit.errors import ConfigError
from segkit.plugins import PluginError, import_module, import_plugins

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding_a_dataset.md"


def _doc_block(first_line: str, language: str) -> str:
    """The code block of docs/adding_a_dataset.md that starts with ``first_line``."""
    for block in re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"docs/adding_a_dataset.md has no {language} block {first_line!r}")


def _write_data(root: Path) -> None:
    """Photos whose left half is class 1 and right half class 2 (red / green), 32 px."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        (root / split / "photos").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            label = np.zeros((32, 32), np.uint8)
            label[8:24, 4:16], label[8:24, 16:28] = 1, 2
            image = rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)
            image[label == 1] = (220, 30, 30)
            image[label == 2] = (30, 220, 30)
            write_image(root / split / "photos" / f"p{i}.png", image)
            write_mask(root / split / "labels" / f"p{i}.png", label)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A user's project folder: the plugin module from the docs, data, and the config."""
    tmp = tmp_path_factory.mktemp("project")
    (tmp / "plugin").mkdir()
    (tmp / "plugin" / "tiny_plugin.py").write_text(_doc_block("# tiny_plugin.py", "python"))
    _write_data(tmp / "data" / "tiny")
    (tmp / "tiny.yaml").write_text(_doc_block("# tiny.yaml", "yaml"))
    return tmp


def _segkit(project: Path, *args: str, plugin_path: bool = True) -> subprocess.CompletedProcess:
    paths = [str(ROOT)] + [str(project / "plugin")] * plugin_path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "segkit", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.slow
def test_a_plugin_outside_the_package_works_through_every_command(project):
    ckpt = project / "runs" / "tiny" / "best.pt"
    done = _segkit(project, "train", "tiny.yaml", "train.progress=false")
    assert done.returncode == 0, done.stderr
    scores = project / "scores.json"
    done = _segkit(project, "evaluate", "--checkpoint", str(ckpt), "--json", str(scores))
    assert done.returncode == 0, done.stderr
    result = json.loads(scores.read_text())
    assert {"f1_left", "f1_right", "f1_sides", "miou"} <= set(result)  # classes, groups
    done = _segkit(
        project, "predict", "--checkpoint", str(ckpt), "data/tiny/test/photos", "--out", "preds"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (project / "preds").iterdir()) == ["p0.png", "p1.png"]
    for classes in (["--classes", str(ckpt)], ["--classes", "tiny_rgb", "--import", "tiny_plugin"]):
        done = _segkit(project, "score", "data/tiny/test/labels", "preds", *classes)
        assert done.returncode == 0, done.stderr
        assert "f1_sides=" in done.stdout
    done = _segkit(project, "export", "--checkpoint", str(ckpt), "--onnx", "tiny.onnx", "--check")
    assert done.returncode == 0, done.stderr
    assert (project / "tiny.onnx").stat().st_size > 0

    # the checkpoint names the module it needs, and says so when it cannot be found
    (project / "elsewhere").mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "segkit", "predict", "--checkpoint", str(ckpt)]
        + [str(project / "data/tiny/test/photos"), "--out", "p2"],
        cwd=project / "elsewhere",
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "'tiny_plugin'" in done.stderr and "PYTHONPATH" in done.stderr, done.stderr


@pytest.mark.slow
def test_import_option_and_entry_points_register_a_plugin(project):
    config = project / "no_imports.yaml"
    config.write_text(
        (project / "tiny.yaml").read_text().replace("imports: [tiny_plugin]\n", "")
        + "  # no imports\n"
    )
    overrides = ["train.epochs=1", "train.out_dir=runs/cli", "train.progress=false"]
    done = _segkit(project, "train", str(config), *overrides)
    assert done.returncode == 2 and "Unknown dataset 'tiny_rgb'" in done.stderr
    assert "--import" in done.stderr  # the message says how to bring a plugin in
    done = _segkit(project, "--import", "tiny_plugin", "train", str(config), *overrides)
    assert done.returncode == 0, done.stderr
    done = _segkit(
        project, "train", str(config), *overrides, "--overwrite", "--import", "tiny_plugin"
    )
    assert done.returncode == 0, done.stderr  # --import after the command too

    # an installed package: a dist-info folder on the path with a segkit.plugins entry point
    info = project / "plugin" / "tiny_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[segkit.plugins]\ntiny = tiny_plugin\n")
    try:
        code = "from segkit.plugins import import_plugins; import_plugins(); "
        code += "from segkit.data import list_datasets; print(list_datasets())"
        env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(project / "plugin")])
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert "tiny_rgb" in done.stdout, done.stderr
    finally:
        for f in info.iterdir():
            f.unlink()
        info.rmdir()


def test_missing_plugins_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginError, match=r"'no_such_plugin_mod' named by imports: no such"):
        import_plugins(["no_such_plugin_mod"])
    (tmp_path / "broken_dep_plugin.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="imports 'no_such_dependency_xyz'"):
        import_module("broken_dep_plugin")
    (tmp_path / "bad_plugin.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="bad_plugin.*RuntimeError: boom"):
        import_module("bad_plugin")
    with pytest.raises(PluginError, match="not a module name"):
        import_module("my_plugin.py/x")
    assert issubclass(PluginError, ConfigError)


def test_a_module_in_the_current_folder_is_found(tmp_path, monkeypatch):
    (tmp_path / "cwd_plugin_mod.py").write_text("VALUE = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    import_module("cwd_plugin_mod")
    assert sys.modules["cwd_plugin_mod"].VALUE == 3
    del sys.modules["cwd_plugin_mod"]


def test_modules_of_leaves_out_segkit_itself():
    assert modules_of(["a.b"], "helen", "unet", "ce + dice") == ["a.b"]
