"""Every `segkit` command end to end on tiny synthetic data, plus the bad-input paths."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from segkit.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def carvana_raw(tmp_path_factory) -> Path:
    from segkit.data import synth_carvana

    root = tmp_path_factory.mktemp("carvana") / "raw"
    synth_carvana(root, cars=2, views=4, seed=0, size=(192, 128))
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, carvana_raw) -> Path:
    """A run folder trained for one epoch through `segkit train`."""
    out = tmp_path_factory.mktemp("run")
    cfg = out / "config.yaml"
    cfg.write_text(
        "data:\n  dataset: carvana\n  root: " + str(carvana_raw) + "\n  prepare_size: 64\n"
        "  prepared_root: prepared\n  image_size: 64\n  batch_size: 2\n  num_workers: 0\n"
        "  val_fraction: 0.5\nmodel:\n  arch: smp.Unet\n  encoder: resnet18\n"
        "loss:\n  name: soft_dice\ntrain:\n  epochs: 1\n  out_dir: run\n  progress: false\n"
        "  monitor: val_soft_dice\n"
    )
    assert run("train", cfg, "train.accumulate=2") == 0
    return out


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "segkit" in capsys.readouterr().out


def test_python_dash_m_help():
    proc = subprocess.run(
        [sys.executable, "-m", "segkit", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for cmd in (
        "demo",
        "train",
        "evaluate",
        "score",
        "predict",
        "prepare",
        "synth",
        "export",
        "models",
        "encoders",
    ):
        assert cmd in proc.stdout


def test_every_command_and_option_has_help():
    import argparse

    from segkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helped = {a.dest for a in sub._choices_actions if a.help}
    assert helped == set(sub.choices)
    for name, cmd in sub.choices.items():
        for action in cmd._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"segkit {name} {action.dest} has no help text"


def test_models_and_encoders_with_pattern(capsys):
    assert run("models", "smp.Unet*") == 0
    out = capsys.readouterr().out.split()
    assert "smp.Unet" in out and "smp.UnetPlusPlus" in out and "smp.FPN" not in out
    assert run("encoders", "resnet1*") == 0
    out = capsys.readouterr().out.split()
    assert "resnet18" in out and "resnet34" not in out


def test_a_pattern_that_matches_nothing_says_so_and_what_would(capsys):
    assert run("models", "Unet") == 1
    err = capsys.readouterr().err
    assert "No model matches 'Unet'" in err and "'*Unet*' matches" in err and "smp.Unet" in err
    assert run("encoders", "resnet") == 1
    err = capsys.readouterr().err
    assert "No encoder matches 'resnet'" in err and "resnet18" in err
    assert run("models", "smp.Unte*") == 1
    assert "No model matches" in capsys.readouterr().err


def test_help_shows_the_defaults(capsys):
    from segkit.cli import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices
    assert "(default: 128)" in " ".join(sub["prepare"].format_help().split())
    assert "(default: segkit-demo)" in " ".join(sub["demo"].format_help().split())


def test_prepare_twice_says_already_prepared_and_notes_upscaling(tmp_path, capsys):
    from segkit.data import synth_carvana

    raw = synth_carvana(tmp_path / "raw", cars=1, views=2, size=(47, 32))
    assert run("prepare", "carvana", raw, tmp_path / "p", "--size", "64") == 0
    captured = capsys.readouterr()
    assert "prepared 2 Carvana pairs at 64x64" in captured.out
    assert "2 source image(s) are smaller than 64x64 (e.g. synth0000_01: 47x32)" in captured.err
    assert run("prepare", "carvana", raw, tmp_path / "p", "--size", "64") == 0
    assert "2 already prepared (--overwrite redoes them) at 64x64" in capsys.readouterr().out


def test_prepare_reads_soft_masks_with_a_threshold_and_a_failure_leaves_no_folders(
    tmp_path, capsys
):
    from segkit.data import synth_carvana

    raw = synth_carvana(tmp_path / "raw", cars=1, views=2, size=(64, 48), mask_format="png")
    for path in (raw / "train_masks").glob("*.png"):  # anti-aliased edges: 0..255
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), cv2.GaussianBlur(mask, (5, 5), 0))
    assert run("prepare", "carvana", raw, tmp_path / "p", "--size", "32") == 2
    assert "--threshold 128" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    assert run("prepare", "carvana", raw, tmp_path / "p", "--size", "32", "--threshold", "128") == 0
    mask = cv2.imread(str(next((tmp_path / "p" / "masks").iterdir())), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(mask)) == {0, 1}


def test_prepare_helen_refuses_carvana_options(tmp_path, capsys):
    assert run("synth", "helen", tmp_path / "official", "--n", "1", "--layout", "official") == 0
    assert run("prepare", "helen", tmp_path / "official", tmp_path / "s", "--size", "128") == 2
    assert "--size applies to carvana only" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_synth_and_prepare_carvana(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert run("synth", "carvana", raw, "--n", "1") == 0
    jpgs = sorted((raw / "train").glob("*.jpg"))
    assert len(jpgs) == 16
    assert cv2.imread(str(jpgs[0])).shape == (1280, 1918, 3)
    assert run("prepare", "carvana", raw, tmp_path / "prep", "--size", "32", "--workers", "2") == 0
    masks = sorted((tmp_path / "prep" / "masks").glob("*.png"))
    assert len(masks) == 16
    m = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 1}


def test_synth_and_prepare_helen(tmp_path):
    assert run("synth", "helen", tmp_path / "official", "--n", "3", "--layout", "official") == 0
    assert run("prepare", "helen", tmp_path / "official", tmp_path / "split") == 0
    assert len(list((tmp_path / "split" / "train" / "images").iterdir())) == 3
    assert len(list((tmp_path / "split" / "train" / "labels").iterdir())) == 3
    # a test split too, so that `segkit evaluate` (default split: test) works on synthetic data
    assert len(list((tmp_path / "split" / "test" / "labels").iterdir())) == 1


def test_synth_never_writes_over_a_data_set_unless_asked(tmp_path, capsys):
    (tmp_path / "test" / "labels").mkdir(parents=True)
    (tmp_path / "test" / "labels" / "label_1.png").write_bytes(b"a user's label")
    assert run("synth", "helen", tmp_path, "--n", "2") == 2
    assert "already holds files (label_1.png)" in capsys.readouterr().err
    assert not (tmp_path / "train").exists()  # all splits are checked before any is written
    assert run("synth", "helen", tmp_path, "--n", "2", "--overwrite") == 0
    assert len(list((tmp_path / "train" / "images").iterdir())) == 2


def test_train_writes_run_folder(trained):
    run_dir = trained / "run"
    for name in ("best.pt", "last.pt", "history.csv", "config.yaml"):
        assert (run_dir / name).is_file(), name
    assert (trained / "prepared" / "index.csv").is_file()


def test_train_unknown_override_is_one_clear_line(tmp_path, capsys):
    code = run("train", ROOT / "examples/carvana_single_class/config.yaml", "train.epocs=1")
    err = capsys.readouterr().err
    assert code == 2
    assert "train.epocs" in err and "Did you mean 'train.epochs'" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--debug" in err


def test_train_missing_data_root_says_how_to_get_data(tmp_path, capsys):
    code = run(
        "train",
        ROOT / "examples/carvana_single_class/config.yaml",
        f"data.root={tmp_path / 'nothing'}",
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "nothing" in err and "segkit synth" in err
    assert "looked for" in err and "Kaggle" in err  # where it looked, where the real data is
    assert len(err.strip().splitlines()) == 1


def test_missing_config_file(tmp_path, capsys):
    assert run("train", tmp_path / "missing.yaml") == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_resume_refuses_settings_that_change_the_checkpoint_and_records_only_what_ran(
    trained, tmp_path, capsys
):
    """Issue 18, bug 2: a resume that trains nothing leaves config.yaml as the run wrote it."""
    import shutil

    out = shutil.copytree(trained, tmp_path / "copy")
    cfg, written = out / "config.yaml", out / "run" / "config.yaml"
    before = written.read_text()
    assert run("train", cfg, "data.image_size=80", "--resume") == 2
    err = capsys.readouterr().err
    assert "data.image_size=80 (the run has 64)" in err and len(err.splitlines()) == 1
    assert run("train", cfg, "model.encoder=resnet34", "--resume") == 2
    assert "model.encoder='resnet34'" in capsys.readouterr().err
    with pytest.warns(UserWarning, match=r"optim.lr=0.5 \(the run has 0.001\)"):
        assert run("train", cfg, "optim.lr=0.5", "--resume") == 0  # already done: trains nothing
    assert "already completed 1 epochs" in capsys.readouterr().out
    assert written.read_text() == before


def test_resume_never_takes_an_override_as_its_path(trained, tmp_path, capsys):
    import shutil

    out = shutil.copytree(trained, tmp_path / "copy")
    assert run("train", out / "config.yaml", "--resume", "train.epochs=1", "train.seed=0") == 0
    out = capsys.readouterr().out
    assert "already completed 1 epochs" in out
    assert "best.pt, last.pt, history.csv, config.yaml, curves.png, predictions.png" in out


def test_evaluate_val_split_json(trained, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert (
        run(
            "evaluate", "--checkpoint", trained / "run" / "best.pt", "--split", "val", "--json", out
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert 0.0 <= result["soft_dice"] <= 1.0
    assert "f1_car" in result and "miou" in result
    assert "f1_car=" in capsys.readouterr().out
    best = trained / "run" / "best.pt"
    before = best.read_bytes()
    assert run("evaluate", "--checkpoint", best, "--json", best) == 2
    assert "ending in .json" in capsys.readouterr().err and best.read_bytes() == before


def test_evaluate_with_flip_tta(trained, tmp_path, capsys):
    ckpt = trained / "run" / "best.pt"
    plain, flipped = tmp_path / "plain.json", tmp_path / "tta.json"
    assert run("evaluate", "--checkpoint", ckpt, "--split", "val", "--json", plain) == 0
    assert (
        run("evaluate", "--checkpoint", ckpt, "--split", "val", "--json", flipped, "--tta", "flip")
        == 0
    )
    a, b = json.loads(plain.read_text()), json.loads(flipped.read_text())
    assert set(a) == set(b)
    assert a["soft_dice"] != b["soft_dice"]  # the mirrored pass changed the probabilities
    assert "f1_car=" in capsys.readouterr().out


def test_evaluate_on_onnxruntime_scores_as_torch_fp32(trained, tmp_path, capsys):
    import shutil

    pytest.importorskip("onnxruntime")
    ckpt = Path(shutil.copy(trained / "run" / "best.pt", tmp_path / "best.pt"))  # cache beside it
    outs = {}
    for runtime, precision in (("torch", "fp32"), ("onnxruntime", "auto")):
        outs[runtime] = tmp_path / f"{runtime}.json"
        argv = ("evaluate", "--checkpoint", ckpt, "--split", "val", "--tta", "flip")
        rest = ("--json", outs[runtime], "--runtime", runtime, "--precision", precision)
        assert run(*argv, *rest, "--device", "cpu") == 0
    a, b = (json.loads(outs[k].read_text()) for k in ("torch", "onnxruntime"))
    assert set(a) == set(b) and abs(a["soft_dice"] - b["soft_dice"]) < 1e-4
    assert abs(a["f1_car"] - b["f1_car"]) < 1e-3
    assert len(list(tmp_path.glob("best.*.onnx"))) == 1
    assert run("evaluate", "--checkpoint", ckpt, "--precision", "fp16") == 2
    assert "--precision 'fp16'" in capsys.readouterr().err


def test_evaluate_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert run("evaluate", "--checkpoint", bad) == 2
    assert "bad.pt" in capsys.readouterr().err


def test_predict_full_resolution_overlay_and_rle(trained, carvana_raw, tmp_path):
    from segkit.data import rle_decode

    images = sorted((carvana_raw / "train").glob("*.jpg"))[:2]
    out = tmp_path / "pred"
    csv = tmp_path / "sub.csv"
    assert (
        run(
            "predict",
            "--checkpoint",
            trained / "run" / "best.pt",
            *images,
            "--out",
            out,
            "--overlay",
            "--rle",
            csv,
            "--workers",
            "0",
        )
        == 0
    )
    import pandas as pd

    table = pd.read_csv(csv)
    assert list(table.columns) == ["img", "rle_mask"]
    assert sorted(table["img"]) == sorted(p.name for p in images)
    for img in images:
        label = cv2.imread(str(out / f"{img.stem}.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == (128, 192)
        assert (out / f"{img.stem}_overlay.png").is_file()
        rle = table.set_index("img").loc[img.name, "rle_mask"]
        rle = "" if isinstance(rle, float) else rle
        np.testing.assert_array_equal(rle_decode(rle, label.shape), (label > 0).astype(np.uint8))


def test_predict_missing_input(trained, tmp_path, capsys):
    assert (
        run(
            "predict",
            "--checkpoint",
            trained / "run" / "best.pt",
            tmp_path / "nope.jpg",
            "--out",
            tmp_path / "o",
        )
        == 2
    )
    assert "nope.jpg" in capsys.readouterr().err


def test_export_onnx_check(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert run("export", "--checkpoint", trained / "run" / "best.pt", "--onnx", out, "--check") == 0
    assert out.is_file()
    line = [s for s in capsys.readouterr().out.splitlines() if "difference" in s][0]
    assert float(line.rsplit(" ", 1)[1]) < 1e-3


def test_score_hand_built_case(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    # 3 classes; one image of 4 pixels: truth 0 1 1 2, prediction 0 1 2 2
    cv2.imwrite(str(gt / "a.png"), np.array([[0, 1], [1, 2]], np.uint8))
    cv2.imwrite(str(pred / "a.png"), np.array([[0, 1], [2, 2]], np.uint8))
    out = tmp_path / "s.json"
    assert run("score", gt, pred, "--classes", "3", "--json", out) == 0
    result = json.loads(out.read_text())
    assert result["f1_0"] == pytest.approx(1.0)
    assert result["f1_1"] == pytest.approx(2 * 1 / (2 + 1))  # tp=1, |G|=2, |P|=1
    assert result["f1_2"] == pytest.approx(2 * 1 / (1 + 2))
    assert "f1_1=" in capsys.readouterr().out
    # a report never replaces an input: --json must name a .json file
    label = (gt / "a.png").read_bytes()
    assert run("score", gt, pred, "--classes", "3", "--json", gt / "a.png") == 2
    assert "ending in .json" in capsys.readouterr().err
    assert (gt / "a.png").read_bytes() == label


@pytest.mark.parametrize(
    ("count", "line"),
    [
        (3, "scoring 3 classes found in the labels (--classes names them)"),
        (19, "scoring as 'cityscapes': its 19 classes (--classes chooses others)"),
        (
            11,
            "scoring 11 classes found in the labels (data sets with 11 classes: camvid, helen; "
            "name them with --classes camvid or --classes helen)",
        ),
    ],
)
def test_score_says_how_it_named_the_classes_the_labels_show(tmp_path, capsys, count, line):
    labels = (np.arange(64).reshape(8, 8) % count).astype(np.uint8)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), labels)
    assert run("score", tmp_path / "gt", tmp_path / "pred") == 0
    assert capsys.readouterr().out.splitlines()[0] == line


def _boundary_pair(tmp_path, labels=(0, 1, 2), ignore=255, wrong=1):
    """Ground truth with an ``ignore`` border (VOC's 255 boundary) and a prediction equal to
    it inside, ``wrong`` on the border: scored right, accuracy is 1."""
    gt = np.full((8, 8), labels[0], np.uint8)
    gt[2:6, 2:6] = labels[1]
    gt[4:6, 4:6] = labels[-1]
    pred = gt.copy()
    gt[0, :], pred[0, :] = ignore, wrong
    for folder, values in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), values)
    return tmp_path / "gt", tmp_path / "pred"


def _score(capsys, *args):
    assert run("score", *args, "--json", args[0].parent / "s.json") == 0, capsys.readouterr().err
    return json.loads((args[0].parent / "s.json").read_text())


def test_score_leaves_out_voc_boundary_with_classes_voc(tmp_path, capsys):
    gt, pred = _boundary_pair(tmp_path, labels=(0, 15, 7))
    assert _score(capsys, gt, pred, "--classes", "voc")["accuracy"] == 1.0


def test_score_takes_the_ignore_index_a_checkpoint_recorded(tmp_path, capsys):
    """ADE20K-style: 0 = 'other' left out by training; score must leave it out too."""
    from segkit.engine.checkpoint import save_checkpoint
    from segkit.models import ModelSpec

    names = ["other", "wall", "floor", "sky"]
    spec = ModelSpec(arch="unet", encoder=None, classes=4, class_names=names)
    spec.meta = {"classes": names, "ignore_index": 0}
    ckpt = save_checkpoint(tmp_path / "m.pt", {"model": {}, "model_spec": spec.to_dict()})
    gt, pred = _boundary_pair(tmp_path, labels=(1, 2, 3), ignore=0, wrong=3)
    assert _score(capsys, gt, pred, "--classes", ckpt)["accuracy"] == 1.0


def test_score_ignore_index_option_and_the_error_that_names_it(tmp_path, capsys):
    gt, pred = _boundary_pair(tmp_path)
    assert run("score", gt, pred, "--classes", "3") == 2
    err = capsys.readouterr().err
    assert "--ignore-index 255" in err and "ignore_index=" not in err, err
    assert _score(capsys, gt, pred, "--classes", "3", "--ignore-index", "255")["accuracy"] == 1.0


def test_score_without_classes_leaves_out_255_beside_other_labels(tmp_path, capsys):
    gt, pred = _boundary_pair(tmp_path)
    assert _score(capsys, gt, pred)["accuracy"] == 1.0
    assert "255" in capsys.readouterr().out.splitlines()[0]


def test_score_missing_folder(tmp_path, capsys):
    assert run("score", tmp_path / "a", tmp_path / "b") == 2
    assert str(tmp_path / "a") in capsys.readouterr().err


def test_no_traceback_without_debug_but_with_it(tmp_path):
    cmd = [sys.executable, "-m", "segkit", "train", str(tmp_path / "missing.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for debug in (["--debug", *cmd[3:]], [*cmd[3:], "--debug"]):  # before or after the command
        proc = subprocess.run(
            [sys.executable, "-m", "segkit", *debug], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode != 0 and "Traceback" in proc.stderr, debug


def test_predict_bad_image_fails_naming_it_unless_skip_bad(trained, carvana_raw, tmp_path, capsys):
    good = sorted((carvana_raw / "train").glob("*.jpg"))[0]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(good.read_bytes()[:200])
    ckpt = trained / "run" / "best.pt"
    assert run("predict", "--checkpoint", ckpt, good, bad, "--out", tmp_path / "o1") == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert (
        run("predict", "--checkpoint", ckpt, good, bad, "--out", tmp_path / "o2", "--skip-bad") == 0
    )
    captured = capsys.readouterr()
    assert "skipped 1" in captured.err
    assert "predicted 1 image into" in captured.out
    assert "|" not in captured.err  # no progress bar when stderr is not a terminal
    assert (tmp_path / "o2" / f"{good.stem}.png").is_file()


@pytest.mark.slow
def test_train_ctrl_c_exits_130_with_resume_hint_then_resumes(carvana_raw, tmp_path):
    import os
    import signal
    import time

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  dataset: carvana\n  root: " + str(carvana_raw) + "\n  prepare_size: 64\n"
        "  prepared_root: prep\n  image_size: 64\n  batch_size: 2\n  num_workers: 0\n"
        "  val_fraction: 0.5\nmodel:\n  arch: unet\n  base_channels: 4\n"
        "train:\n  epochs: 500\n  out_dir: run\n  progress: false\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "segkit", "train", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last = tmp_path / "run" / "last.pt"
    deadline = time.time() + 90
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()[0] if proc.poll() is not None else "no last.pt in 90 s"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "--resume" in out
    epochs_done = len((tmp_path / "run" / "history.csv").read_text().strip().splitlines()) - 1
    assert epochs_done >= 1
    code = main(["train", str(cfg), f"train.epochs={epochs_done + 1}", "--resume"])
    assert code == 0
    rows = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == epochs_done + 1
    # the same command without --resume must not replace that run...
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert main(["train", str(cfg), "train.epochs=1"]) == 2
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before
    # ...unless asked to
    assert main(["train", str(cfg), "train.epochs=1", "--overwrite"]) == 0
    rows = (tmp_path / "run" / "history.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == 1
    # the run's own config.yaml, as the resume hint prints it, resumes the run
    assert main(["train", str(tmp_path / "run" / "config.yaml"), "train.epochs=2", "--resume"]) == 0
    assert main(["train", str(cfg), "--resume", "--overwrite"]) == 2


def test_train_refuses_to_write_over_its_own_config(tmp_path, capsys):
    from segkit.data import synth_helen

    synth_helen(tmp_path / "helen", n=4, size=32)
    cfg = tmp_path / "config.yaml"  # a config of the user's own, in the folder it names
    cfg.write_text(
        "# my notes\ndata:\n  root: helen\n  image_size: 32\n  num_workers: 0\n"
        "model:\n  arch: unet\n  base_channels: 4\ntrain:\n  out_dir: .\n  epochs: 1\n"
    )
    assert run("train", cfg) == 2
    assert "was not written by a segkit run" in capsys.readouterr().err
    assert cfg.read_text().startswith("# my notes")


def test_json_reports_write_undefined_scores_as_null(tmp_path):
    from segkit.api import write_json

    path = write_json(tmp_path / "m.json", {"precision_bg": float("nan"), "f1_car": 0.5})

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(path.read_text(), parse_constant=refuse) == {
        "precision_bg": None,
        "f1_car": 0.5,
    }


def test_a_step_gets_only_the_options_given_and_refuses_others_in_one_line(tmp_path, capsys):
    from segkit.data.registry import dataset_step, step_options

    assert step_options(dataset_step("prepare", "helen")) == ("overwrite",)
    assert step_options(dataset_step("prepare", "carvana")) == (
        "size",
        "workers",
        "overwrite",
        "threshold",
        "soft",
    )
    assert run("synth", "voc", tmp_path / "voc", "--n", "1", "--layout", "official") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert (
        "data set 'voc' has no synth option --layout; its synth options: --n, --seed, --overwrite."
    ) in err[0]
    assert "--layout applies to helen only." in err[0]
    assert not (tmp_path / "voc").exists()
    assert run("prepare", "helen", tmp_path, tmp_path / "out", "--workers", "2") == 2
    err = capsys.readouterr().err
    assert "'helen' has no prepare option --workers; its prepare options: --overwrite." in err


def test_score_with_a_reduce_zero_label_checkpoint_reads_labels_as_training_did(tmp_path, capsys):
    """ADE20K-style: ground truth 0 = unlabelled, 1..3 the classes; predictions 1..3."""
    from segkit.data.base import reduce_zero_label_facts
    from segkit.data.meta import DatasetMeta
    from segkit.engine.checkpoint import save_checkpoint
    from segkit.models import ModelSpec

    names = ["wall", "floor", "sky"]
    spec = ModelSpec(arch="unet", encoder=None, classes=3, class_names=names)
    spec.meta = DatasetMeta(classes=names, **reduce_zero_label_facts(3)).to_dict()
    ckpt = save_checkpoint(tmp_path / "m.pt", {"model": {}, "model_spec": spec.to_dict()})
    gt, pred = _boundary_pair(tmp_path, labels=(1, 2, 3), ignore=0, wrong=2)
    assert _score(capsys, gt, pred, "--classes", ckpt)["accuracy"] == 1.0
