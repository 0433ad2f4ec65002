"""Hostile model folders: cards and weights that must never be imported, loaded or run.

Each is refused by ``catalog import`` and by ``reconstruct --model FOLDER``
alike (one check, ``x2ct.modelfile.check_model``): exit 2, one line, nothing
installed or written. Cards are also fuzzed with hypothesis: any JSON value
in any card field gives a card or one InputError line, never a crash.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from hostile import refused, snapshot, tiny_model, xray_views
from x2ct import catalog
from x2ct.checksum import sha256_file
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.modelfile import read_card


@pytest.fixture
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(catalog.MODELS_ENV, str(folder))
    return folder


@pytest.fixture
def work(tmp_path, user_models):
    views = xray_views(tmp_path)
    return {"root": tmp_path, "model": tiny_model(tmp_path / "gan"), **views}


def _reconstruct(work, model, out):
    return ["reconstruct", "--view", f"{work['frontal']}:frontal", "--view", f"{work['lateral']}:lateral",
            "--model", model, "--out", out, "--device", "cpu"]


def _edit_weights(folder, change):
    """Rewrite the folder's weights through ``change(state)`` and give the card their new sha256."""
    state = change(load_file(str(folder / "model.safetensors")))
    save_file(state, str(folder / "model.safetensors"))
    _edit_card(folder, sha256=sha256_file(folder / "model.safetensors"))


def _edit_card(folder, **fields):
    card = json.loads((folder / "model.json").read_text())
    card.update(fields)
    (folder / "model.json").write_text(json.dumps(card))


def _first_float(state):
    return next(name for name, tensor in state.items() if tensor.is_floating_point() and tensor.numel() > 1)


def _set(state, name, tensor):
    state[name] = tensor
    return state


WEIGHTS = {
    "nan": (lambda s: _set(s, _first_float(s), torch.full_like(s[_first_float(s)], float("nan"))), "NaN"),
    "inf": (lambda s: _set(s, _first_float(s), torch.full_like(s[_first_float(s)], float("inf"))), "infinite"),
    "bool": (lambda s: _set(s, _first_float(s), s[_first_float(s)] > 0), "stored as bool"),
    "int8": (lambda s: _set(s, _first_float(s), s[_first_float(s)].to(torch.int8)), "stored as int8"),
    "shape": (lambda s: _set(s, _first_float(s), torch.zeros(3, 3)), "shape"),
    "missing": (lambda s: {n: t for n, t in s.items() if n != _first_float(s)}, "missing"),
    "extra": (lambda s: _set(s, "payload.weight", torch.zeros(2)), "unexpected"),
}


@pytest.mark.parametrize("case", sorted(WEIGHTS))
def test_weights_that_can_never_load_are_refused_at_import_and_at_run(work, user_models, case, capfd):
    change, words = WEIGHTS[case]
    _edit_weights(work["model"], change)
    refused(["catalog", "import", work["model"]], capfd, work["root"], words)
    refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"], words)
    assert not user_models.exists()


def test_a_network_that_outputs_nan_writes_nothing(work, capfd):
    """Finite but absurd weights overflow to Inf/NaN in the network: the output is refused, not written."""
    _edit_weights(work["model"], lambda s: {n: (t * 0 + 3e38) if t.is_floating_point() else t for n, t in s.items()})
    refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"],
            "NaN or infinite values", "nothing was written")


@pytest.mark.parametrize("weights", ["../model.safetensors", "/etc/hostname", "sub/model.safetensors", ".."])
def test_weights_outside_the_folder_are_refused_by_import_and_run_alike(work, weights, capfd):
    shutil.copy(work["model"] / "model.safetensors", work["root"] / "model.safetensors")
    _edit_card(work["model"], weights=weights)
    first = refused(["catalog", "import", work["model"]], capfd, work["root"], "weights")
    second = refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"], "weights")
    assert first.split("error: ")[1] == second.split("error: ")[1]  # the same rule, the same words


def test_weights_linked_from_outside_the_folder_are_refused(work, capfd):
    outside = work["root"] / "elsewhere.safetensors"
    (work["model"] / "model.safetensors").rename(outside)
    (work["model"] / "model.safetensors").symlink_to(outside)
    refused(["catalog", "import", work["model"]], capfd, work["root"], "outside its model folder")
    refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"], "outside")


CARDS = {
    "name-is-a-number": ({"name": 7}, "type string"),
    "view-size-text": ({"view_size": "64"}, "type integer"),
    "volume-size-huge": ({"volume_size": 10 ** 9}, "<= 512"),
    "preset-unknown": ({"preset": "giant"}, "must be one of"),
    "long-description": ({"description": "x" * 5000}, "longer than 2000"),
    "override-unknown": ({"overrides": {"evil": 1}}, "not an argument"),
    "override-type": ({"overrides": {"view_size": "many"}}, "wrong type"),
    "override-huge": ({"overrides": {"view_size": 10 ** 7}}, "out of range"),
    "override-list": ({"overrides": {"dense_blocks": [1, "x"]}}, "wrong type"),
    "sha-malformed": ({"sha256": "abc"}, "does not match"),
    "view-counts-bool": ({"view_counts": [True]}, "type integer"),
}


