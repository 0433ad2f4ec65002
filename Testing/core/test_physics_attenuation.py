"""HU <-> attenuation: water, air, clamping, both array kinds, and Plastimatch's own conversion."""

import numpy as np
import pytest
import torch

from x2ct.physics import MU_WATER, hu_to_mu, mu_to_hu, plastimatch_mu


def test_water_and_air_and_bone():
    mu = hu_to_mu(np.array([-1000.0, 0.0, 1000.0]))
    assert np.allclose(mu, [0.0, MU_WATER, 2 * MU_WATER])
    assert 0.018 < MU_WATER < 0.023  # water at diagnostic energies (50-80 keV), per mm


def test_below_air_is_clamped_to_zero_for_numpy_and_torch():
    hu = [-3024.0, -2048.0, -1024.0, -1000.0]
    assert (hu_to_mu(np.array(hu)) == 0).all()
    mu = hu_to_mu(torch.tensor(hu))
    assert isinstance(mu, torch.Tensor) and (mu == 0).all()


@pytest.mark.parametrize("kind", [np.array, torch.tensor])
def test_round_trip_above_air(kind):
    hu = kind([-999.0, -500.0, 0.0, 40.0, 1500.0, 3000.0])
    back = mu_to_hu(hu_to_mu(hu))
    assert np.allclose(np.asarray(back), np.asarray(hu), atol=1e-3)


def test_custom_water_coefficient():
    assert float(hu_to_mu(0.0, mu_water=0.03)) == pytest.approx(0.03)
    assert float(mu_to_hu(0.06, mu_water=0.03)) == pytest.approx(1000.0)


def test_gradient_flows_through_torch_conversion():
    hu = torch.tensor([-2000.0, 0.0, 500.0], requires_grad=True)
    hu_to_mu(hu).sum().backward()
    assert hu.grad[0] == 0 and hu.grad[1] == pytest.approx(MU_WATER / 1000)


def test_plastimatch_conversion_cuts_at_minus_800():
    hu = np.array([-1000.0, -800.0, -799.0, 0.0, 1000.0])
    expected = [0.0, 0.0, 0.022 * 0.201, 0.022, 0.044]
    assert np.allclose(plastimatch_mu(hu), expected)
    assert np.allclose(plastimatch_mu(torch.tensor(hu)).numpy(), expected)
