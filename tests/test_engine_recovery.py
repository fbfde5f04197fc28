"""Recovery from hard kills and signals, and refusing checkpoints that carry code.

Each test here reproduces a defect found by fault injection (issue 16): stale temporary files
after ``kill -9``, a second signal during a checkpoint write, a run folder with a history but
no checkpoint, a checkpoint asking to run code on load, and a loader worker's error.
"""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import pytest
import torch

from segkit._files import TEMP_NAME, remove_stale_temp_files, replace_atomically, temp_name
from segkit.cli import main
from segkit.engine import checkpoint as C
from segkit.engine.checkpoint import load_checkpoint, save_checkpoint
from segkit.errors import CheckpointError, ConfigError

# -- stale temporary files (kill -9 during a write) ------------------------------------------


def test_a_run_removes_stale_temp_files_of_its_own_naming(tmp_path, make_trainer, capsys):
    run = tmp_path / "run"
    make_trainer(run, epochs=1).fit()
    stale = [temp_name(run / "last.pt"), temp_name(run / "last.pt"), temp_name(run / "curves.png")]
    for i, path in enumerate(stale):
        path.write_bytes(b"x" * 1024 * i)  # what kill -9 leaves: partial or empty files
    mine = run / ".notes.tmp"  # not segkit's naming: kept
    mine.write_text("keep me")
    capsys.readouterr()
    make_trainer(run, epochs=2).fit(resume=True)
    out = capsys.readouterr().out
    assert "removed 3 temporary file(s)" in out and ".last.pt." in out
    assert len([line for line in out.splitlines() if "temporary file" in line]) == 1
    assert not any(TEMP_NAME.match(p.name) for p in run.iterdir())
    assert mine.read_text() == "keep me"
    # --overwrite (a fresh start) clears them too
    temp_name(run / "best.pt").write_bytes(b"")
    make_trainer(run, epochs=1).fit(overwrite=True)
    assert not any(TEMP_NAME.match(p.name) for p in run.iterdir())


