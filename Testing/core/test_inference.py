"""Inference: model loading, view preparation as in training, devices, HU output, fusion, samples."""

import numpy as np
import pytest
import torch

from x2ct import catalog, inference
from x2ct.errors import InputError
from x2ct.image import XRay
from x2ct.modelfile import WEIGHTS_NAME, save_model
from x2ct.models import build


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "no-models"))


@pytest.fixture
def gan_folder(tmp_path):
    folder = tmp_path / "gan"
    save_model(build("x2ct-gan", "tiny"), folder)
    return folder


def _xray(view="frontal", size=64, spacing=None):
    rng = np.random.default_rng(1)
    image = rng.random((size, size)).astype(np.float32)
    source = {"pixel_spacing_source": "file"} if spacing else {"pixel_spacing_source": "assumed 1 mm"}
    return XRay(image, spacing or (1.0, 1.0), view, metadata={"source": f"{view}.png", **source})


def test_prepare_view_normalises_like_the_drrs_and_crops_the_physical_field():
    # A 1000 mm radiograph with a bright 250 mm square in its centre; X2CT magnification given explicitly:
    # the detector field is 500 mm, so the square covers the middle half of the view.
    image = np.zeros((1000, 1000), np.float32)
    image[375:625, 375:625] = 1.0
    xray = XRay(image, (1.0, 1.0), "frontal", sad=541.0, sid=949.0, metadata={"pixel_spacing_source": "file"})
    view, notes = inference.prepare_view(xray, 32, kind="drr")
    assert view.shape == (32, 32) and view.dtype == np.float32
    assert view.min() == 0.0 and view.max() == pytest.approx(1.0, abs=1e-3)
    bright = np.where(view[16] > 0.5)[0]
    assert bright.min() in (7, 8) and bright.max() in (23, 24)
    assert notes == []
    # Twice the SID at the same SAD magnifies twice: the same detector image now covers half the field.
    doubled = XRay(image, (1.0, 1.0), "frontal", sad=541.0, sid=1898.0, metadata={"pixel_spacing_source": "file"})
    wide, _ = inference.prepare_view(doubled, 32, kind="drr")
    assert (wide[16] > 0.5).sum() == pytest.approx(len(bright) / 2, abs=1)


def test_unknown_spacing_fits_the_image_and_says_so():
    image = np.zeros((40, 80), np.float32)
    image[:, 40:] = 1.0
    xray = XRay(image, (1.0, 1.0), "frontal", metadata={"pixel_spacing_source": "assumed 1 mm", "source": "a.png"})
    view, notes = inference.prepare_view(xray, 16, kind="drr")
    assert "pixel spacing unknown" in notes[0] and "a.png" in notes[0]
    assert view[0].max() == 0.0  # padded rows (the image is fitted into the square)
    assert view[8, :7].max() < 0.1 and view[8, 9:].min() > 0.9


def test_blank_view_is_refused():
    with pytest.raises(InputError, match="blank"):
        inference.prepare_view(XRay(np.ones((8, 8)), metadata={"pixel_spacing_source": "file"}), 16)


def test_views_are_ordered_and_missing_lateral_is_named():
    spec = build("x2ct-gan", "tiny").spec
    frontal, lateral = _xray("frontal"), _xray("lateral")
    assert inference.order_views([lateral, frontal], spec) == [frontal, lateral]
    with pytest.raises(InputError, match="needs 2 view.*frontal, lateral.*lateral"):
        inference.order_views([frontal], spec)
    with pytest.raises(InputError, match="same angle"):
        inference.order_views([frontal, _xray("frontal")], spec)


def test_output_state_is_centred_with_protocol_spacing():
    state = inference.output_state("x2ct", 16)
    assert state.spacing == (20.0,) * 3 and (state.hu_low, state.hu_high) == (-1024.0, 1476.0)
    centre = np.asarray(state.origin) + np.reshape(state.direction, (3, 3)) @ np.full(3, 7.5 * 20.0)
    assert np.allclose(centre, 0.0)


def test_reconstruct_with_a_saved_model_gives_hu_and_reports_progress(gan_folder):
    seen = []
    result = inference.reconstruct([_xray("lateral"), _xray("frontal")], gan_folder, device="cpu",
                                   progress=lambda f, s: seen.append((f, s)))
    model = inference.load(gan_folder).model
    with torch.no_grad():
        expected = model(torch.from_numpy(result.views)[None], torch.tensor([[0.0, 90.0]]))
    assert result.angles == (0.0, 90.0) and result.model_id == "gan"
    assert result.volume.shape == (16, 16, 16) and result.volume.spacing == (20.0,) * 3
    assert np.allclose(result.volume.array, expected[0, 0].numpy() * 2500.0 - 1024.0, atol=1e-3)
    assert result.uncertainty is None
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_back_projection_runs_by_id_without_weights():
    image = np.zeros((64, 64), np.float32)
    image[:, 40:48] = 1.0  # a vertical bar right of centre: patient's left side, +axis 2
    xray = XRay(image, (1.0, 1.0), "frontal", metadata={"pixel_spacing_source": "assumed"})
    result = inference.reconstruct([xray], "back-projection", device="cpu", input_kind="drr")  # geometry only
    array = result.volume.array  # canonical (k, j, i): axis 2 runs right -> left
    assert array.shape == (128, 128, 128)
    profile = array[64, 64]
    assert profile[80:96].mean() > 1000.0 and profile[:64].max() == pytest.approx(-1024.0, abs=1.0)
    assert np.allclose(array[:, 0], array[:, 127])  # constant along the frontal rays


