"""Model files: safetensors weights + card, checksum verified, pickles refused."""

import json
import pickle

import pytest
import torch

from x2ct.errors import InputError
from x2ct.modelfile import CARD_NAME, WEIGHTS_NAME, load_model, save_model
from x2ct.models import build


@pytest.fixture
def saved(tmp_path):
    model = build("repeat-concat", "tiny").eval()
    save_model(model, tmp_path, {"training_data": "none (test)"})
    return model, tmp_path


def test_round_trip_gives_the_same_network(saved):
    model, folder = saved
    loaded, card = load_model(folder)
    views = torch.rand(1, 2, model.spec.view_size, model.spec.view_size)
    with torch.no_grad():
        assert torch.equal(model(views), loaded(views))
    assert card["name"] == "repeat-concat" and card["training_data"] == "none (test)"
    assert not list(folder.glob(".*partial"))


def test_tampered_weights_are_refused(saved):
    _, folder = saved
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    data[-1] ^= 0xFF
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        load_model(folder)


def test_pickle_offered_as_weights_is_refused_without_running_it(saved, tmp_path):
    _, folder = saved

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle code ran')",))

    payload = pickle.dumps({"w": Boom()})
    (folder / WEIGHTS_NAME).write_bytes(payload)
    card = json.loads((folder / CARD_NAME).read_text())
    card["sha256"] = __import__("hashlib").sha256(payload).hexdigest()
    (folder / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a safetensors weights file"):
        load_model(folder)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = build("repeat-concat", "tiny")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(InputError, match="non-finite"):
        save_model(model, tmp_path)
    assert not (tmp_path / WEIGHTS_NAME).exists() and not (tmp_path / CARD_NAME).exists()


def test_missing_card_message(tmp_path):
    with pytest.raises(InputError, match="No model card"):
        load_model(tmp_path)
