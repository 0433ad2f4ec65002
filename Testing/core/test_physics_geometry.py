"""DRR geometry: X2CT defaults, the view frame convention, and refused set-ups."""

import numpy as np
import pytest

from x2ct.errors import InputError
from x2ct.physics import X2CT_GEOMETRY, DRRGeometry, view_frame


def test_defaults_are_the_x2ct_benchmark():
    g = DRRGeometry()
    assert (g.beam, g.sad, g.sid, g.detector_mm, g.pixels) == ("cone", 541.0, 949.0, (500.0, 500.0), (320, 320))
    assert g == X2CT_GEOMETRY and g.pixel_mm == (500 / 320, 500 / 320)
    assert g.with_pixels(128).pixel_mm == (500 / 128, 500 / 128)


@pytest.mark.parametrize("angle,ray,column", [
    (0, (0, -1, 0), (0, 0, 1)),     # PA: rays posterior -> anterior, columns towards the patient's left
    (90, (0, 0, 1), (0, 1, 0)),     # left lateral: rays right -> left, columns anterior -> posterior
    (180, (0, 1, 0), (0, 0, -1)),   # AP: rays anterior -> posterior
    (270, (0, 0, -1), (0, -1, 0)),
])
def test_view_frame(angle, ray, column):
    d, c = view_frame(angle)
    assert np.array_equal(d, ray) and np.array_equal(c, column)
    # seen from the detector (looking along -d) with superior (-e0) up, columns point to the viewer's right
    assert np.allclose(np.cross(c, [-1, 0, 0]), d)


def test_oblique_frame_is_orthonormal():
    d, c = view_frame(30)
    assert np.allclose(c, [0, 0.5, np.sqrt(3) / 2]) and abs(d @ c) < 1e-12 and np.isclose(d @ d, 1)


@pytest.mark.parametrize("changes,words", [
    ({"pixels": (0, 320)}, "pixels"),
    ({"pixels": (320.5, 320)}, "pixels"),
    ({"detector_mm": (0.0, 500.0)}, "detector size"),
    ({"detector_mm": (-1.0, 500.0)}, "detector size"),
    ({"sad": -5.0}, "source-axis"),
    ({"sid": float("nan")}, "source-imager"),
    ({"sid": 500.0}, "must exceed"),
    ({"beam": "fan"}, "cone, parallel"),
    ({"isocentre": (0.0, 1.0)}, "isocentre"),
])
def test_bad_geometry_is_refused(changes, words):
    with pytest.raises(InputError, match=words):
        DRRGeometry(**changes)


def test_source_inside_the_bounding_sphere_is_refused_with_the_numbers():
    g = DRRGeometry(sad=100.0, sid=400.0)
    with pytest.raises(InputError, match=r"100 mm from the isocentre.*radius 173 mm"):
        g.check_volume((200.0, 200.0, 200.0))
    DRRGeometry().check_volume((200.0, 200.0, 200.0))  # the X2CT set-up clears a 20 cm cube
    with pytest.raises(InputError, match="detector"):
        DRRGeometry(sad=541.0, sid=600.0).check_volume((200.0, 200.0, 200.0))
    DRRGeometry(beam="parallel", sad=1.0, sid=2.0).check_volume((200.0, 200.0, 200.0))  # no source position
