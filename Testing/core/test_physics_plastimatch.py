"""Our projector against Plastimatch drr (the papers' DRR tool) with the same geometry and HU conversion."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from x2ct import sampledata
from x2ct.image import to_canonical, volume_from_sitk
from x2ct.physics import DRRGeometry, plastimatch_mu, project
from x2ct.physics import plastimatch as pm

pytestmark = [pytest.mark.reference,
              pytest.mark.skipif(pm.binary() is None, reason="needs plastimatch (pip install 'x2ct[reference]')")]


def ncc(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def ours(hu, spacing, angles, geometry):
    mu = torch.from_numpy(plastimatch_mu(hu).astype(np.float32))[None, None]
    return project(mu, spacing, angles, geometry)[0].numpy()


def test_phantom_values_and_orientation_match(tmp_path):
    """HU on both sides of Plastimatch's -800 cut-off, an off-centre insert, an off-centre isocentre.

    Sums differ by a few percent: Plastimatch samples the nearest voxel along
    each ray, which aliases sharp edges (ours conserves mass, see
    test_physics_projector); the images must still correlate.
    """
    hu = np.full((40, 48, 56), -1000.0, np.float32)
    hu[6:34, 8:40, 6:50] = -850.0  # below the cut-off: counts as nothing
    hu[10:30, 12:36, 10:46] = 0.0
    hu[12:18, 14:20, 32:40] = 1500.0  # superior, anterior, patient's left
    spacing = (1.2, 1.0, 0.9)
    geometry = DRRGeometry(sad=400.0, sid=700.0, detector_mm=(160.0, 200.0), pixels=(40, 50),
                           isocentre=(3.0, -2.0, 5.0))
    pm.write_volume(hu, spacing, tmp_path / "phantom.mha")
    for angles in ([0.0, 90.0], [30.0]):
        reference, _ = pm.drr(tmp_path / "phantom.mha", angles, geometry)
        mine = ours(hu, spacing, angles, geometry)
        for a, b in zip(mine, reference):
            assert ncc(a, b) > 0.99
            assert abs(a.sum() / b.sum() - 1) < 0.05


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    """The sample chest CT in the canonical frame, averaged 2x2 in-plane for speed (256x256x133)."""
    volume = to_canonical(volume_from_sitk(sitk.ReadImage(str(sampledata.path("chest-ct")))))
    hu = torch.from_numpy(volume.array.astype(np.float32))[None, None]
    hu = torch.nn.functional.avg_pool3d(hu, (1, 2, 2))[0, 0].numpy()
    spacing = (volume.spacing[2], 2 * volume.spacing[1], 2 * volume.spacing[0])
    path = tmp_path_factory.mktemp("chest") / "chest.mha"
    pm.write_volume(hu, spacing, path)
    return hu, spacing, path


@pytest.mark.sampledata
@pytest.mark.parametrize("angles", [[0.0, 90.0], [30.0]])
def test_chest_ct_matches_plastimatch(chest, angles):
    hu, spacing, path = chest
    geometry = DRRGeometry().with_pixels(128)  # the X2CT geometry, 128^2 detector
    reference, _ = pm.drr(path, angles, geometry)
    for a, b in zip(ours(hu, spacing, angles, geometry), reference):
        assert ncc(a, b) >= 0.99
        assert np.abs(a - b).mean() / b.mean() < 0.02
