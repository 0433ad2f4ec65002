"""The core records and the canonical model frame: a flipped or swapped axis must fail here."""

import itertools
import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from x2ct.errors import InputError
from x2ct.image import (CANONICAL_DIRECTION, Volume, XRay, normalise_view, to_canonical, view_angle,
                        volume_from_sitk, volume_to_sitk)
from x2ct.models.lifting import lift_view, lift_views


def _phantom():
    """Asymmetric markers: each value sits at a distinct corner-ish voxel."""
    array = np.zeros((5, 6, 7), np.float32)
    array[0, 0, 0], array[4, 1, 2], array[1, 5, 6], array[3, 2, 5] = 1, 2, 3, 4
    return array


def _point(volume, value):
    k, j, i = np.argwhere(volume.array == value)[0]
    return np.asarray(volume.origin) + volume.direction @ (np.array([i, j, k]) * volume.spacing)


@pytest.mark.parametrize("perm,signs", [(p, s) for p in itertools.permutations(range(3))
                                        for s in itertools.product((-1, 1), repeat=3)][::5])
def test_to_canonical_keeps_every_marker_in_place(perm, signs):
    direction = np.zeros((3, 3))
    for axis in range(3):
        direction[perm[axis], axis] = signs[axis]
    volume = Volume(_phantom(), (0.5, 0.7, 1.3), (10.0, -5.0, 3.0), direction)
    canonical = to_canonical(volume)
    assert np.allclose(canonical.direction, CANONICAL_DIRECTION)
    for value in (1, 2, 3, 4):
        assert np.allclose(_point(volume, value), _point(canonical, value))


def test_canonical_axes_mean_anatomy():
    """Axis 0 runs to inferior (LPS z falls), axis 1 to posterior (y rises), axis 2 to the left (x rises)."""
    volume = to_canonical(Volume(_phantom(), (1, 1, 1), (0, 0, 0), np.eye(3)))
    origin = np.asarray(volume.origin)
    step = volume.direction @ np.diag(volume.spacing)
    assert (origin + step[:, 2])[2] < origin[2]  # k: superior -> inferior
    assert (origin + step[:, 1])[1] > origin[1]  # j: anterior -> posterior
    assert (origin + step[:, 0])[0] > origin[0]  # i: right -> left


def test_oblique_volume_is_resampled_onto_canonical_grid():
    angle = 0.4
    rotation = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    volume = Volume(np.ones((6, 8, 8), np.float32), (1, 1, 1), (0, 0, 0), rotation)
    canonical = to_canonical(volume)
    assert np.allclose(canonical.direction, CANONICAL_DIRECTION)
    centre = np.asarray(volume.origin) + rotation @ np.array([3.5, 3.5, 2.5])
    index = np.round(np.linalg.solve(canonical.direction * canonical.spacing, centre - canonical.origin)).astype(int)
    assert canonical.array[index[2], index[1], index[0]] == pytest.approx(1.0)


def test_sitk_round_trip_keeps_geometry():
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]])
    volume = Volume(_phantom(), (0.5, 0.7, 1.3), (1.0, 2.0, 3.0), direction)
    back = volume_from_sitk(volume_to_sitk(volume))
    assert np.array_equal(back.array, volume.array)
    assert back.spacing == volume.spacing and back.origin == volume.origin
    assert np.allclose(back.direction, direction)
    assert isinstance(volume_to_sitk(volume), sitk.Image)


@pytest.mark.parametrize("kwargs,message", [
    ({"array": np.zeros((4, 4))}, "must be 3D"),
    ({"array": np.zeros((2, 2, 2)), "spacing": (1, 0, 1)}, "not positive"),
    ({"array": np.zeros((2, 2, 2)), "spacing": (1, -1, 1)}, "not positive"),
    ({"array": np.zeros((2, 2, 2)), "direction": [[1, 0.5, 0], [0, 1, 0], [0, 0, 1]]}, "not orthonormal"),
])
def test_volume_rejects_bad_geometry(kwargs, message):
    with pytest.raises(InputError, match=message):
        Volume(**kwargs)


def test_nan_volume_is_reported():
    array = np.zeros((2, 2, 2), np.float32)
    array[1, 1, 1] = np.inf
    with pytest.raises(InputError, match="NaN or infinite"):
        Volume(array).check_finite()


@pytest.mark.parametrize("image,message", [(np.zeros((3, 3, 3)), "must be a 2D"), (np.zeros((1, 1)), "too small")])
def test_xray_rejects_bad_shapes(image, message):
    with pytest.raises(InputError, match=message):
        XRay(image)


def test_views_and_angles():
    assert normalise_view("PA") == "frontal" and normalise_view("LL") == "lateral"
    assert normalise_view("30") == 30.0
    assert [view_angle(v) for v in ("frontal", "lateral", "ap", 45)] == [0.0, 90.0, 180.0, 45.0]
    with pytest.raises(InputError, match="Unknown view"):
        normalise_view("sideways")


def test_lifting_frontal_and_lateral_axes():
    """Frontal: constant along axis 1, image columns on axis 2; lateral: constant along axis 2, columns on axis 1."""
    view = torch.arange(12.0).reshape(1, 1, 3, 4)
    frontal = lift_view(view, 0, 4)[0, 0]
    lateral = lift_view(view, 90, 4)[0, 0]
    assert torch.equal(frontal[:, 2, :], view[0, 0]) and torch.equal(frontal[:, 0, :], frontal[:, 3, :])
    assert torch.equal(lateral[:, :, 1], view[0, 0]) and torch.equal(lateral[:, :, 0], lateral[:, :, 3])


@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_lifting_interpolated_path_agrees_with_exact_repeat(angle):
    view = torch.rand(1, 2, 8, 16)
    exact = lift_view(view, angle, 16)
    nearby = lift_view(view, angle + 1e-4, 16)
    assert torch.allclose(exact, nearby, atol=1e-3)


def test_lift_views_stacks_channels_and_checks_angles():
    views = torch.rand(2, 3, 8, 8)
    assert lift_views(views, [0, 90, 45], 8).shape == (2, 3, 8, 8, 8)
    with pytest.raises(ValueError):
        lift_views(views, [0, 90], 8)
