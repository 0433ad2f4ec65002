"""Baselines on tiny synthetic training sets: retrieval finds the right volume, fits recover known maps."""

import pytest
import torch

from x2ct.errors import InputError
from x2ct.losses import line_integrals
from x2ct.models import baselines
from x2ct.models.base import ReconstructionModel
from x2ct.models.lifting import lift_views

SIDE = 16
ANGLES = [0.0, 90.0]


def _training_set(n: int = 6):
    g = torch.Generator().manual_seed(1)
    volumes = torch.rand(n, 1, SIDE, SIDE, SIDE, generator=g)
    images = line_integrals(volumes, ANGLES)
    views = images / images.amax(dim=(-2, -1), keepdim=True)
    return volumes, views


def test_registry_lists_the_four_baselines_and_refuses_unknown_names():
    assert baselines.names() == ["back-projection", "mean-ct", "nearest-neighbour", "oracle"]
    with pytest.raises(InputError, match="Unknown baseline"):
        baselines.build("median-ct")
    with pytest.raises(InputError, match="training volumes"):
        baselines.build("mean-ct")


def test_nearest_neighbour_returns_the_training_volume_of_its_own_views():
    volumes, views = _training_set()
    model = baselines.build("nearest-neighbour", volumes, views)
    found, index = model(views[[4, 0, 2]])
    assert index.tolist() == [4, 0, 2]
    assert torch.equal(found, volumes[[4, 0, 2]])
    noisy, _ = model(views[[3]] + 0.01 * torch.randn_like(views[[3]]))
    assert torch.equal(noisy, volumes[[3]])
    with pytest.raises(InputError, match="resample"):
        model(views[:1, :, :8, :8])


def test_oracle_returns_the_training_volume_closest_to_the_ground_truth():
    volumes, _ = _training_set()
    oracle = baselines.build("oracle", volumes)
    truth = 0.9 * volumes[[5]] + 0.1 * volumes[[1]]
    found, index = oracle(truth)
    distances = ((volumes - truth) ** 2).flatten(1).sum(1)
    assert index.item() == distances.argmin().item() == 5
    assert torch.equal(oracle(volumes[2])[0], volumes[[2]])  # (N, D, D, D) ground truth accepted too


def test_mean_ct_is_a_reconstruction_model_returning_the_mean():
    volumes, views = _training_set()
    model = baselines.build("mean-ct", volumes, views)
    assert isinstance(model, ReconstructionModel)
    out = model(views[:3], torch.tensor(ANGLES))
    assert out.shape == (3, 1, SIDE, SIDE, SIDE)
    assert torch.allclose(out, volumes.mean(dim=0, keepdim=True).expand(3, -1, -1, -1, -1))
    with pytest.raises(InputError, match="view"):
        model(torch.rand(1, 9, SIDE, SIDE))


def test_back_projection_averages_the_lifted_views():
    model = baselines.build("back-projection", view_size=2 * SIDE, volume_size=SIDE)
    views = torch.rand(2, 2, 2 * SIDE, 2 * SIDE)
    out = model(views, torch.tensor(ANGLES))
    small = torch.nn.functional.interpolate(views, size=(SIDE, SIDE), mode="bilinear", align_corners=False,
                                            antialias=True)
    assert torch.allclose(out, lift_views(small, ANGLES, SIDE).mean(dim=1, keepdim=True))


def test_back_projection_fit_recovers_a_known_affine_map():
    _, views = _training_set()
    truth = 0.7 * lift_views(views, ANGLES, SIDE).mean(dim=1, keepdim=True) - 0.2
    model = baselines.build("back-projection", truth, views, ANGLES)
    assert model.scale.item() == pytest.approx(0.7, abs=1e-5)
    assert model.offset.item() == pytest.approx(-0.2, abs=1e-5)
    assert torch.allclose(model(views, torch.tensor(ANGLES)), truth, atol=1e-5)
    restored = baselines.build("back-projection", view_size=SIDE, volume_size=SIDE)
    restored.load_state_dict(model.state_dict())  # the fitted map travels in the state dict
    assert restored.scale.item() == pytest.approx(0.7, abs=1e-5)


def test_back_projection_fit_refuses_constant_views():
    volumes, views = _training_set()
    with pytest.raises(InputError, match="constant"):
        baselines.build("back-projection", volumes, torch.zeros_like(views), ANGLES)


def test_retrieval_beats_the_mean_on_its_own_training_data():
    volumes, views = _training_set()
    nearest, _ = baselines.build("nearest-neighbour", volumes, views)(views)
    mean = baselines.build("mean-ct", volumes, views)(views, torch.tensor(ANGLES))
    assert torch.mean((nearest - volumes) ** 2) < torch.mean((mean - volumes) ** 2)
