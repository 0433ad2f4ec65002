"""Beer-Lambert fusion: corrected volumes reproduce their X-rays, stay >= 0, follow density^beta."""

import pytest
import torch
import torch.nn.functional as F

from x2ct.errors import InputError
from x2ct.models.fusion import (beer_lambert_fusion, distribute_along_rays, parallel_projection,
                                projection_residual)
from x2ct.models.lifting import lift_view

D = 24


@pytest.fixture
def phantom():
    """A sparse positive 'truth' and a blurred, noisy guess of it (what a network might give)."""
    truth = torch.rand(1, 1, D, D, D) ** 4
    guess = F.avg_pool3d(truth, 5, 1, 2) + 0.02 * torch.rand(1, 1, D, D, D)
    return truth, guess


def _normalised_drrs(volume, angles):
    views = torch.stack([parallel_projection(volume, a) for a in angles], dim=1)
    return views / views.amax(dim=(-1, -2), keepdim=True)  # our DRR protocol: each view / its max


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0])
def test_projection_is_the_adjoint_of_lifting(angle):
    """<lift(view), volume> = depth * <view, projection(volume)>: the rays are lift_view's rays."""
    view, volume = torch.rand(1, 1, D, D, dtype=torch.float64), torch.rand(1, 1, D, D, D, dtype=torch.float64)
    lhs = (lift_view(view, angle, D) * volume).sum()
    rhs = D * (view[:, 0] * parallel_projection(volume, angle)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0])
def test_one_view_is_reproduced_to_float_precision(phantom, angle):
    truth, guess = phantom
    views = _normalised_drrs(truth, [angle])
    fused = beer_lambert_fusion(guess, views, [angle])
    assert projection_residual(fused, views, [angle]).max() < 1e-6  # float32 rounding of the result
    assert fused.min() >= 0
    assert torch.allclose(fused.sum(), guess.sum(), rtol=1e-5)  # normalised views: mass is kept
    assert (fused - guess).abs().max() > 1e-2  # it did correct something


def test_two_views_converge_to_a_small_residual(phantom):
    """Consistent frontal + lateral views: alternating corrections reach the tolerance in a few sweeps."""
    truth, guess = phantom
    views = _normalised_drrs(truth, [0.0, 90.0])
    before = projection_residual(guess, views, [0.0, 90.0])
    fused = beer_lambert_fusion(guess, views, [0.0, 90.0], tolerance=1e-5)
    after = projection_residual(fused, views, [0.0, 90.0])
    assert before.min() > 0.05
    assert after.max() < 1e-5
    assert fused.min() >= 0
    # the volume moved towards the truth, not away
    assert (fused - truth).pow(2).mean() < (guess - truth).pow(2).mean()


def test_matching_volume_is_left_unchanged(phantom):
    truth, _ = phantom
    views = torch.stack([parallel_projection(truth, a) for a in (0.0, 90.0)], dim=1)
    fused = beer_lambert_fusion(truth, views, [0.0, 90.0], views_are="line_integral", scale=1.0)
    assert torch.allclose(fused, truth, rtol=1e-5, atol=1e-7)
    fused = beer_lambert_fusion(truth, views / views.amax(), [0.0, 90.0])  # scale found by mass matching
    assert torch.allclose(fused, truth, rtol=1e-5, atol=1e-7)


def test_opacity_views_follow_beer_lambert(phantom):
    """Henzler's rendering: view = 1 - exp(-chi * mean density along the ray)."""
    truth, guess = phantom
    chi = 10.0
    opacity = 1 - torch.exp(-chi * parallel_projection(truth, 0.0)).unsqueeze(1)
    fused = beer_lambert_fusion(guess, opacity, [0.0], views_are="opacity", chi=chi)
    rendered = 1 - torch.exp(-chi * parallel_projection(fused, 0.0))
    assert torch.allclose(rendered, opacity[:, 0], atol=1e-6)


def test_views_finer_than_the_volume_give_a_finer_volume(phantom):
    """The paper's point: the X-ray's resolution, the network's depth."""
    truth, guess = phantom
    fine = F.interpolate(_normalised_drrs(truth, [0.0]), size=(48, 40), mode="bilinear")
    fused = beer_lambert_fusion(guess, fine, [0.0])
    assert fused.shape == (1, 1, 48, D, 40)
    assert projection_residual(fused, fine, [0.0]).max() < 1e-6


def test_error_is_shared_in_proportion_to_density_power_beta():
    densities = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    for target, beta in ((8.0, 2.0), (5.0, 2.0), (4.0, 1.0)):
        fused = distribute_along_rays(densities, torch.tensor([target], dtype=torch.float64), beta)
        change = fused - densities
        assert torch.isclose(fused.sum(), torch.tensor(target, dtype=torch.float64))
        assert change[0, 0] == 0  # empty space stays empty
        ratio = change[0, 1:] / densities[0, 1:] ** beta
        assert torch.allclose(ratio, ratio[0].expand(3))


