"""Prediction against hostile inputs and interruptions: files it must not replace,
decompression bombs, SIGTERM, and messages that name the option of the interface in use."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segkit.cli import main
from segkit.data.io import MAX_IMAGE_PIXELS, read_mask
from segkit.engine.checkpoint import save_checkpoint
from segkit.errors import DataError
from segkit.inference import predict
from segkit.models import build_model


def _image(path: Path, size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """A smooth random RGB image of ``size`` = (height, width) written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    small = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    cv2.imwrite(str(path), cv2.resize(small, (size[1], size[0])))
    return path


def _model():
    torch.manual_seed(0)
    return build_model(arch="unet", base_channels=4, classes=1)


def _checkpoint(path: Path) -> Path:
    model = _model()
    state = {
        "model": model.state_dict(),
        "model_spec": model.spec.to_dict(),
        "config": {"data": {"image_size": 32}},
    }
    return save_checkpoint(path, state)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG of a few dozen bytes whose (valid, CRC-checked) header claims ``width x height``:
    decoding it would allocate ``3 * width * height`` bytes; its pixel data is a stub."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    stub = zlib.compress(b"\0" * 64)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stub) + chunk(b"IEND", b"")
    )
    return path


# -- never replacing a file segkit did not write ------------------------------------------------


def test_predict_refuses_to_replace_an_unrelated_file_in_out(tmp_path):
    photo = _image(tmp_path / "dir" / "photo.jpg")
    mine = tmp_path / "dir" / "photo.png"  # the user's own file, not an input of the run
    mine.write_bytes(b"my holiday picture")
    with pytest.raises(DataError, match=r"photo\.png.*already exists.*overwrite=True"):
        predict(_model(), [photo], tmp_path / "dir", size=32)
    assert mine.read_bytes() == b"my holiday picture"
    predict(_model(), [photo], tmp_path / "dir", size=32, overwrite=True)
    assert read_mask(mine).shape == (40, 48)


def test_existing_overlay_and_rle_csv_are_refused_before_anything_is_written(tmp_path):
    photos = [_image(tmp_path / "in" / f"p{i}.jpg", seed=i) for i in range(2)]
    out = tmp_path / "out"
    out.mkdir()
    (out / "p1_overlay.png").write_bytes(b"keep")
    with pytest.raises(DataError, match="p1_overlay.png"):
        predict(_model(), photos, out, size=32, overlay=True)
    assert sorted(p.name for p in out.iterdir()) == ["p1_overlay.png"]  # p0.png not written
    csv = tmp_path / "sub.csv"
    csv.write_text("my,notes\n")
    with pytest.raises(DataError, match="sub.csv"):
        predict(_model(), photos, tmp_path / "out2", size=32, rle_csv=csv)
    assert csv.read_text() == "my,notes\n" and not (tmp_path / "out2").exists()
    predict(_model(), photos, tmp_path / "out2", size=32, rle_csv=csv, overwrite=True)
    assert csv.read_text().startswith("img,rle_mask")


def test_the_command_names_overwrite_as_a_flag(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "best.pt")
    photo = _image(tmp_path / "dir" / "photo.jpg")
    (tmp_path / "dir" / "photo.png").write_bytes(b"mine")
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(tmp_path / "dir")])
        == 2
    )
    err = capsys.readouterr().err
    assert "photo.png" in err and "--overwrite" in err and "overwrite=True" not in err
    assert err.strip().splitlines()[-1].startswith("segkit predict: error: ")  # one line
    argv = ["predict", "--checkpoint", str(ckpt), str(photo), "--out", str(tmp_path / "dir")]
    assert main([*argv, "--overwrite"]) == 0
    assert read_mask(tmp_path / "dir" / "photo.png").shape == (40, 48)


