"""Typed config: YAML loading, dotted overrides, typo suggestions, relative paths."""

from pathlib import Path

import pytest
import yaml

from segkit.config import Config, all_keys, load_config, save_config, to_dict
from segkit.errors import ConfigError


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_without_file():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.arch == "smp.Unet"
    assert cfg.model.encoder == "resnet18"
    assert cfg.train.epochs == 30


def test_yaml_values_and_types(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3, "grad_clip": 1}, "loss": {"name": "ce + dice"}})
    cfg = load_config(path)
    assert cfg.train.epochs == 3
    assert cfg.train.grad_clip == 1.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.loss.name == "ce + dice"


def test_paths_are_relative_to_config_file(tmp_path):
    path = write(tmp_path, {"data": {"root": "../data/helen"}, "train": {"out_dir": "runs/x"}})
    cfg = load_config(path)
    assert cfg.data.root == str((tmp_path / "data" / "helen").resolve())
    assert cfg.train.out_dir == str((tmp_path / "cfg" / "runs" / "x").resolve())


def test_override_paths_are_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=mydata"])
    assert cfg.data.root == str(tmp_path / "mydata")


def test_dotted_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path, {"train": {"epochs": 3}})
    cfg = load_config(
        path,
        [
            "train.epochs=5",
            "train.grad_clip=none",
            "data.classes=[a, b]",
            "model.options.decoder_attention_type=scse",
            "train.channels_last=true",
        ],
    )
    assert cfg.train.epochs == 5
    assert cfg.train.grad_clip is None
    assert cfg.data.classes == ["a", "b"]
    assert cfg.model.options == {"decoder_attention_type": "scse"}
    assert cfg.train.channels_last is True


def test_unknown_key_in_file_suggests_closest(tmp_path):
    path = write(tmp_path, {"train": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"train\.epoch.*Did you mean 'train\.epochs'"):
        load_config(path)


def test_unknown_section_suggests_closest(tmp_path):
    path = write(tmp_path, {"trian": {"epochs": 3}})
    with pytest.raises(ConfigError, match="Did you mean 'train"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"'trian'\. Did you mean 'train'\?"):
        load_config(path)


def test_unknown_override_key_suggests_closest():
    with pytest.raises(ConfigError, match="Did you mean 'train.accumulate'"):
        load_config(None, ["train.acumulate=4"])


def test_bad_override_form():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])


def test_bad_value_type_names_key():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        load_config(None, ["train.epochs=many"])


def test_missing_file_names_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [epochs: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML") as exc:
        load_config(path)
    assert "\n" not in str(exc.value) and "line " in str(exc.value)


def test_non_mapping_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_round_trip_through_yaml(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "loss.name=ce+dice"])
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert to_dict(again) == to_dict(cfg)


def test_all_keys_lists_dotted_names():
    keys = all_keys()
    assert "train.epochs" in keys and "data.root" in keys and "model.encoder_weights" in keys
    assert all("." in k or k in ("name", "imports") for k in keys)


def test_docs_config_reference_matches_dataclasses():
    from segkit.config import config_reference

    page = (Path(__file__).resolve().parents[1] / "docs" / "configs.md").read_text()
    assert page.strip() == config_reference().strip(), (
        "docs/configs.md is stale: regenerate it with "
        "python -c 'from segkit.config import config_reference; print(config_reference())' > docs/configs.md"
    )


def write_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_str_overrides_keep_the_text_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        [
            "train.amp=off",
            "data.root=2020_01",
            "data.train_split=07",
            "name=0x1F",
            "model.encoder_weights=off",
        ],
    )
    assert cfg.train.amp == "off"
    assert cfg.data.root == str(tmp_path / "2020_01")
    assert cfg.data.train_split == "07"
    assert cfg.name == "0x1F"
    assert cfg.model.encoder_weights == "off"
    for null in ("none", "null", "~"):
        assert load_config(None, [f"model.encoder_weights={null}"]).model.encoder_weights is None


def test_str_values_in_file_keep_the_text_as_written(tmp_path):
    path = write_text(
        tmp_path,
        "name: 0x1F\n"
        "data:\n  train_split: 07\n  val_split: ~\n  split_file: none\n  classes: [07, on]\n"
        "train:\n  amp: off\n  epochs: 0x10\n  channels_last: on\n  grad_clip: 1\n",
    )
    cfg = load_config(path)
    assert cfg.name == "0x1F"
    assert cfg.train.amp == "off"
    assert cfg.data.train_split == "07"
    assert cfg.data.val_split is None and cfg.data.split_file is None
    assert cfg.data.classes == ["07", "on"]
    # non-str fields keep YAML's values
    assert cfg.train.epochs == 16
    assert cfg.train.channels_last is True
    assert cfg.train.grad_clip == 1.0