def test_fusion_makes_the_volume_reproduce_its_views(gan_folder):
    """The fused CT's X2CT-mode DRRs (cone beam, as the views were made) match the prepared views better."""
    from x2ct import physics

    xrays = [_xray("frontal"), _xray("lateral")]
    plain = inference.reconstruct(xrays, gan_folder, device="cpu")
    fused = inference.reconstruct(xrays, gan_folder, device="cpu", fusion=True)
    assert any(note.startswith("fusion:") for note in fused.notes)

    def correlation(result, v):
        size = result.views.shape[-1]
        drr = physics.drr(result.volume, result.angles[v], mode="x2ct", x2ct_size=size).image
        return np.corrcoef(drr.ravel(), result.views[v].ravel())[0, 1]

    for v in range(2):
        assert correlation(fused, v) > max(0.8, correlation(plain, v) + 0.1)


def test_samples_give_mean_and_uncertainty_for_code_diffusion(tmp_path):
    folder = tmp_path / "cd"
    save_model(build("code-diffusion", "tiny"), folder)
    result = inference.reconstruct([_xray("frontal"), _xray("lateral")], folder, device="cpu", samples=2)
    assert result.uncertainty is not None and result.uncertainty.shape == result.volume.shape
    assert result.uncertainty.array.min() >= 0.0 and result.uncertainty.array.max() > 0.0
    assert result.volume.array.min() >= -1000.0 - 1e-3 and result.volume.array.max() <= 1000.0 + 1e-3


def test_samples_on_a_deterministic_model_are_refused(gan_folder):
    with pytest.raises(InputError, match="deterministic"):
        inference.reconstruct([_xray("frontal"), _xray("lateral")], gan_folder, samples=2)


def test_bad_models_are_refused(gan_folder, tmp_path):
    with pytest.raises(InputError, match="Unknown model id"):
        inference.load("no-such-model")
    weights = gan_folder / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="Checksum mismatch"):
        inference.load(gan_folder)


def test_pickle_offered_as_weights_is_refused(gan_folder):
    import json

    from x2ct.modelfile import CARD_NAME, sha256_file

    pickled = gan_folder / "model.pt"
    torch.save({"w": torch.zeros(1)}, pickled)
    card = json.loads((gan_folder / CARD_NAME).read_text())
    card.update(weights="model.pt", sha256=sha256_file(pickled))
    (gan_folder / CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(InputError, match="not a safetensors"):
        inference.load(gan_folder)


def test_device_choice_and_memory_estimate(monkeypatch):
    model = build("x2ct-gan", "tiny")
    params = sum(p.numel() for p in model.parameters())
    assert inference.estimate_bytes(model, 16, 2) == int(1.25 * (4 * params + 4 * 64 * 16 ** 3 * 2))
    assert inference.choose_device("cpu", model, 16) == ("cpu", "cpu as requested")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    device, reason = inference.choose_device("auto", model, 16)
    assert device == "cpu" and "no CUDA" in reason
    with pytest.raises(InputError, match="not available"):
        inference.choose_device("cuda", model, 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1000, 2000))
    device, reason = inference.choose_device("auto", model, 16)
    assert device == "cpu" and "1000" not in reason and "MiB free" in reason


def test_views_at_angles_the_model_never_saw_are_warned_about():
    from x2ct.inference import untrained_views_note

    two = {"views": ["frontal", "lateral"]}
    assert untrained_views_note("m", two, (0.0, 90.0)) is None
    assert untrained_views_note("m", two, (-3.0, 94.0)) is None  # within 5 degrees
    assert untrained_views_note("m", {}, (45.0,)) is None  # a card without views (built-in, trained here) says nothing
    note = untrained_views_note("m", two, (0.0, 45.0))
    assert note.startswith("WARNING m was trained on frontal and lateral views only (0, 90 deg), not on views at 45")
    assert "not on views at 90 deg" in untrained_views_note("henzler-1v", {"views": ["frontal"]}, (90.0,))
    assert "not on views at 180 deg" in untrained_views_note("m", two, (0.0, 90.0, 180.0))
