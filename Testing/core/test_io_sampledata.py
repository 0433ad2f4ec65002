"""The real sample radiograph and chest CT read with the right size, intensities and orientation."""

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from x2ct import sampledata
from x2ct.image import to_canonical
from x2ct.io import read_ct, read_xray

pytestmark = pytest.mark.sampledata


@pytest.fixture(scope="module")
def chest_ct():
    return read_ct(sampledata.path("chest-ct"))


@pytest.fixture(scope="module")
def canonical_ct(chest_ct):
    return to_canonical(chest_ct)


@pytest.fixture(scope="module")
def canonical_labels():
    """TotalSegmentator organ map of the same CT; ids from chest-ct-structures.csv."""
    labels = to_canonical(read_ct(sampledata.fetch("chest-ct")["chest-ct-labels.nii.gz"]))
    return labels.array.astype(np.int32)


def test_chest_radiograph_is_inverted_and_lungs_are_dark():
    path = sampledata.path("chest-xray")
    xray = read_xray(path)
    assert xray.shape == (1955, 1841)  # rows x columns
    # The file states PixelSpacing 0\0 and no ImagerPixelSpacing: spacing is unknown and said to be assumed.
    assert xray.pixel_spacing == (1.0, 1.0)
    assert xray.metadata["pixel_spacing_source"].startswith("assumed 1 mm")
    assert (xray.view, xray.sid, xray.sad) == ("frontal", 1996.0, None)
    assert xray.metadata["PhotometricInterpretation"] == "MONOCHROME1"
    stored = pydicom.dcmread(path).pixel_array  # 15 bits stored, MONOCHROME1: stored 0 is white
    np.testing.assert_array_equal(xray.image, 2**15 - 1 - stored.astype(np.float32))
    rows, cols = xray.shape

    def mean(r0, r1, c0, c1):
        return xray.image[int(r0 * rows):int(r1 * rows), int(c0 * cols):int(c1 * cols)].mean()

    mediastinum = mean(0.25, 0.55, 0.45, 0.55)  # spine and mediastinum column
    for lung in (mean(0.25, 0.55, 0.2, 0.35), mean(0.25, 0.55, 0.65, 0.8)):
        assert lung < 0.8 * mediastinum


def test_chest_ct_geometry_and_hounsfield_units(chest_ct, canonical_ct):
    assert chest_ct.shape == (133, 512, 512)  # (k, j, i)
    np.testing.assert_allclose(chest_ct.spacing, (0.703125, 0.703125, 2.5))
    assert chest_ct.array.dtype == np.float32
    values = chest_ct.array
    # The scanner pads outside its circular field of view with -2048; inside, HU span -1024..3071.
    assert values.min() == -2048 and values.max() == 3071
    assert values[values > -2048].min() == -1024
    air = np.median(canonical_ct.array[60, :30, 236:276])  # in front of the chest, midline
    assert -1030 < air < -970


def test_second_chest_ct_geometry_hounsfield_units_and_orientation():
    """Patient 2 (chest-ct-2): 48 slices of 5 mm from the lower neck to mid thorax, lungs dark, spine behind."""
    ct = read_ct(sampledata.path("chest-ct-2"))
    assert ct.shape == (48, 512, 512)
    np.testing.assert_allclose(ct.spacing, (0.5703125, 0.5703125, 5.0))
    assert ct.array.min() == -1024 and ct.array.max() == 3071
    array = to_canonical(ct).array
    body = ndimage.center_of_mass(array > -500)
    middle = int(round(body[2]))
    bone = ndimage.center_of_mass(array[:, :, middle - 15:middle + 15] > 700)
    assert bone[1] > body[1] + 40  # voxels of 0.57 mm: the spine is > 2 cm behind the body's centre
    lung_area = [(ndimage.binary_fill_holes(plane > -500) & (plane < -400)).sum() for plane in array]
    assert sum(lung_area[-10:]) > 3 * sum(lung_area[:10])  # far more lung at the bottom (mid thorax) than the neck
    assert lung_area[-1] > 0.3 * max(lung_area)  # the scan stops inside the lungs, above the diaphragm


def test_chest_ct_canonical_orientation_from_intensities(canonical_ct):
    """Dense bone (> 700 HU) near the midline is the spine: posterior, i.e. larger axis-1 index."""
    array = canonical_ct.array
    body = ndimage.center_of_mass(array > -500)
    middle = int(round(body[2]))
    bone = ndimage.center_of_mass(array[:, :, middle - 15:middle + 15] > 700)
    assert bone[1] > body[1] + 30  # voxels of 0.7 mm: the spine is > 2 cm behind the body's centre


def test_chest_ct_canonical_orientation_from_the_organ_map(canonical_ct, canonical_labels):
    """Left/right/up/down by anatomy: heart and spleen left, liver right, T1 above T12, lungs dark."""
    array, labels = canonical_ct.array, canonical_labels

    counts, centres, mean_hu = label_statistics(labels, array)

    def centre(*wanted):  # (axis 0 S->I, axis 1 A->P, axis 2 R->L) of the union of labels
        return np.average(centres[list(wanted)], axis=0, weights=counts[list(wanted)])

    heart, vertebrae = centre(51), centre(*range(25, 51))
    assert heart[2] > vertebrae[2] + 20  # heart to the patient's left of the spine
    assert vertebrae[1] > heart[1] + 50  # spine behind the heart
    assert centre(1)[2] > centre(5)[2] + 100  # spleen (left) vs liver (right)
    assert centre(10, 11)[2] > centre(12, 13, 14)[2] + 100  # left vs right lung lobes
    assert centre(43)[0] < centre(32)[0]  # T1 above T12: axis 0 runs to the feet
    assert mean_hu[[10, 11, 12, 13, 14]].max() < -700  # lungs hold air
    assert mean_hu[51] > 100  # contrast-enhanced heart


def label_statistics(labels, values):
    """Voxel count, centre (canonical index) and mean value of every label, one slice at a time."""
    n = labels.max() + 1
    counts, sums, value_sums = np.zeros(n), np.zeros((n, 3)), np.zeros(n)
    j, i = (grid.ravel() for grid in np.indices(labels.shape[1:]))
    for k, (plane, plane_values) in enumerate(zip(labels, values)):
        flat = plane.ravel()
        count = np.bincount(flat, minlength=n)
        counts += count
        sums += np.stack([k * count, np.bincount(flat, j, n), np.bincount(flat, i, n)], axis=1)
        value_sums += np.bincount(flat, plane_values.ravel(), n)
    present = np.maximum(counts, 1)
    return counts, sums / present[:, None], value_sums / present
