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


# code-diffusion: MONAI's VectorQuantizer keeps ``perplexity`` as a plain tensor attribute, so it is built for real.
@pytest.mark.parametrize("method, builds_again", [("code-diffusion", True), ("duolift-cnn", False),
                                                  ("henzler", False), ("repeat-concat", False), ("x2ct-cnn", False)])
def test_weights_fill_the_meta_network_without_a_second_build(method, builds_again, tmp_path):
    """load_model puts the stored tensors in place of the meta network's (no random initialisation, no
    second build) unless the network keeps tensors outside its state dict; either way the network computes
    exactly what the saved one did."""
    from x2ct.modelfile import build_from_card, materialised, read_card
    from safetensors.torch import load_file

    model = build(method, "tiny").eval()
    save_model(model, tmp_path, {"training_data": "none (test)"})
    card = read_card(tmp_path)

    builds = []

    def second_build():
        builds.append(1)
        return build_from_card(card, "cpu")

    loaded = materialised(build_from_card(card, "meta"), load_file(str(tmp_path / WEIGHTS_NAME)), second_build)
    assert len(builds) == builds_again
    views = torch.rand(1, *model.spec.view_counts[:1], model.spec.view_size, model.spec.view_size)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = model(views)
        torch.manual_seed(0)
        assert torch.equal(expected, loaded.eval()(views))


def test_a_network_with_tensors_outside_its_state_dict_is_built_for_real():
    from x2ct.modelfile import materialised

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.scale = torch.full((2,), 3.0)  # a plain attribute: not saved, so it must come from a real build

    with torch.device("meta"):
        shapes = Scaled()
    state = Scaled().state_dict()
    loaded = materialised(shapes, state, Scaled)
    assert not loaded.scale.is_meta and torch.equal(loaded.scale, torch.full((2,), 3.0))
    assert torch.equal(loaded.linear.weight, state["linear.weight"])