def test_remove_stale_temp_files_matches_only_segkits_names(tmp_path):
    names = [temp_name(tmp_path / "last.pt").name, ".last.pt.tmp", "last.pt.1234abcd.tmp", "a.pt"]
    for name in names:
        (tmp_path / name).write_bytes(b"12")
    report = remove_stale_temp_files(tmp_path)
    assert (
        report
        == f"removed 1 temporary file(s) (0.0 MiB) that an interrupted write left in {tmp_path}: {names[0]}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    assert remove_stale_temp_files(tmp_path) is None
    assert remove_stale_temp_files(tmp_path / "missing") is None


# -- signals during a checkpoint write -------------------------------------------------------


def test_a_signal_during_an_atomic_write_waits_until_the_file_is_in_place(tmp_path):
    target = tmp_path / "last.pt"

    def fill(tmp: Path) -> None:
        tmp.write_bytes(b"first half, ")
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of the write
        with open(tmp, "ab") as f:
            f.write(b"second half")

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(target, fill)
    assert target.read_bytes() == b"first half, second half"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_second_signal_during_the_checkpoint_write_stops_cleanly(
    tmp_path, make_trainer, monkeypatch
):
    """The first signal asks to stop after the step, the second to abort: both arrive while
    last.pt is being written. The write completes, then the run stops; it resumes from there."""
    real_save = torch.save
    sent = []

    def save_with_two_signals(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if not sent:  # only during the first checkpoint write
            sent.append(True)
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(C.torch, "save", save_with_two_signals)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        make_trainer(run, epochs=3).fit()
    assert load_checkpoint(run / "last.pt")["epoch"] == 1  # written whole, under its name
    assert not any(TEMP_NAME.match(p.name) for p in run.iterdir())
    monkeypatch.undo()
    result = make_trainer(run, epochs=2).fit(resume=True)
    assert result["status"] == "completed" and result["epochs"] == 2


def test_a_history_without_a_checkpoint_names_one_command_that_works(tmp_path, capsys):
    from segkit.data import synth_helen

    synth_helen(tmp_path / "helen", n=4, size=32)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  root: helen\n  image_size: 32\n  num_workers: 0\n  batch_size: 2\n"
        "model:\n  arch: unet\n  base_channels: 4\ntrain:\n  out_dir: run\n  epochs: 1\n"
        "  progress: false\n"
    )
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt"):  # killed after history.csv, before the first last.pt
        (run / name).unlink()
    capsys.readouterr()
    for extra in ([], ["--resume"]):
        assert main(["train", str(cfg), *extra]) == 2
        err = capsys.readouterr().err
        assert "holds history.csv but no checkpoint" in err, err
        command = err.split("afresh with: ")[1].split(" (--debug")[0]
    assert command == f"segkit train {run / 'config.yaml'} --overwrite"
    assert main(command.split()[1:]) == 0  # the command it names works
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_the_library_names_fit_overwrite_for_the_same_folder(tmp_path, make_trainer):
    run = tmp_path / "run"
    make_trainer(run, epochs=1).fit()
    for name in ("last.pt", "best.pt"):
        (run / name).unlink()
    with pytest.raises(ConfigError, match=r"no checkpoint.*fit\(overwrite=True\)"):
        make_trainer(run, epochs=1).fit()
    with pytest.raises(CheckpointError, match=r"no checkpoint.*fit\(overwrite=True\)"):
        make_trainer(run, epochs=1).fit(resume=True)
    assert make_trainer(run, epochs=1).fit(overwrite=True)["status"] == "completed"


# -- checkpoints that carry code -------------------------------------------------------------


class _RunsCode:
    """Pickles as a call to ``os.system``: loading it unsafely would run the command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _code_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    # pickling only records the call (never runs it); nothing here loads it unsafely
    torch.save({"format": "segkit-checkpoint", "version": 1, "model": _RunsCode(marker)}, path)
    return path, marker


def _assert_segkits_message(text: str, path: Path) -> None:
    assert str(path) in text and "asks to run code on load" in text, text
    assert "system" in text  # names the global it would call
    assert "corrupt" not in text and "weights_only=False" not in text
    assert "weights_only set to False" not in text and "will likely succeed" not in text


def test_a_checkpoint_that_carries_code_gets_segkits_message(tmp_path):
    path, marker = _code_checkpoint(tmp_path)
    with pytest.raises(CheckpointError) as failure:
        load_checkpoint(path)
    _assert_segkits_message(str(failure.value), path)
    assert C.pickle_globals(path) is not None and any("system" in g for g in C.pickle_globals(path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "wording",
    [
        "Weights only load failed. Unsupported global: GLOBAL posix.system",  # torch 2.4
        "Trying to load unsupported GLOBAL posix.system whose module posix is blocked",  # 2.14
        "some wording of a future torch",
    ],
)
def test_the_code_message_does_not_depend_on_torchs_wording(tmp_path, monkeypatch, wording):
    path, marker = _code_checkpoint(tmp_path)

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(
            f"{wording}\nRe-running `torch.load` with `weights_only` set to `False` will "
            "likely succeed, but it can result in arbitrary code execution."
        )

    monkeypatch.setattr(C.torch, "load", refuse)
    with pytest.raises(CheckpointError) as failure:
        load_checkpoint(path)
    _assert_segkits_message(str(failure.value), path)
    assert not marker.exists()


def test_every_command_refuses_a_code_checkpoint_with_one_line(tmp_path, capsys, make_trainer):
    path, marker = _code_checkpoint(tmp_path)
    image = tmp_path / "in.png"
    image.write_bytes(b"")  # never read: the checkpoint is refused first
    commands = [
        ["evaluate", "--checkpoint", str(path)],
        ["predict", "--checkpoint", str(path), str(tmp_path), "--out", str(tmp_path / "o")],
        ["export", "--checkpoint", str(path), "--onnx", str(tmp_path / "m.onnx")],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith(f"segkit {argv[0]}: error: "), err
        _assert_segkits_message(err, path)
    with pytest.raises(CheckpointError) as failure:  # resume
        make_trainer(tmp_path / "run", epochs=1).fit(resume=path)
    _assert_segkits_message(str(failure.value), path)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_still_called_corrupt(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", {"model": {"w": torch.ones(3)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as failure:
        load_checkpoint(cut)
    assert "weights_only" not in str(failure.value)


# -- a loader worker's error -----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_bad_training_image_reads_the_same_with_loader_workers(tmp_path, capsys):
    from segkit.data import synth_helen

    synth_helen(tmp_path / "helen", n=4, size=32)
    images = sorted((tmp_path / "helen" / "train").rglob("*.jpg"))
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 2])  # truncated: fails when it is read
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "data:\n  root: helen\n  image_size: 32\n  batch_size: 1\n  val_fraction: 0.25\n"
        "model:\n  arch: unet\n  base_channels: 4\ntrain:\n  epochs: 1\n  progress: false\n"
    )
    errors = []
    for workers in (0, 2):
        out = f"train.out_dir={tmp_path / f'run{workers}'}"
        assert main(["train", str(cfg), f"data.num_workers={workers}", out]) == 2
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert images[0].name in errors[0] and "Traceback" not in errors[1]
    assert errors[1] == errors[0]


def test_a_config_with_a_python_tag_is_refused_without_running_it(tmp_path):
    from segkit.config import load_config

    marker = tmp_path / "code-ran"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f'train:\n  epochs: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(cfg, [])
    assert not marker.exists()
