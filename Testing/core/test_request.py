"""x2ct.request: the rules of a reconstruction request, one place for the CLI, the Slicer panel and the console."""

from __future__ import annotations

import pytest

from x2ct import request
from x2ct.errors import InputError


def test_view_counts_name_the_accepted_views_and_take_the_callers_hint():
    assert request.view_count_problem("m", (2,), 2) is None
    assert request.view_count_problem("m", (2,), 1) == ("Model m needs 2 views (frontal, lateral) but got 1: "
                                                        "give 2 views.")
    assert request.view_count_problem("m", (1,), 2, "clear the lateral X-ray.") == (
        "Model m needs 1 view (frontal) but got 2: clear the lateral X-ray.")
    assert "needs 1 to 8 views" in request.view_count_problem("b", range(1, 9), 9)
    assert "needs 1 or 2 views" in request.view_count_problem("b", (1, 2), 3)


@pytest.mark.parametrize("samples, generative, wanted", [
    (1, False, None), (4, True, None), (32, True, None), (0, True, "whole number from 1 to 32"),
    (33, True, "whole number from 1 to 32, got 33"), (2.5, True, "whole number"), (True, True, "whole number"),
    (2, False, "deterministic"),
])
def test_samples_rule(samples, generative, wanted):
    problem = request.samples_problem("m", generative, samples)
    assert problem is None if wanted is None else wanted in problem


@pytest.mark.parametrize("seed, fine", [(None, True), (0, True), (-5, True), (2**64 - 1, True), (2**64, False),
                                        (-2**63 - 1, False), (1.5, False), (True, False)])
def test_seed_rule(seed, fine):
    assert (request.seed_problem(seed) is None) == fine


def test_torch_device_checks_the_name_and_this_machine():
    assert request.torch_device("cpu") == "cpu"
    assert request.torch_device("auto") == ("cuda" if "cuda" in request.available_devices() else "cpu")
    with pytest.raises(InputError, match="Unknown device 'gpu'"):
        request.torch_device("gpu")
    for device in ("cuda", "mps"):
        if device not in request.available_devices():
            with pytest.raises(InputError, match=f"Device {device} is not available on this machine"):
                request.torch_device(device)


def test_devices_outputs_and_angles():
    assert request.device_problem("cuda") is None and "choose one of auto, cpu, cuda, mps" in request.device_problem("gpu")
    assert request.available_devices()[:2] == ["auto", "cpu"]
    assert request.output_problem(None, ["a"]) is None and request.output_problem("b", ["a", None]) is None
    assert "never an input" in request.output_problem("a", [None, "a"])
    assert request.same_angle_problem([0, 90, None]) is None
    assert "(0, 90, 0 deg)" in request.same_angle_problem([0, 90, 360])


def test_a_request_lists_every_problem_and_check_raises_them_together():
    facts = request.ModelFacts("m", "user", None, "abc", (2,), False)
    asked = request.Request(facts, views=1, device="gpu", samples=3, output="x1", inputs=("x1",),
                            view_hint="select a lateral X-ray.")
    assert len(asked.problems()) == 4
    with pytest.raises(InputError, match="select a lateral X-ray.*gpu.*deterministic.*never an input"):
        asked.check()
    request.Request(facts, views=2).check()


def test_model_facts_come_from_the_card_without_hashing_the_weights(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from x2ct import modelfile
    from x2ct.models import build

    builtin = request.model_facts("back-projection")
    assert builtin.sha256 == request.NO_WEIGHTS and builtin.view_counts == tuple(range(1, 9))
    assert not builtin.generative
    folder = tmp_path / "tiny"
    modelfile.save_model(build("x2ct-cnn", "tiny"), folder)
    monkeypatch.setattr(modelfile, "sha256_file", lambda path: pytest.fail("the weights were hashed"))
    facts = request.model_facts(folder)
    assert (facts.id, facts.source, facts.view_counts, facts.generative) == ("tiny", "folder", (2,), False)
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="Weights file .* missing"):
        request.model_facts(folder)
