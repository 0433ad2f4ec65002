"""Model catalog: shipped manifest and schema, user models folder, import with checksum check."""

import json

import pytest

from x2ct import catalog
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.modelfile import WEIGHTS_NAME, save_model
from x2ct.models import build


@pytest.fixture
def models_env(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(catalog.MODELS_ENV, str(folder))
    return folder


@pytest.fixture
def model_folder(tmp_path):
    folder = tmp_path / "Tiny-GAN"
    save_model(build("x2ct-gan", "tiny"), folder, {"training_data": "none (test)", "licence": "Apache-2.0",
                                                   "metrics": {"psnr": 1.0}, "description": "a tiny test net"})
    return folder


def _entry(**changes):
    item = {"id": "x2ct-gan-lidc", "folder": "x2ct-gan-lidc", "sha256": "0" * 64, "description": "d",
            "views_required": ["frontal", "lateral"], "training_data": "LIDC-IDRI", "metrics": {},
            "licence": "Apache-2.0", "intended_use": "research"}
    item.update(changes)
    return item


def test_shipped_manifest_validates_against_its_schema():
    data = catalog.read_manifest()
    assert all((catalog.SHIPPED_FOLDER / entry["folder"]).is_dir() for entry in data["models"])
    schema = json.loads(catalog.SCHEMA.read_text())
    assert catalog.validate(data, schema) == []
    assert catalog.validate({"catalog_version": 1, "models": [_entry()]}, schema) == []


@pytest.mark.parametrize("changes, problem", [
    ({"sha256": "abc"}, "does not match"),
    ({"views_required": []}, "at least 1"),
    ({"licence": ""}, "must not be empty"),
    ({"extra": 1}, "unknown field 'extra'"),
    ({"metrics": []}, "type object"),
])
def test_schema_check_finds_bad_entries(changes, problem):
    schema = json.loads(catalog.SCHEMA.read_text())
    problems = catalog.validate({"catalog_version": 1, "models": [_entry(**changes)]}, schema)
    assert problems and problem in problems[0]
    missing = _entry()
    del missing["licence"]
    assert "lacks 'licence'" in catalog.validate({"catalog_version": 1, "models": [missing]}, schema)[0]


def test_invalid_manifest_is_refused(tmp_path):
    bad = tmp_path / "Models.json"
    bad.write_text(json.dumps({"catalog_version": 1, "models": [{"id": "x"}]}))
    with pytest.raises(InputError, match="invalid"):
        catalog.read_manifest(bad)


def test_builtin_baseline_is_listed_and_found(models_env):
    entry = catalog.find("back-projection")
    assert entry.source == "builtin" and entry.views_required == ("frontal",)
    with pytest.raises(InputError, match="Unknown model id 'nope'.*back-projection"):
        catalog.find("nope")


def test_user_folder_default_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv(catalog.MODELS_ENV, raising=False)
    assert catalog.user_folder().parts[-4:] == (".local", "share", "x2ct", "models")
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path))
    assert catalog.user_folder() == tmp_path


def test_import_copies_a_checked_model_and_lists_its_facts(models_env, model_folder):
    entry = catalog.import_model(model_folder)
    assert entry.id == "tiny-gan" and entry.folder == models_env / "tiny-gan"
    assert (models_env / "tiny-gan" / WEIGHTS_NAME).read_bytes() == (model_folder / WEIGHTS_NAME).read_bytes()
    found = catalog.find("tiny-gan")
    assert found.source == "user" and found.views_required == ("frontal", "lateral")
    assert (found.description, found.training_data, found.licence) == ("a tiny test net", "none (test)",
                                                                       "Apache-2.0")
    assert found.metrics == {"psnr": 1.0} and found.intended_use == "research use only"
    with pytest.raises(InputError, match="already exists"):
        catalog.import_model(model_folder)
    assert catalog.import_model(model_folder, overwrite=True).id == "tiny-gan"
    with pytest.raises(InputError, match="taken by a built-in"):
        catalog.import_model(model_folder, model_id="back-projection")
    with pytest.raises(InputError, match="lower-case"):
        catalog.import_model(model_folder, model_id="Bad Id")


def test_import_refuses_tampered_weights(models_env, model_folder):
    weights = model_folder / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        catalog.import_model(model_folder)
    assert not models_env.exists() or not any(models_env.iterdir())


def test_import_refuses_a_pickle_even_when_its_checksum_matches(models_env, model_folder):
    import torch

    from x2ct.checksum import sha256_file

    weights = model_folder / WEIGHTS_NAME
    torch.save({"weight": torch.zeros(2)}, weights)  # a pickle under the safetensors name
    card_path = model_folder / "model.json"
    card = json.loads(card_path.read_text())
    card["sha256"] = sha256_file(weights)
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a safetensors weights file"):
        catalog.import_model(model_folder)
    assert not models_env.exists() or not any(models_env.iterdir())


def test_cli_catalog_list_and_import(models_env, model_folder, capsys):
    assert main(["catalog", "import", str(model_folder), "--id", "mine"]) == 0
    assert "imported mine" in capsys.readouterr().out
    assert main(["catalog", "list", "--json"]) == 0
    records = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    shipped = {entry["id"] for entry in catalog.read_manifest()["models"]}
    assert set(records) == {"back-projection", "mine"} | shipped
    assert records["mine"]["licence"] == "Apache-2.0"
    assert main(["catalog", "import", str(model_folder), "--id", "mine"]) == 2
    assert "already exists" in capsys.readouterr().err
