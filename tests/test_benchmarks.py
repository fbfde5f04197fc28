"""The benchmark scripts run (``--quick``), print one JSON line each and leave no files behind."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import _common  # noqa: E402  (benchmarks/ is not a package)

SCRIPTS = {
    "bench_trainer.py": "trainer",
    "bench_prepare.py": "prepare",
    "bench_predict.py": "predict",
    "bench_memory.py": "memory",
    "bench_speed.py": "speed",
    "bench_tiling.py": "tiling",
    "bench_annotations.py": "annotations",
    "bench_runtimes.py": "runtimes",
    "bench_peers.py": "peers",
}


def run_quick(script: str, tmp_path: Path) -> dict:
    """Run ``script --quick`` with its temporary files under ``tmp_path``; its one JSON line."""
    env = dict(os.environ, TMPDIR=str(tmp_path), MPLCONFIGDIR=str(tmp_path / ".mpl"))
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("segkit-bench-")]
    assert leftovers == [], f"{script} left its work folder behind"
    figures = json.loads(lines[0])
    assert figures["benchmark"] == SCRIPTS[script]
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["torch"]
    return figures


def test_run_all_lists_every_script():
    from run_all import SCRIPTS as listed

    on_disk = sorted(p.name for p in BENCH.glob("bench_*.py"))
    assert sorted(listed) == on_disk == sorted(SCRIPTS)


def test_alternate_runs_the_sides_in_turn():
    calls = []
    sides = {"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}
    rates = _common.alternate(sides, 3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert rates == {"a": [1.0] * 3, "b": [2.0] * 3}


def test_median_and_timing_helpers():
    assert _common.median([3.0, 1.0, 2.0]) == 2.0
    assert _common.median([1.0, 2.0]) == 1.5
    assert 0.01 <= _common.timed(lambda: time.sleep(0.02)) < 1.0
    assert _common.peak_rss_mib() > 10


def test_option_prefers_given_then_quick_then_default(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["x", "--quick", "--rounds", "5"])
    args = _common.parse_args("test", rounds=(int, 3, ""), cars=(int, 4, ""))
    assert _common.option(args, "rounds", 1) == 5
    assert _common.option(args, "cars", 1) == 1
    monkeypatch.setattr(sys, "argv", ["x"])
    args = _common.parse_args("test", rounds=(int, 3, ""), cars=(int, 4, ""))
    assert _common.option(args, "cars", 1) == 4


@pytest.mark.slow
def test_trainer_quick(tmp_path):
    figures = run_quick("bench_trainer.py", tmp_path)
    assert figures["bare_images_per_s"] > 0
    for w in (0, 2):
        entry = figures[f"num_workers_{w}"]
        assert entry["fit_images_per_s"] > 0 and entry["train_phase_images_per_s"] > 0
    assert figures["num_workers_used"] in (0, 2)


@pytest.mark.slow
def test_prepare_quick(tmp_path):
    figures = run_quick("bench_prepare.py", tmp_path)
    assert figures["speedup"] > 0 and figures["decode_full_images_per_s"] > 0
    assert figures["masks_identical"] is True  # masks do not depend on the image decoding


@pytest.mark.slow
def test_predict_quick(tmp_path):
    figures = run_quick("bench_predict.py", tmp_path)
    assert figures["model_only_images_per_s"] > 0
    assert set(figures["ratio"]) == {"save_masks_false", "save_masks_true"}
    assert figures["mean_rle_runs_per_mask"] > 0


@pytest.mark.slow
def test_memory_quick(tmp_path):
    figures = run_quick("bench_memory.py", tmp_path)
    for kind in ("train", "predict"):
        entry = figures[kind]
        assert entry[f"peak_rss_mib_{figures['n']}"] > 100  # torch alone takes more
        assert entry["growth_mib"] == pytest.approx(
            entry[f"peak_rss_mib_{4 * figures['n']}"] - entry[f"peak_rss_mib_{figures['n']}"],
            abs=0.2,
        )


@pytest.mark.slow
def test_speed_quick(tmp_path):
    import torch

    figures = run_quick("bench_speed.py", tmp_path)
    assert figures["device"] == (
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    )
    for variant in ("fp32", "cl"):
        assert figures[variant]["images_per_s"] > 0
        assert figures[variant]["speedup_vs_fp32"] > 0
    assert figures["fp32"]["speedup_vs_fp32"] == 1.0
    if not torch.cuda.is_available():
        from segkit.engine.runtime import cpu_has_fast_bf16

        amp = "bfloat16" if cpu_has_fast_bf16() else "off"
        assert figures["auto_resolves_to"] == {"amp": amp, "channels_last": True}


def test_tiling_quick(tmp_path):
    figures = run_quick("bench_tiling.py", tmp_path)
    assert figures["tiled_images_per_s"] > 0 and figures["ratio_tiled_to_model_only"] > 0
    small, large = figures["memory"]
    assert large["largest_float_tensor_mib"] <= small["largest_float_tensor_mib"] * 1.01


def test_runtimes_quick(tmp_path):
    pytest.importorskip("onnxruntime")
    figures = run_quick("bench_runtimes.py", tmp_path)
    speed = figures["speed"]
    assert set(speed["speedup_vs_bare_fp32"]) == {"torch/fp32", "torch/bf16", "onnxruntime/fp32"}
    assert all(s > 0 for s in speed["seconds"].values()) and figures["labels"] == []


def test_peak_memory_is_the_childs_own_not_its_parents():
    """ru_maxrss passes a parent's peak on through exec; peak_rss_mib must not report it."""
    ballast = bytearray(400 * 2**20)  # this process's peak: at least 400 MiB
    ballast[:: 2**12] = b"\x01" * len(ballast[:: 2**12])
    code = f"import sys; sys.path.insert(0, {str(BENCH)!r}); import _common; print(_common.peak_rss_mib())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = float(done.stdout.strip().splitlines()[-1])
    assert _common.peak_rss_mib() >= 400
    if sys.platform.startswith("linux"):
        assert child < 200, f"the child reported {child} MiB: its parent's peak"
        assert _common.reset_peak_rss()
    del ballast


@pytest.mark.slow
def test_annotations_quick(tmp_path):
    pytest.importorskip("pycocotools")
    figures = run_quick("bench_annotations.py", tmp_path)
    assert figures["annotations"] > figures["n"] and figures["index_arrays_mib"] > 0
    assert all(v > 0 for v in figures["ms_per_sample"].values())
    assert figures["ratio_prepared_to_png"] == 1.0 and figures["within_budget_1_5x"] is True
    for side in ("direct", "prepared"):
        entry = figures["train"][side]
        assert entry["peak_rss_mib"] > 100 and len(entry["worker_private_mib"]) == 2


@pytest.mark.slow
def test_peers_quick(tmp_path):
    pytest.importorskip("lightning")
    figures = run_quick("bench_peers.py", tmp_path)
    train = figures["train"]
    for side in ("plain", "lightning", "segkit"):
        assert train[side]["images_per_s"] > 0 and 0 <= train[side]["loader_wait"] < 1
    for kind in ("jpeg", "tiled"):
        entry = figures["predict"][kind]
        assert entry["plain_images_per_s"] > 0 and entry["segkit_images_per_s"] > 0
        assert entry["segkit_labels_agree"] > 0.9  # the same weights on both sides
