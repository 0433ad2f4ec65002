"""The models shipped in Resources/Models: catalog, checksums, sizes, cards, a plausible CT from the chest DRRs."""

import shutil

import numpy as np
import pytest

from x2ct import catalog, inference, metrics, physics
from x2ct.data.protocol import X2CT
from x2ct.errors import InputError
from x2ct.io import read_ct
from x2ct.modelfile import WEIGHTS_NAME, load_model, read_card
from x2ct.sampledata import fetch
from x2ct.shipping import MAX_FILE_BYTES, MAX_TOTAL_BYTES, MODELS

ENTRIES = catalog.read_manifest()["models"]
IDS = [entry["id"] for entry in ENTRIES]


def test_every_model_of_the_issue_is_shipped():
    assert set(IDS) == set(MODELS)
    methods = {read_card(catalog.SHIPPED_FOLDER / entry["folder"])["name"] for entry in ENTRIES}
    assert {"repeat-concat", "x2ct-cnn", "duolift-cnn", "henzler", "code-diffusion"} <= methods


def test_weights_within_size_limits():
    sizes = [(catalog.SHIPPED_FOLDER / e["folder"] / WEIGHTS_NAME).stat().st_size for e in ENTRIES]
    assert max(sizes) <= MAX_FILE_BYTES
    assert sum(sizes) <= MAX_TOTAL_BYTES


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_card_says_what_a_user_must_know(entry):
    card = read_card(catalog.SHIPPED_FOLDER / entry["folder"])
    assert card["sha256"] == entry["sha256"]
    assert "Research use only, not for diagnosis" in card["intended_use"]
    assert card["research_use_only"] is True
    training = card["training"]
    assert training["steps"] >= 1 and training["seconds"] > 0 and "no GPU" in training["hardware"]
    assert "simulate" in card["training_data"] and "held out" in card["training_data"]
    assert card["output_size"] == X2CT.size and "resampled" in card["output_note"]
    assert card["limitations"] and card["licence"]
    test = card["metrics"]["test"]["plain"]
    assert np.isfinite(test["honest_psnr"]) and np.isfinite(test["x2ct_psnr_3d"])
    assert card["weights_dtype"] == card["weights_precision"]["stored"]
    assert card["views"] == entry["views_required"]


@pytest.mark.parametrize("model_id", IDS)
def test_loads_with_checksum_verified(model_id):
    loaded = inference.load(model_id)
    assert loaded.card["sha256"] == next(e["sha256"] for e in ENTRIES if e["id"] == model_id)
    assert sum(p.numel() for p in loaded.model.parameters()) == loaded.card["training"]["parameters"]


def test_tampered_copy_is_refused(tmp_path):
    source = catalog.SHIPPED_FOLDER / ENTRIES[0]["folder"]
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    weights = copy / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        load_model(copy)


@pytest.fixture(scope="module")
def chest():
    """The sample chest CT on the 128^3 protocol grid and its frontal and lateral X2CT-mode DRRs."""
    truth = X2CT.resample(read_ct(fetch("chest-ct")["chest-ct.nii.gz"]))
    xrays = {view: physics.drr(truth, view, mode="x2ct", x2ct_size=physics.X2CT_GEOMETRY.pixels[0])
             for view in ("frontal", "lateral")}
    baseline = inference.reconstruct([xrays["frontal"], xrays["lateral"]], "back-projection", device="cpu")
    floor = metrics.evaluate_volumes(baseline.volume, truth)["honest"]["psnr_db"]
    return truth, xrays, floor


@pytest.mark.parametrize("model_id", IDS)
def test_reconstructs_a_plausible_chest(model_id, chest):
    truth, xrays, floor = chest
    views = [xrays[name] for name in catalog.find(model_id).views_required]
    volume = inference.reconstruct(views, model_id, device="cpu").volume
    assert volume.shape == truth.shape and np.allclose(volume.spacing, truth.spacing)
    hu = volume.array
    assert np.isfinite(hu).all()
    front = np.median(hu[:, :8])  # the 20 mm in front of the chest: air
    middle = np.median(hu[:, 40:90, 40:90])  # the middle of the chest: tissue and lungs
    assert front < -900 and middle > front + 300
    honest = metrics.evaluate_volumes(volume, truth)["honest"]["psnr_db"]
    assert honest > floor + 3.0  # far above back-projection without training