def test_large_removals_empty_the_voxels_that_would_go_negative():
    densities = torch.tensor([[0.1, 0.2, 3.0]], dtype=torch.float64)
    fused = distribute_along_rays(densities, torch.tensor([0.25], dtype=torch.float64), 2.0)
    assert fused.min() >= 0
    assert torch.isclose(fused.sum(), torch.tensor(0.25, dtype=torch.float64))
    assert fused[0, 2] == 0  # the densest voxel took the error first and ran out
    # the rest still follow density^2
    assert torch.isclose((0.1 - fused[0, 0]) / 0.1**2, (0.2 - fused[0, 1]) / 0.2**2)
    empty_ray = distribute_along_rays(torch.zeros(1, 4, dtype=torch.float64), torch.tensor([2.0]).double())
    assert torch.equal(empty_ray, torch.full((1, 4), 0.5, dtype=torch.float64))


def test_bad_input(phantom):
    _, guess = phantom
    views = torch.rand(1, 1, D, D)
    with pytest.raises(InputError, match="multiples of 90"):
        beer_lambert_fusion(guess, views, [45.0])
    with pytest.raises(InputError, match="one angle per view"):
        beer_lambert_fusion(guess, views, [0.0, 90.0])
    with pytest.raises(InputError, match="blank"):
        beer_lambert_fusion(guess, torch.zeros(1, 1, D, D), [0.0])
    with pytest.raises(InputError, match=">= 0"):
        beer_lambert_fusion(guess, -views, [0.0])
    with pytest.raises(InputError, match="views_are"):
        beer_lambert_fusion(guess, views, [0.0], views_are="transmission")
    with pytest.raises(InputError, match=r"\(B, 1, D, H, W\)"):
        beer_lambert_fusion(guess[0], views, [0.0])


# --- cone-beam fusion (views in their own DRR geometry) ------------------------------------------------

CUBE_MM = 320.0


def _cone(pixels):
    from x2ct.physics import X2CT_GEOMETRY

    return X2CT_GEOMETRY.with_pixels(pixels)


def _cone_views(volume, angles, geometry):
    from x2ct.physics import project

    spacing = (CUBE_MM / volume.shape[-1],) * 3
    views = project(volume.double(), spacing, angles, geometry)
    return views / views.amax(dim=(-1, -2), keepdim=True)


def test_cone_beam_fusion_is_henzlers_exact_correction_on_parallel_rays(phantom):
    """Parallel rays through voxel centres, one per voxel row: one sweep equals the ray-by-ray Eq. 2."""
    from x2ct.models.fusion import cone_beam_fusion
    from x2ct.physics import DRRGeometry

    truth, guess = phantom
    spacing = (CUBE_MM / D,) * 3
    parallel = DRRGeometry(beam="parallel", detector_mm=(CUBE_MM, CUBE_MM), pixels=(D, D))
    for angle in (0.0, 90.0):
        views = _normalised_drrs(truth, [angle])
        # beta = 1 never empties a voxel (Eq. 2 removes at most a ray's whole density), so no clipping differs
        exact = beer_lambert_fusion(guess, views, [angle], beta=1.0)
        swept = cone_beam_fusion(guess, views, [angle], spacing, parallel, beta=1.0, iterations=1)
        assert torch.allclose(swept, exact, rtol=1e-4, atol=1e-6)


def test_cone_beam_fusion_places_the_view_in_its_field():
    """A dense block off-centre, seen by the X2CT cone beam: fusing a uniform guess puts it back under its shadow.

    The view covers about 285 mm of the 320 mm cube at the isocentre, magnified 1.35-2.5 across it, so a
    stretched parallel fusion would put the block's shadow in the wrong columns; the cone-beam one must
    reproduce the view itself.
    """
    from x2ct.models.fusion import cone_beam_fusion, cone_beam_residual

    n = 32
    truth = torch.zeros(1, 1, n, n, n)
    truth[:, :, 8:24, 6:26, 6:26] = 0.2  # a body
    truth[:, :, 12:18, 10:16, 19:24] = 1.0  # a dense block on the patient's left (+axis 2)
    guess = torch.zeros_like(truth)
    guess[:, :, 8:24, 6:26, 6:26] = 0.3
    geometry, angles, spacing = _cone(40), [0.0, 90.0], (CUBE_MM / n,) * 3
    views = _cone_views(truth, angles, geometry)
    fused = cone_beam_fusion(guess, views, angles, spacing, geometry, beta=1.0, iterations=10)
    before = cone_beam_residual(guess, views, angles, spacing, geometry)
    after = cone_beam_residual(fused, views, angles, spacing, geometry)
    assert (after < 0.2 * before).all() and after.max() < 0.02
    assert fused.min() >= 0
    reprojected = _cone_views(fused.float(), angles, geometry)
    assert torch.corrcoef(torch.stack([reprojected[0, 0].ravel(), views[0, 0].ravel()]))[0, 1] > 0.99
    # the density went into the block, not elsewhere along its frontal rays (the body's right side)
    assert fused[0, 0, 12:18, 10:16, 19:24].mean() > 2 * fused[0, 0, 12:18, 10:16, 6:12].mean()


def test_cone_beam_fusion_refuses_views_of_another_detector(phantom):
    from x2ct.models.fusion import cone_beam_fusion

    truth, guess = phantom
    views = _cone_views(truth, [0.0], _cone(D))
    with pytest.raises(InputError, match="detector"):
        cone_beam_fusion(guess, views, [0.0], (CUBE_MM / D,) * 3, _cone(D + 1))