def test_untyped_options_keep_yaml_values(tmp_path):
    path = write_text(tmp_path, "data:\n  options: {flip: yes, n: 3, p: 0.5, x: null, s: abc}\n")
    cfg = load_config(path, ["model.options.aux=on", "model.options.depth=4"])
    assert cfg.data.options == {"flip": True, "n": 3, "p": 0.5, "x": None, "s": "abc"}
    assert cfg.model.options == {"aux": True, "depth": 4}


def test_wrong_type_for_str_field_is_still_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"name: expected a string, got \['a', 'b'\]"):
        load_config(None, ["name=[a, b]"])
    path = write_text(tmp_path, "train:\n  device: null\n")
    with pytest.raises(ConfigError, match="train.device: expected a string, got None"):
        load_config(path)


def test_duplicate_section_in_file(tmp_path):
    path = write_text(
        tmp_path,
        "name: x\n\ntrain:\n  epochs: 3\nmodel:\n  encoder: resnet34\ntrain:\n  amp: off\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value) == (
        f"Config file {str(path)!r}: key 'train' appears twice (lines 3 and 7); merge them."
    )


def test_duplicate_nested_key_in_file(tmp_path):
    path = write_text(tmp_path, "data:\n  options:\n    flip: true\n    flip: false\n")
    with pytest.raises(
        ConfigError, match=r"key 'data\.options\.flip' appears twice \(lines 3 and 4\)"
    ):
        load_config(path)


def test_yaml_merge_key_is_not_a_duplicate(tmp_path):
    path = write_text(
        tmp_path, "model:\n  options: &opts\n    a: 1\ndata:\n  options:\n    <<: *opts\n    a: 2\n"
    )
    cfg = load_config(path)
    assert cfg.model.options == {"a": 1}
    assert cfg.data.options == {"a": 2}


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("train.lr=0.1", "Did you mean 'optim.lr'?"),
        ("optim.epochs=3", "Did you mean 'train.epochs'?"),
        ("data=5", "'data' is a section; set one of its keys"),
        ("model.name=x", "Did you mean 'loss.name' or 'optim.name'"),  # not the top-level name
    ],
)
def test_a_key_in_the_wrong_section_points_to_the_right_one(override, hint):
    with pytest.raises(ConfigError) as failure:
        load_config(None, [override])
    assert hint in str(failure.value)


def test_data_classes_takes_names_or_a_count():
    assert load_config(None, ["data.classes=11"]).data.classes == 11
    assert load_config(None, ["data.classes=[bg, road]"]).data.classes == ["bg", "road"]


def test_a_symlinked_data_root_is_kept_as_the_link(tmp_path):
    # data/carvana -> /elsewhere/carvana_real: the prepared copy belongs beside the link
    target = tmp_path / "elsewhere" / "carvana_real"
    target.mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "carvana").symlink_to(target)
    path = write(tmp_path, {"data": {"root": "../data/carvana"}})
    assert load_config(path).data.root == str(tmp_path.resolve() / "data" / "carvana")


def test_data_classes_reads_a_file_of_names_relative_to_the_config(tmp_path, monkeypatch):
    """A single string ending in .txt/.names (or naming a file) is a file of class names, one
    a line; blank lines and # comments are skipped; in an override it is taken from the cwd."""
    path = write(tmp_path, {"data": {"classes": "labels.txt"}})
    (path.parent / "labels.txt").write_text("# CamVid order\nSky\n\n  Building \nRoad\n")
    assert load_config(path).data.classes == ["Sky", "Building", "Road"]
    (path.parent / "classes").write_text("bg\ncar\n")  # no suffix: a file that exists
    monkeypatch.chdir(path.parent)
    assert load_config(path, ["data.classes=classes"]).data.classes == ["bg", "car"]
    assert load_config(None, ["data.classes=labels.txt"]).data.classes == [
        "Sky",
        "Building",
        "Road",
    ]
    # a name with no file suffix and no such file stays a (one-name) list, as before
    assert load_config(None, ["data.classes=car"]).data.classes == ["car"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "class names file '{path}' does not exist"),
        ("# only a comment\n\n", "names 0 class(es); a data set needs at least two"),
        ("road\n", "names 1 class(es)"),
    ],
)
def test_a_bad_class_names_file_is_one_line(tmp_path, text, message):
    path = write(tmp_path, {"data": {"classes": "names.txt"}})
    names = path.parent / "names.txt"
    if text is not None:
        names.write_text(text)
    with pytest.raises(ConfigError) as failure:
        load_config(path)
    assert message.format(path=names) in str(failure.value)
    assert str(failure.value).startswith("data.classes: ") and "\n" not in str(failure.value)
