"""The differentiable projector: exact sums, magnification, the models' view convention, gradients."""

import math

import numpy as np
import pytest
import torch

from x2ct.errors import InputError
from x2ct.models.lifting import lift_view
from x2ct.physics import DRRGeometry, project, view_frame
from x2ct.physics.projector import _project_view, _Voxels

SMALL_CONE = DRRGeometry(sad=300.0, sid=500.0, detector_mm=(120.0, 160.0), pixels=(24, 32))


def _chord(offset: float, direction, half: float) -> float:
    """Length of the line {offset * n + t * direction} inside the square [-half, half]^2 (n normal to it)."""
    direction = np.asarray(direction, float)
    normal = np.array([-direction[1], direction[0]])
    start = offset * normal
    low, high = -np.inf, np.inf
    for axis in range(2):
        if abs(direction[axis]) < 1e-12:
            if abs(start[axis]) > half:
                return 0.0
            continue
        t0, t1 = sorted(((-half - start[axis]) / direction[axis], (half - start[axis]) / direction[axis]))
        low, high = max(low, t0), min(high, t1)
    return max(0.0, high - low)


def test_uniform_cube_central_ray_is_mu_times_thickness():
    mu = torch.full((1, 1, 20, 20, 20), 0.02, dtype=torch.float64)
    for angle in (0.0, 90.0, 180.0, 270.0):
        image = project(mu, (2.0, 2.0, 2.0), [angle], DRRGeometry(sad=300, sid=500, detector_mm=(50, 50),
                                                                   pixels=(5, 5)))[0, 0]
        assert image[2, 2].item() == pytest.approx(0.02 * 40.0, rel=1e-9)


def test_cone_rays_through_a_slab_are_longer_off_axis():
    """A slab filling the field: every ray crosses it front to back, length = thickness / cos(ray angle)."""
    mu = torch.full((1, 1, 60, 10, 60), 0.01, dtype=torch.float64)
    g = DRRGeometry(sad=500.0, sid=1000.0, detector_mm=(100.0, 100.0), pixels=(9, 9))
    image = project(mu, (1.0, 1.0, 1.0), [0.0], g)[0, 0].numpy()
    v = (np.arange(9) - 4) * g.pixel_mm[0]
    cos = 1000.0 / np.sqrt(1000.0 ** 2 + v[:, None] ** 2 + v[None, :] ** 2)
    assert np.allclose(image, 0.01 * 10.0 / cos, rtol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 90.0, 20.0, 135.0])
def test_parallel_projection_conserves_mass(angle):
    """Sum of the image times the pixel area = integral of mu over the volume (smooth blob, any angle)."""
    size, spacing = 24, (2.0, 1.5, 1.0)
    axes = [(np.arange(size) - (size - 1) / 2) * s for s in spacing]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    mu = torch.from_numpy(np.exp(-(z ** 2 + (y - 2) ** 2 + (x + 1) ** 2) / (2 * 5.0 ** 2)))[None, None]
    g = DRRGeometry(beam="parallel", detector_mm=(60.0, 60.0), pixels=(47, 53))
    image = project(mu, spacing, [angle], g)[0, 0]
    mass = mu.sum().item() * np.prod(spacing)
    assert image.sum().item() * np.prod(g.pixel_mm) == pytest.approx(mass, rel=2e-3)


@pytest.mark.parametrize("angle", [0.0, 90.0, 30.0, 135.0, 250.0])
def test_a_point_lands_where_the_cone_magnifies_it(angle):
    size, spacing = 33, 3.0
    mu = torch.zeros(1, 1, size, size, size, dtype=torch.float64)
    index = np.array([10, 22, 25])  # superior, posterior, towards the patient's left
    mu[0, 0, index[0], index[1], index[2]] = 1.0
    position = (index - (size - 1) / 2) * spacing  # mm from the isocentre, canonical axes
    g = DRRGeometry(sad=400.0, sid=800.0, detector_mm=(300.0, 300.0), pixels=(301, 301))
    image = project(mu, (spacing,) * 3, [angle], g)[0, 0].numpy()
    d, c = view_frame(angle)
    magnification = g.sid / (g.sad + position @ d)
    expected = np.array([position[0], position @ c]) * magnification / g.pixel_mm + 150
    centroid = np.array([(image.sum(1) * np.arange(301)).sum(), (image.sum(0) * np.arange(301)).sum()]) / image.sum()
    assert np.allclose(centroid, expected, atol=0.5)


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0])
def test_separable_and_general_paths_agree(angle):
    volume = torch.rand(2, 7, 9, 11, dtype=torch.float64)
    for g in (SMALL_CONE, DRRGeometry(beam="parallel", detector_mm=(21.0, 30.0), pixels=(10, 12))):
        fast = _project_view(_Voxels(volume), (2.0, 1.5, 1.0), angle, g, separable=True)
        general = _project_view(_Voxels(volume), (2.0, 1.5, 1.0), angle, g, separable=False)
        assert torch.allclose(fast, general, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 90.0, 30.0, 300.0])
