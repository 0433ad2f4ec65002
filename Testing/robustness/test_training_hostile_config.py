"""Hostile training configs: ``x2ct train --config`` refuses each in one line (exit 2) and creates nothing.

One strict YAML loader (x2ct.training.yamlfile) reads every config: size cap, no anchors or aliases, a depth
cap, UTF-8 only, no duplicate keys; then every section and number is validated (x2ct.training.config).
"""

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hostile import refused
from x2ct.errors import InputError
from x2ct.training import config as cfg
from x2ct.training import yamlfile

BASE = "method: x2ct-cnn\npreset: tiny\n"


def alias_bomb() -> str:
    """The billion-laughs document: about 750 bytes that a plain YAML loader expands to 9^9 strings."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 9):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ",".join(f"*{previous}" for _ in range(9)) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (alias_bomb(), ["anchors and aliases"]),
    "one alias": (BASE + "train: &t {lr: 0.001}\nevaluate: *t\n", ["anchors and aliases", "line 3"]),
    "merge key": (BASE + "train:\n  <<: {lr: 0.001}\n", ["merge keys"]),
    "deep flow nesting": (BASE + "model: " + "[" * 50_000 + "]" * 50_000 + "\n", ["nested deeper than"]),
    "deep block nesting": (BASE + "".join("  " * i + f"k{i}:\n" for i in range(400)), ["nested deeper than"]),
    "duplicate method": (BASE + "method: x2ct-gan\n", ["duplicate key 'method'", "line 3"]),
    "duplicate nested key": (BASE + "train:\n  lr: 0.001\n  lr: 0.1\n", ["duplicate key 'lr'"]),
    "python tag": (BASE + "train: !!python/object/apply:os.system ['true']\n", ["python/object"]),
    "unknown model key": (BASE + "model:\n  view_sise: 32\n", ["model.view_sise", "view_size", "growth"]),
    "unknown critic key": ("method: x2ct-gan\ncritic:\n  chanels: 4\n", ["critic.chanels", "num_layers"]),
    "critic for a method without": (BASE + "critic:\n  channels: 4\n", ["x2ct-cnn has no critic"]),
    "model value of the wrong type": (BASE + "model:\n  view_size: [16, 16]\n", ["model.view_size", "number"]),
    "model size too large": (BASE + "model:\n  view_size: 100000\n", ["model.view_size", "[0, 1024]"]),
    "model list too long": (BASE + "model:\n  decoder_channels: [" + ",".join(["4"] * 100) + "]\n",
                            ["model.decoder_channels"]),
    "lr 1e39": (BASE + "train:\n  lr: 1e39\n", ["train.lr", "(0, 1]"]),
    "lr nan": (BASE + "train:\n  lr: .nan\n", ["train.lr"]),
    "lr inf": (BASE + "train:\n  lr: .inf\n", ["train.lr"]),
    "lr negative": (BASE + "train:\n  lr: -0.1\n", ["train.lr"]),
    "steps huge": (BASE + "train:\n  steps: 1000000000000\n", ["train.steps", "[1, 1e7]"]),
    "batch size 0": (BASE + "train:\n  batch_size: 0\n", ["train.batch_size"]),
    "batch size huge": (BASE + "train:\n  batch_size: 100000\n", ["train.batch_size", "1024"]),
    "accumulate huge": (BASE + "train:\n  accumulate: 1000000000\n", ["train.accumulate"]),
    "negative seed": (BASE + "train:\n  seed: -1\n", ["train.seed"]),
    "eps 0": (BASE + "train:\n  eps: 0\n", ["train.eps"]),
    "loss weight negative": (BASE + "loss:\n  mse: -1\n", ["loss.mse"]),
    "loss weight huge": (BASE + "loss:\n  mse: 1.0e+300\n", ["loss.mse"]),
    "evaluate every 0": (BASE + "evaluate:\n  every: 0\n", ["evaluate.every"]),
    "checkpoint every 0": (BASE + "checkpoint:\n  every: 0\n", ["checkpoint.every"]),
    "angles empty": (BASE + "data:\n  angles: []\n", ["data.angles"]),
    "angle infinite": (BASE + "data:\n  angles: [0, 1e309]\n", ["data.angles"]),
    "too many angles": (BASE + "data:\n  angles: [" + ",".join(["0"] * 100) + "]\n", ["data.angles"]),
    "train count 0": (BASE + "data:\n  train_count: 0\n", ["data.train_count"]),
    "rotation 1000 degrees": (BASE + "augment:\n  rotation_deg: 1000\n", ["augment.rotation_deg"]),
    "no loss to train on": (BASE + "loss:\n  mse: 0\n", ["loss.mse", "loss.projection"]),
    "not a mapping": ("- method\n- x2ct-cnn\n", ["must be a mapping"]),
    "control character": (BASE + "preset: \x07\n", ["special characters"]),
    "unclosed list": (BASE + "data:\n  angles: [0, 90\n", ["not a valid config"]),
}


def refused_config(config_path, tmp_path, capfd, *words) -> str:
    """``x2ct train --config config_path``: refused in one line; nothing created in ``tmp_path`` (no run folder)."""
    argv = ["train", "--config", config_path, "--out", tmp_path / "run", "--progress", "none"]
    return refused(argv, capfd, tmp_path, *words)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_config_is_refused_in_one_line(tmp_path, capfd, case):
    text, words = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text, encoding="utf-8")
    refused_config(path, tmp_path, capfd, "x2ct train: error:", str(path), *words)


@pytest.mark.parametrize("case", ["alias bomb", "deep flow nesting", "deep block nesting"])
def test_bombs_are_refused_at_once(tmp_path, case):
    path = tmp_path / "bomb.yaml"
    path.write_text(HOSTILE[case][0])
    assert path.stat().st_size < (800 if case == "alias bomb" else 200_000)
    began = time.monotonic()
    with pytest.raises(InputError, match=HOSTILE[case][1][0]):
        cfg.load(path)
    assert time.monotonic() - began < 2, "a bomb must be refused before it costs time or memory"


def test_non_utf8_bytes_are_refused(tmp_path, capfd):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.encode() + b"# caf\xe9\n")
    refused_config(path, tmp_path, capfd, "not UTF-8", f"0xe9 at offset {len(BASE) + 5}", "save it as UTF-8")


def test_oversized_config_is_refused_before_reading(tmp_path, capfd):
    path = tmp_path / "big.yaml"
    path.write_text(BASE + "#" * (yamlfile.MAX_BYTES + 10) + "\n")
    refused_config(path, tmp_path, capfd, "at most 256 KiB")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_config_is_refused_without_blocking(tmp_path, capfd):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    refused_config(fifo, tmp_path, capfd, "not a regular file")


def test_a_folder_as_config_is_refused(tmp_path, capfd):
    refused_config(tmp_path, tmp_path, capfd, "not a regular file")


def test_every_yaml_the_project_ships_passes_the_strict_loader():
    from x2ct import catalog

    shipped = sorted(cfg.CONFIG_FOLDER.glob("*.yaml")) + sorted(catalog.SHIPPED_FOLDER.glob("*/training.yaml"))
    assert len(shipped) >= 16
    for path in shipped:
        cfg.load(path)


VALID = cfg.load("x2ct-gan-tiny").to_dict()
VALID["model"], VALID["critic"] = {"growth": 4}, {"channels": 4}
FIELDS = [(section, key) for section, values in VALID.items() if isinstance(values, dict) for key in values]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
    | st.sampled_from([0, 1, -1, 2**63, 1e39, 1e-300, "tiny", "x2ct", "1e5"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "lr", "view_size", "growth"]), children, max_size=2),
    max_leaves=6)


@settings(max_examples=300, deadline=None, database=None)  # no .hypothesis folder in the repository
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=3))
def test_generated_values_in_any_field_give_a_valid_config_or_one_input_error(changes):
    """Hostile values (wrong types, NaN, huge numbers, nesting) in any fields of a valid config."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    for (section, key), value in changes:
        data[section][key] = value
    try:
        config = cfg.from_dict(data)
    except InputError as error:
        assert "\n" not in str(error) and len(str(error)) < 600
        return
    for name, interval in cfg.RANGES.items():  # whatever passed is inside its range
        value = getattr(getattr(config, name.split(".")[0]), name.split(".")[1])
        assert value is None or cfg.inside(value, interval), name


def test_the_slicer_set_up_check_reads_a_run_config_with_the_strict_loader(tmp_path):
    """The Training panel checks a run to resume before starting it: a hostile config.yaml there is one problem."""
    from x2ct import training_setup
    from x2ct.training import checkpoint

    out = tmp_path / "run"
    (out / "checkpoints" / "step-0000002").mkdir(parents=True)
    (out / "checkpoints" / "step-0000002" / checkpoint.STATE).write_bytes(b"")
    (out / checkpoint.LATEST).write_text('{"step": 2, "folder": "checkpoints/step-0000002"}')
    (out / "config.yaml").write_text(alias_bomb())
    problems = training_setup.run_problems(out, "x2ct-cnn", "tiny", resume=True)
    assert len(problems) == 1 and "anchors and aliases" in problems[0]