# -- decompression bombs -----------------------------------------------------------------------


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    bomb = _png_header_only(tmp_path / "in" / "bomb.png", 30000, 30000)
    good = _image(tmp_path / "in" / "good.jpg")
    assert bomb.stat().st_size < 200 and MAX_IMAGE_PIXELS < 30000 * 30000
    decoded = []
    original = cv2.imdecode
    monkeypatch.setattr(
        cv2, "imdecode", lambda data, flag: decoded.append(len(data)) or original(data, flag)
    )
    with pytest.raises(DataError, match=r"bomb\.png.*30000x30000.*max_pixels=900000000"):
        predict(_model(), [bomb], tmp_path / "o1", size=32)
    assert decoded == []  # refused from the header: its pixels were never decoded
    result = predict(_model(), [bomb, good], tmp_path / "o2", size=32, skip_bad=True)
    assert result["skipped"] == [str(bomb)] and result["count"] == 1
    assert not (tmp_path / "o2" / "bomb.png").exists()
    # a raised limit lets a trusted large image through (here: refused by the decoder instead)
    with pytest.raises(DataError, match="bomb.png") as failure:
        predict(_model(), [bomb], tmp_path / "o3", size=32, max_pixels=10**9)
    assert "above the limit" not in str(failure.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_opencvs_own_pixel_limit_never_escapes_as_a_cv2_error(tmp_path, workers):
    bomb = _png_header_only(tmp_path / "in" / "huge.png", 33000, 33000)  # > 2**30 pixels
    good = _image(tmp_path / "in" / "good.jpg")
    kwargs = {"size": 32, "max_pixels": None, "num_workers": workers}
    with pytest.raises(DataError, match=r"huge\.png.*OPENCV_IO_MAX_IMAGE_PIXELS"):
        predict(_model(), [bomb, good], tmp_path / "o1", **kwargs)
    result = predict(_model(), [bomb, good], tmp_path / "o2", skip_bad=True, **kwargs)
    assert result["skipped"] == [str(bomb)] and result["count"] == 1


def test_the_command_names_max_pixels_and_skip_bad(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "best.pt")
    bomb = _png_header_only(tmp_path / "in" / "bomb.png", 30000, 30000)
    good = _image(tmp_path / "in" / "good.jpg")
    argv = ["predict", "--checkpoint", str(ckpt), str(bomb), str(good)]
    assert main([*argv, "--out", str(tmp_path / "o1")]) == 2
    err = capsys.readouterr().err
    assert "bomb.png" in err and "--max-pixels 900000000" in err and "--skip-bad" in err
    assert "skip_bad=True" not in err and "max_pixels=" not in err
    assert err.strip().splitlines()[-1].startswith("segkit predict: error: ")  # one line
    assert main([*argv, "--out", str(tmp_path / "o2"), "--skip-bad"]) == 0
    assert "skipped 1" in capsys.readouterr().err
    assert (tmp_path / "o2" / "good.png").is_file()
    small = ["predict", "--checkpoint", str(ckpt), str(good), "--out", str(tmp_path / "o3")]
    assert main([*small, "--max-pixels", "100"]) == 2  # 40x48 = 1920 pixels > 100
    assert "good.jpg" in capsys.readouterr().err
    assert main([*small, "--max-pixels", "0"]) == 0  # 0: no limit


def test_skip_bad_is_named_as_the_interface_spells_it(tmp_path, capsys):
    broken = tmp_path / "in" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match=r"broken\.jpg.*skip_bad=True"):
        predict(_model(), [broken], tmp_path / "o1", size=32)
    ckpt = _checkpoint(tmp_path / "best.pt")
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(broken), "--out", str(tmp_path / "o2")])
        == 2
    )
    err = capsys.readouterr().err
    assert "--skip-bad" in err and "skip_bad=True" not in err


# -- SIGTERM -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_sigterm_stops_predict_cleanly_keeping_finished_outputs(tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt")
    # slow per image (sliding 32 px windows over 768 x 768), so the signal lands mid-run
    for i in range(8):
        _image(tmp_path / "in" / f"img{i}.jpg", (768, 768), seed=i)
    out, csv = tmp_path / "out", tmp_path / "sub.csv"
    cmd = [sys.executable, "-m", "segkit", "predict", "--checkpoint", str(ckpt),
           str(tmp_path / "in"), "--out", str(out), "--rle", str(csv), "--tile", "32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not list(out.glob("*.png")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("segkit predict: interrupted: stopped by SIGTERM after "), err
    done = int(line.split(" after ")[1].split()[0])
    masks = sorted(out.glob("*.png"))
    assert 1 <= done < 8 and len(masks) == done, (done, masks)
    for mask in masks:  # finished outputs are whole files
        assert read_mask(mask).shape == (768, 768)
    leftovers = [p.name for p in [*tmp_path.iterdir(), *out.iterdir()] if p.name.endswith(".tmp")]
    assert leftovers == [] and not csv.exists()