def test_parallel_projection_of_a_lifted_view_gives_the_view_back(angle):
    """Pins the projector's convention to the models' lifting (x2ct.models.lifting)."""
    depth = 32
    rows, cols = torch.meshgrid(torch.linspace(0, 1, depth), torch.linspace(0, 1, depth), indexing="ij")
    view = (1.0 + 2.0 * cols + 0.5 * torch.sin(6 * rows))[None, None].double()  # asymmetric ramp
    volume = lift_view(view, angle, depth)
    g = DRRGeometry(beam="parallel", detector_mm=(depth, depth), pixels=(depth, depth))
    image = project(volume, (1.0, 1.0, 1.0), [angle], g)[0, 0]
    d, _ = view_frame(angle)
    offsets = np.arange(depth) - (depth - 1) / 2
    chord = torch.tensor([_chord(u, (d[2], d[1]), depth / 2) for u in offsets])
    expected = view[0, 0] * chord[None, :]
    if angle % 90 == 0:
        assert torch.allclose(image, expected, rtol=1e-9)
    else:  # interpolation and the voxelised square edge: compare rays away from the corners
        inner = chord > 0.8 * chord.max()
        error = (image - expected)[:, inner].abs() / expected[:, inner]
        assert error.max() < 0.01 and error.mean() < 0.003  # a mirrored convention gives > 0.1


def test_gradients_reach_the_volume():
    volume = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)  # two items: their rows kept apart
    cone = DRRGeometry(sad=60.0, sid=100.0, detector_mm=(30.0, 40.0), pixels=(5, 6))
    parallel = DRRGeometry(beam="parallel", detector_mm=(10.0, 12.0), pixels=(5, 6))
    assert torch.autograd.gradcheck(lambda v: project(v, (2.0, 2.0, 2.0), [0.0, 90.0], cone), (volume,))
    assert torch.autograd.gradcheck(lambda v: project(v, (2.0, 2.0, 2.0), [30.0, 200.0], cone), (volume,))
    assert torch.autograd.gradcheck(lambda v: project(v, (2.0, 2.0, 2.0), [45.0, 180.0], parallel), (volume,))


def test_batches_with_shared_or_own_angles():
    volumes = torch.rand(2, 1, 8, 9, 10, dtype=torch.float64)
    spacing = (3.0, 2.0, 2.5)
    shared = project(volumes, spacing, [0.0, 75.0], SMALL_CONE)
    assert shared.shape == (2, 2, 24, 32) and shared.dtype == torch.float64
    own = project(volumes, spacing, torch.tensor([[0.0, 75.0], [90.0, 10.0]]), SMALL_CONE)
    assert torch.equal(own[0], shared[0])
    assert torch.allclose(own[1], project(volumes[1:], spacing, [90.0, 10.0], SMALL_CONE)[0])


def test_isocentre_offset_moves_the_image():
    mu = torch.zeros(1, 1, 21, 21, 21, dtype=torch.float64)
    mu[0, 0, 10, 10, 10] = 1.0
    g = DRRGeometry(beam="parallel", detector_mm=(42.0, 42.0), pixels=(21, 21), isocentre=(0.0, 0.0, 4.0))
    image = project(mu, (2.0, 2.0, 2.0), [0.0], g)[0, 0]
    assert tuple(np.argwhere(image.numpy() == image.max().item())[0]) == (10, 8)  # 4 mm = 2 px to the left


@pytest.mark.parametrize("call,words", [
    (lambda: project(torch.rand(4, 4, 4), (1, 1, 1), [0.0]), "B, 1, D, H, W"),
    (lambda: project(torch.ones(1, 1, 4, 4, 4, dtype=torch.int64), (1, 1, 1), [0.0]), "floating"),
    (lambda: project(torch.rand(1, 1, 4, 4, 4), (1, 0, 1), [0.0]), "spacing"),
    (lambda: project(torch.rand(1, 1, 4, 4, 4), (1, 1), [0.0]), "spacing"),
    (lambda: project(torch.rand(1, 1, 4, 4, 4), (1, 1, 1), torch.zeros(3, 2)), "Angles"),
    (lambda: project(torch.rand(1, 1, 4, 4, 4), (1, 1, 1), [math.nan]), "Angles"),
    (lambda: project(torch.rand(1, 1, 4, 4, 4), (100, 100, 100), [0.0], SMALL_CONE), "inside the volume"),
])
def test_bad_input_is_refused(call, words):
    with pytest.raises(InputError, match=words):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    volume = torch.rand(2, 1, 16, 20, 24)
    for angles in ([0.0, 90.0], [33.0, 210.0]):
        cpu = project(volume, (2.0, 2.0, 2.0), angles, SMALL_CONE)
        gpu = project(volume.cuda().requires_grad_(), (2.0, 2.0, 2.0), angles, SMALL_CONE)
        gpu.sum().backward()
        assert torch.allclose(cpu, gpu.cpu(), rtol=1e-4, atol=1e-5)
