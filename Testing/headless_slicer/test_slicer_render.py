"""Offscreen rendering of the real chest CT in Slicer's slice views and 3D view.

Each slice view is compared with the picture computed straight from the
x2ct volume: every screen pixel is mapped to RAS by the view's own XYToRAS
matrix, to LPS, to a voxel index through the x2ct geometry, and the CT
window applied. A volume misplaced by the glue, a wrong window or a blank
render all fail.
"""

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

from PIL import Image  # noqa: E402
from scipy.ndimage import map_coordinates  # noqa: E402
from X2CTReconstructionLib import render  # noqa: E402
from X2CTReconstructionLib import scene as glue  # noqa: E402

from x2ct import io, sampledata  # noqa: E402
from x2ct.image import XRay  # noqa: E402

pytestmark = [pytest.mark.slicer, pytest.mark.sampledata]

LEVEL, WIDTH = 40.0, 400.0  # soft-tissue window, HU


@pytest.fixture(scope="module")
def chest_ct():
    return io.read_ct(sampledata.path("chest-ct"))


@pytest.fixture
def chest_node(scene, chest_ct):
    return chest_ct, glue.volume_node_from_volume(chest_ct, "chest-ct", scene)


def expected_slice(view, volume) -> tuple[np.ndarray, np.ndarray]:
    """(gray picture, HU) the slice view should show, computed from the volume with x2ct's geometry."""
    rows, columns = view.render_window().GetSize()[::-1]
    xy_to_ras = np.array([[view.get_view_node().GetXYToRAS().GetElement(r, c) for c in range(4)]
                          for r in range(4)])
    y, x = np.mgrid[rows - 1:-1:-1, 0:columns]  # top screen row first, like the capture
    ras = xy_to_ras @ np.stack([x.ravel(), y.ravel(), np.zeros(x.size), np.ones(x.size)])
    lps = ras[:3] * np.array([[-1.0], [-1.0], [1.0]])
    scaled = volume.direction * np.asarray(volume.spacing)
    ijk = np.linalg.solve(scaled, lps - np.asarray(volume.origin)[:, None])
    hu = map_coordinates(volume.array, ijk[::-1], order=1, mode="constant", cval=np.nan).reshape(rows, columns)
    gray = np.clip((hu - (LEVEL - WIDTH / 2)) / WIDTH, 0.0, 1.0) * 255.0
    return np.where(np.isnan(hu), 0.0, gray), hu


def test_chest_ct_in_slice_views_matches_the_volume(chest_node, offscreen_views, tmp_path):
    volume, node = chest_node
    offscreen_views.show_volume(node, level=LEVEL, width=WIDTH, preset=None)
    paths = offscreen_views.save(tmp_path, prefix="chest-", names=list(render.SLICE_VIEWS))

    for name in render.SLICE_VIEWS:
        shown = np.asarray(Image.open(paths[name]).convert("L"), dtype=np.float64)
        expected, hu = expected_slice(offscreen_views.views[name], volume)
        assert shown.std() > 40, f"{name} view looks blank"
        inside = ~np.isnan(hu)
        assert inside.mean() > 0.3, f"{name}: the volume covers too little of the view"
        difference = np.abs(shown - expected)[inside]
        assert np.median(difference) <= 2 and difference.mean() < 8, f"{name} view does not show the volume"
        bone = hu > 400
        assert bone.sum() > 50, f"{name}: no bone in the displayed slice"
        assert (shown[bone] >= 250).mean() > 0.95, f"{name}: bone is not shown bright where it is"
        air = hu < -500
        assert (shown[air] <= 5).mean() > 0.95, f"{name}: air is not shown dark"


def test_chest_ct_volume_rendering_and_mip(chest_node, offscreen_views, tmp_path):
    _, node = chest_node
    offscreen_views.show_volume(node, level=LEVEL, width=WIDTH)  # CT-Chest-Contrast-Enhanced
    composite = offscreen_views.capture(render.THREE_D_VIEW).astype(np.float64)
    background = np.median(np.concatenate([composite[:4].reshape(-1, 3), composite[-4:].reshape(-1, 3)]), axis=0)
    foreground = np.abs(composite - background).sum(axis=2) > 60
    assert foreground.mean() > 0.15, "the volume rendering is (nearly) empty"
    rows, columns = foreground.shape
    assert foreground[rows // 3: 2 * rows // 3, columns // 3: 2 * columns // 3].mean() > 0.8, \
        "the rendered chest is not in the middle of the 3D view"
    bone_coloured = (composite[..., 0] > 170) & (composite[..., 1] > 130) & (composite[..., 0] > composite[..., 2])
    assert bone_coloured.mean() > 0.02, "no bright bone in the volume rendering"

    offscreen_views.show_volume(node, mip=True)
    path = offscreen_views.save(tmp_path, prefix="chest-mip-", names=[render.THREE_D_VIEW])[render.THREE_D_VIEW]
    mip = np.asarray(Image.open(path), dtype=np.float64)
    assert np.abs(mip[..., 0] - mip[..., 2]).max() < 2, "the CT-MIP preset is grayscale"
    centre = mip[rows // 3: 2 * rows // 3, columns // 3: 2 * columns // 3, 0]
    assert centre.mean() > mip[:8, :, 0].mean() + 60, "the MIP shows no bright body over the background"
    assert (centre > 230).mean() > 0.05, "no bright bone (spine, sternum) in the MIP"


@pytest.mark.parametrize("view, slice_view", [("frontal", "Green"), ("lateral", "Yellow")])
def test_xray_shows_upright_in_its_slice_view(scene, offscreen_views, view, slice_view):
    """As on a light box: the image's top-left corner appears top-left in Slicer's coronal/sagittal view."""
    image = np.zeros((60, 40), np.float32)
    image[:12, :8] = 1000.0  # top-left block, bright
    image[-12:, -8:] = 500.0  # bottom-right block, grey
    node = glue.xray_node_from_xray(XRay(image, (1.0, 1.0), view=view), "xray", scene, center=(30.0, -40.0, 80.0))
    offscreen_views.show_volume(node, level=500.0, width=1000.0, preset=None)
    shown = offscreen_views.capture(slice_view)[..., 0].astype(np.float64)

    rows, columns = np.nonzero(shown > 200)
    assert rows.size > 50, "the bright corner is not visible"
    grey_rows, grey_columns = np.nonzero((shown > 90) & (shown < 170))
    assert grey_rows.size > 50, "the grey corner is not visible"
    assert rows.mean() < grey_rows.mean() - 40 and columns.mean() < grey_columns.mean() - 20, \
        "the top-left corner of the X-ray is not shown top-left"
