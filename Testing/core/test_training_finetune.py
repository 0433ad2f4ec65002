"""Fine-tuning (``train.init_from``): a run starts from a trained model's checked weights, or is refused."""

import pytest
import torch
import yaml

from x2ct.datasources import SIMULATED
from x2ct.errors import InputError
from x2ct.modelfile import load_model
from x2ct.models.registry import PRESETS
from x2ct.training import config as cfg
from x2ct.training import train
from x2ct.training.trainer import Trainer
from x2ct.training_setup import problems, write_config

from test_training_trainer import config, sets


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny x2ct-cnn trained for 2 steps: its model folder."""
    out = tmp_path_factory.mktemp("first")
    train(config("x2ct-cnn", steps=2), out, progress="none", datasets=sets(16, 16))
    return out / "model"


def test_a_fine_tuning_run_starts_from_the_models_weights_and_records_them(trained, tmp_path):
    model, card = load_model(trained)
    trainer = Trainer(cfg.from_dict(config("x2ct-cnn", steps=1, init_from=str(trained))), tmp_path / "a",
                      progress="none", datasets=sets(16, 16))
    for name, value in model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    fresh = Trainer(cfg.from_dict(config("x2ct-cnn", steps=1)), tmp_path / "b", progress="none",
                    datasets=sets(16, 16))
    assert not all(torch.equal(fresh.model.state_dict()[n], v) for n, v in model.state_dict().items())

    summary = train(config("x2ct-cnn", steps=1), tmp_path / "c", progress="none", datasets=sets(16, 16),
                    init_from=str(trained))
    _, tuned = load_model(tmp_path / "c" / "model")
    assert summary["steps"] == 1
    assert tuned["training"]["init_from"] == {"from": str(trained), "sha256": card["sha256"], "steps": 2}
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["train"]["init_from"] == str(trained)


def test_a_resumed_fine_tuning_run_still_names_its_source(trained, tmp_path):
    """The resumed run takes its weights from its checkpoint, not the source, but its card keeps the source."""
    _, card = load_model(trained)
    first = config("x2ct-cnn", steps=1, init_from=str(trained))
    train(first, tmp_path, progress="none", datasets=sets(16, 16))
    train(config("x2ct-cnn", steps=2, init_from=str(trained)), tmp_path, resume=True, progress="none",
          datasets=sets(16, 16))
    _, resumed = load_model(tmp_path / "model")
    assert resumed["training"]["steps"] == 2
    assert resumed["training"]["init_from"] == {"from": str(trained), "sha256": card["sha256"], "steps": 2}


def test_a_path_object_names_a_model_folder_and_anything_else_is_refused(trained, tmp_path):
    """Console users pass pathlib.Path as often as text; a number or an empty name gets a message, not a traceback."""
    config_file = write_config(SIMULATED, "x2ct-cnn", "tiny", 1, tmp_path / "a", PRESETS, trained)
    assert yaml.safe_load(config_file.read_text())["train"]["init_from"] == str(trained)
    for wrong in (123, "  "):
        (problem,) = problems(SIMULATED, "x2ct-cnn", "tiny", 1, tmp_path / "b", False, ["x2ct-cnn"], PRESETS, wrong)
        assert problem.startswith("The model to fine-tune must be a model id or a model folder")
    assert problems(SIMULATED, "x2ct-cnn", "tiny", 1, tmp_path / "b", False, ["x2ct-cnn"], PRESETS, "") == []  # none
    for wrong in (123, ""):
        with pytest.raises(InputError, match="must be a model id or a model folder"):
            train(config("x2ct-cnn", steps=1), tmp_path / "c", progress="none", datasets=sets(16, 16), init_from=wrong)


def test_another_network_unknown_ids_and_changed_weights_are_refused_before_training(trained, tmp_path):
    with pytest.raises(InputError, match="different network .*method 'x2ct-cnn'.*method 'henzler'"):
        train(config("henzler", steps=1), tmp_path / "a", progress="none", datasets=sets(16, 16),
              init_from=str(trained))
    other = config("x2ct-cnn", steps=1)
    other["model"] = {"stem": 4}
    with pytest.raises(InputError, match="different network .*model {}.*model {'stem': 4}"):
        train(other, tmp_path / "b", progress="none", datasets=sets(16, 16), init_from=str(trained))
    with pytest.raises(InputError, match="neither a model folder nor a usable model id"):
        train(config("x2ct-cnn", steps=1), tmp_path / "c", progress="none", datasets=sets(16, 16),
              init_from="no-such-model")
    with pytest.raises(InputError, match="built-in model without trained weights"):
        train(config("x2ct-cnn", steps=1), tmp_path / "d", progress="none", datasets=sets(16, 16),
              init_from="back-projection")
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in trained.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        train(config("x2ct-cnn", steps=1), tmp_path / "e", progress="none", datasets=sets(16, 16),
              init_from=str(copy))
    assert not any((tmp_path / name / "model").exists() for name in "abcde")


def test_a_config_written_to_fine_tune_a_shipped_model_has_its_network_and_views(tmp_path):
    path = write_config("simulated", "x2ct-cnn", "small", 5, tmp_path / "a", PRESETS,
                        init_from="x2ct-cnn-1v")
    written = yaml.safe_load(path.read_text())
    assert written["model"] == {"n_views": 1, "view_size": 64}
    assert written["data"]["angles"] == [0.0]
    assert written["train"]["init_from"] == "x2ct-cnn-1v" and written["train"]["steps"] == 5
    assert cfg.load(path).train.init_from == "x2ct-cnn-1v"
    with pytest.raises(InputError, match="x2ct-cnn network at preset small; choose that method and preset"):
        write_config("simulated", "henzler", "small", 5, tmp_path / "b", PRESETS,
                     init_from="x2ct-cnn-1v")
    assert not (tmp_path / "b" / "config.yaml").exists()
