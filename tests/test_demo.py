"""`segkit demo` end to end on the smallest data it accepts (the README's main command)."""

import re

import pytest

from segkit.api import build_datasets
from segkit.cli import main
from segkit.config import load_config
from segkit.data.io import read_mask
from segkit.data.rle import read_rle_csv


def held_out_ids(out) -> set[str]:
    _, val = build_datasets(load_config(out / "demo-config.yaml"))
    return {s.id for s in val.samples}


@pytest.mark.slow
def test_carvana_demo_writes_everything_it_promises(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cars", "3", "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    for name in ("best.pt", "last.pt", "history.csv", "curves.png", "predictions.png"):
        assert (out / "run" / name).is_file(), name
    assert (out / "metrics.json").is_file() and "validation soft_dice" in text
    assert (out / "report" / "index.html").is_file() and (
        out / "report" / "per_image.csv"
    ).is_file()
    assert f"report:      {out / 'report' / 'index.html'}" in text
    rows = read_rle_csv(out / "predictions" / "submission.csv")
    stems = {img.removesuffix(".jpg") for img in rows}
    assert stems == held_out_ids(out)  # every held-out view, and nothing trained on
    cars = sorted({stem.rsplit("_", 1)[0] for stem in stems})
    assert "best epoch:  1 of 1" in text
    assert (
        f"validation:  {len(cars)} cars never trained on, all {len(stems)} of their views" in text
    )
    assert "Dice per held-out car, full resolution" in text
    for car in cars:  # one line per held-out car, with its Dice
        assert re.search(rf"^    {car}: [01]\.\d{{4}}$", text, re.M), car
    for stem in stems:  # at the originals' full resolution, with overlays
        assert read_mask(out / "predictions" / f"{stem}.png").shape == (1280, 1918)
        assert (out / "predictions" / f"{stem}_overlay.png").is_file()


@pytest.mark.slow
def test_helen_demo_reports_the_overall_f1(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--task", "helen", "--out", str(out), "--faces", "10", "--epochs", "1"]) == 0
    )
    assert "validation f1_overall" in capsys.readouterr().out
    labels = (out / "predictions").glob("*.png")  # beside each: <stem>_overlay.png
    stems = {p.stem for p in labels if not p.stem.endswith("_overlay")}
    assert len(stems) == 2 and stems <= held_out_ids(out)  # 20% of 10 faces