@pytest.mark.parametrize("case", sorted(CARDS))
def test_hostile_card_fields_are_refused_before_any_allocation(work, user_models, case, capfd):
    fields, words = CARDS[case]
    _edit_card(work["model"], **fields)
    refused(["catalog", "import", work["model"]], capfd, work["root"], words)
    refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"], words)
    assert not user_models.exists()


RAW_CARDS = {
    "50-megabyte-name": (lambda card: json.dumps({**card, "name": "n" * (50 * 2**20)}).encode(), "MiB"),
    "deep-nesting": (lambda card: b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    "duplicate-keys": (lambda card: json.dumps(card)[:-1].encode() + b', "name": "henzler"}', "duplicate key"),
    "nan-literal": (lambda card: json.dumps({**card, "view_size": float("nan")}).encode(), "not valid JSON"),
    "not-utf8": (lambda card: json.dumps(card).encode().replace(b"tiny test", b"tiny \xff test"), "UTF-8"),
    "not-an-object": (lambda card: b"[1, 2, 3]", "JSON object"),
    "truncated": (lambda card: json.dumps(card).encode()[:50], "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(RAW_CARDS))
def test_hostile_card_files_are_refused(work, user_models, case, capfd):
    make, words = RAW_CARDS[case]
    card = json.loads((work["model"] / "model.json").read_text())
    (work["model"] / "model.json").write_bytes(make(card))
    message = refused(["catalog", "import", work["model"]], capfd, work["root"], words)
    assert len(message) < 600
    refused(_reconstruct(work, work["model"], work["root"] / "ct.nrrd"), capfd, work["root"], words)


def test_a_model_folder_whose_name_is_not_utf8(work, capfd):
    odd = work["root"] / os.fsdecode(b"mod\xe8le")
    work["model"].rename(odd)
    refused(["catalog", "import", odd, "--id", "odd"], capfd, work["root"], "not valid UTF-8")
    refused(_reconstruct(work, odd, work["root"] / "ct.nrrd"), capfd, work["root"], "not valid UTF-8")


def test_a_card_that_is_a_fifo_is_refused_without_hanging(work, capfd):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    (work["model"] / "model.json").unlink()
    os.mkfifo(work["model"] / "model.json")
    refused(["catalog", "import", work["model"]], capfd, work["root"], "not a regular file")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False,
                                                                                   allow_infinity=False)
                           | st.text(max_size=40), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
CARD_FIELDS = ["name", "preset", "overrides", "view_counts", "view_size", "volume_size", "output_size", "protocol",
               "weights", "sha256", "description", "metrics", "research_use_only"]


@settings(max_examples=150, deadline=None, database=None,  # no .hypothesis folder in the repository
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(CARD_FIELDS), value=JSON_VALUES)
def test_fuzzed_card_fields_give_a_card_or_one_line(work, field, value):
    """Any JSON value in any field: read_card returns, or raises one short InputError line; nothing else."""
    card_path = work["model"] / "model.json"
    card = json.loads(card_path.read_text()) if card_path.stat().st_size else {}
    card[field] = value
    card_path.write_text(json.dumps(card))
    try:
        card = read_card(work["model"])
        from x2ct.modelfile import build_from_card

        build_from_card(card, "meta")
    except InputError as error:
        assert len(str(error).splitlines()) == 1 and len(str(error)) < 1000
    finally:
        tiny = json.loads(card_path.read_text())
        tiny.pop(field, None)
        card_path.write_text(json.dumps(tiny))


def test_one_broken_user_card_affects_only_itself(work, user_models, capfd):
    assert main(["catalog", "import", str(work["model"]), "--id", "good"]) == 0
    assert main(["catalog", "import", str(work["model"]), "--id", "bad"]) == 0
    (user_models / "bad" / "model.json").write_text('{"name": 7}')
    capfd.readouterr()
    assert main(["catalog", "list"]) == 0
    listing = capfd.readouterr().out
    assert "bad [user, broken]:" in listing and "good [user]" in listing and "x2ct-cnn-2v [shipped]" in listing
    out = work["root"] / "from-good.nrrd"
    assert main([str(a) for a in _reconstruct(work, "good", out)]) == 0 and out.is_file()
    assert catalog.find("x2ct-cnn-2v").source == "shipped" and catalog.find("back-projection").source == "builtin"
    refused(_reconstruct(work, "bad", work["root"] / "from-bad.nrrd"), capfd, work["root"], "'bad' cannot run")


def test_a_failed_import_installs_nothing(work, user_models, capfd):
    assert main(["catalog", "import", str(work["model"]), "--id", "kept"]) == 0
    before = snapshot(user_models)
    _edit_weights(work["model"], WEIGHTS["nan"][0])
    refused(["catalog", "import", work["model"], "--id", "kept", "--overwrite"], capfd, work["root"], "NaN")
    refused(["catalog", "import", work["model"], "--id", "new"], capfd, work["root"], "NaN")
    assert snapshot(user_models) == before
    np.testing.assert_equal(sorted(p.name for p in user_models.iterdir()), ["kept"])
