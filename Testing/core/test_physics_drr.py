"""drr(): a CT Volume -> an XRay; the X2CT mode; the ``x2ct drr`` command; anatomy on the real chest CT."""

import io as bytes_io

import numpy as np
import pytest
import torch

from x2ct import io, sampledata
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume, to_canonical
from x2ct.physics import (X2CT_GEOMETRY, DRRGeometry, drr, hu_to_mu, project, x2ct_normalise,
                          x2ct_views)

SMALL = DRRGeometry().with_pixels(48)


def _phantom() -> Volume:
    """A 48 mm water box in air with a bone insert superior, anterior and on the patient's left (LPS)."""
    hu = np.full((20, 24, 28), -1000.0, np.float32)  # (k, j, i): k superior (identity direction), j posterior
    hu[3:17, 4:20, 4:24] = 0.0
    hu[12:16, 5:9, 17:22] = 1500.0
    return Volume(hu, spacing=(2.0, 2.0, 2.5), origin=(-30.0, 10.0, 5.0))


def _centroid(image):
    rows, cols = np.indices(image.shape)
    return (rows * image).sum() / image.sum(), (cols * image).sum() / image.sum()


def test_xray_record_carries_the_geometry():
    xray = drr(_phantom(), "frontal", SMALL)
    assert xray.shape == (48, 48) and xray.view == "frontal" and xray.image.dtype == np.float32
    assert xray.pixel_spacing == pytest.approx((500 / 48, 500 / 48))
    assert (xray.sad, xray.sid) == (541.0, 949.0)
    assert xray.metadata["mode"] == "beer-lambert" and xray.metadata["gantry_angle_deg"] == 0.0
    parallel = drr(_phantom(), 90.0, DRRGeometry(beam="parallel", detector_mm=(80.0, 80.0), pixels=(40, 40)))
    assert parallel.sad is None and parallel.sid is None and parallel.view == 90.0


def test_drr_equals_the_projector_on_the_canonical_volume():
    volume = _phantom()
    canonical = to_canonical(volume)
    assert np.allclose(canonical.direction, CANONICAL_DIRECTION)
    mu = hu_to_mu(torch.from_numpy(canonical.array))[None, None]
    spacing = canonical.spacing[::-1]
    for view, angle in (("frontal", 0.0), ("lateral", 90.0), (30.0, 30.0)):
        expected = project(mu, spacing, [angle], SMALL)[0, 0].numpy()
        assert np.allclose(drr(volume, view, SMALL).image, expected, atol=1e-6)


def test_bone_insert_shows_where_it_is():
    """Insert on the patient's left, anterior, superior: viewer's right (PA), left (lateral), top."""
    frontal, lateral = drr(_phantom(), "frontal", SMALL).image, drr(_phantom(), "lateral", SMALL).image
    row, col = np.unravel_index(np.argmax(frontal), frontal.shape)
    assert row < 24 and col > 24
    row, col = np.unravel_index(np.argmax(lateral), lateral.shape)
    assert row < 24 and col < 24


def test_ap_is_the_180_degree_view_shown_like_a_pa_film():
    volume = _phantom()
    ap, behind = drr(volume, "ap", SMALL), drr(volume, 180.0, SMALL)
    assert np.array_equal(ap.image, behind.image[:, ::-1]) and ap.view == "ap"
    # patient's left stays on the viewer's right, as in the PA view
    assert np.argmax(ap.image.max(axis=0)) > 24


def test_bad_mode_and_view():
    with pytest.raises(InputError, match="mode"):
        drr(_phantom(), "frontal", SMALL, mode="exponential")
    with pytest.raises(InputError, match="Unknown view"):
        drr(_phantom(), "oblique", SMALL)
    with pytest.raises(InputError, match="inside the volume"):
        drr(_phantom(), "frontal", DRRGeometry(sad=30.0, sid=200.0, pixels=(8, 8)))


def test_x2ct_mode_values_and_size():
    xray = drr(_phantom(), "lateral", X2CT_GEOMETRY.with_pixels(80), mode="x2ct", x2ct_size=32)
    assert xray.shape == (32, 32) and xray.pixel_spacing == pytest.approx((500 / 32, 500 / 32))
    assert xray.image.min() == 0.0 and 0.5 < xray.image.max() <= 1.0
    full = drr(_phantom(), "lateral", X2CT_GEOMETRY.with_pixels(80), mode="x2ct", x2ct_size=80)
    assert full.image.max() == 1.0  # not resized: the brightest pixel is 255 / 255


def test_x2ct_normalise_reproduces_the_x2ct_png_chain():
    """uint8(raw / max * 255) -> matplotlib imsave (grey, own min..max) -> scipy zoom(order=1) -> / 255."""
    image_module = pytest.importorskip("matplotlib.image")
    from matplotlib import colormaps
    from PIL import Image
    from scipy import ndimage

    rng = np.random.default_rng(0)
    raw = (3.0 + np.cumsum(rng.random((40, 40)), axis=1) / 10).astype(np.float32)  # min well above 0
    buffer = bytes_io.BytesIO()
    image_module.imsave(buffer, (raw / raw.max() * 255).astype(np.uint8), cmap=colormaps["gray"], format="png")
    grey = np.asarray(Image.open(buffer))[..., 0].astype(np.float64)
    expected = ndimage.zoom(grey, 16 / 40, order=1) / 255
    ours = x2ct_normalise(torch.from_numpy(raw)[None, None], size=16)[0, 0].numpy()
    assert np.allclose(ours, expected, atol=1e-6)
    assert np.allclose(x2ct_normalise(torch.from_numpy(raw)[None, None], size=40)[0, 0].numpy(), grey / 255)


def test_x2ct_views_batched_and_differentiable():
    hu = torch.from_numpy(to_canonical(_phantom()).array)[None, None].repeat(2, 1, 1, 1, 1)
    views = x2ct_views(hu, (2.5, 2.0, 2.0), [0.0, 90.0], size=24, geometry=SMALL)
    assert views.shape == (2, 2, 24, 24) and torch.equal(views[0], views[1])
    soft = hu.clone().requires_grad_()
    smooth = x2ct_views(soft, (2.5, 2.0, 2.0), [0.0], size=48, geometry=SMALL, faithful=False)
    assert smooth.amax().item() == pytest.approx(1.0)
    smooth.sum().backward()
    assert soft.grad.abs().sum() > 0


def test_command_writes_a_readable_xray_with_geometry(tmp_path, capsys):
    ct = tmp_path / "ct.nrrd"
    io.write_volume(_phantom(), ct)
    out, preview = tmp_path / "lat.nrrd", tmp_path / "lat.png"
    assert main(["drr", str(ct), "--view", "lateral", "--size", "40", "--out", str(out), "--png", str(preview)]) == 0
    assert "lateral" in capsys.readouterr().out and preview.stat().st_size > 0
    xray = io.read_xray(out)
    expected = drr(_phantom(), "lateral", X2CT_GEOMETRY.with_pixels(40))
    assert np.allclose(xray.image, expected.image, atol=1e-6)
    assert xray.view == "lateral" and (xray.sad, xray.sid) == (541.0, 949.0)
    assert xray.pixel_spacing == pytest.approx((12.5, 12.5))
    assert main(["drr", str(ct), "--view", "30", "--mode", "x2ct", "--size", "32", "--sad", "600", "--sid", "1000",
                 "--detector-mm", "400", "--out", str(tmp_path / "x.mha")]) == 0
    xray = io.read_xray(tmp_path / "x.mha")
    assert xray.shape == (32, 32) and xray.view == 30.0 and xray.sid == 1000.0
    assert xray.pixel_spacing == pytest.approx((12.5, 12.5))


def test_command_errors_are_one_line(tmp_path, capsys):
    ct = tmp_path / "ct.nrrd"
    io.write_volume(_phantom(), ct)
    zero = tmp_path / "zero.mha"
    zero.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementSpacing = 0 1 1\n"
                     b"ElementType = MET_FLOAT\nElementDataFile = LOCAL\n" + bytes(4 * 64))
    for argv, words in ((["drr", str(zero), "--out", "x.nrrd"], "spacing"),
                        (["drr", str(ct), "--view", "sideways", "--out", "x.nrrd"], "Unknown view"),
                        (["drr", str(ct), "--sad", "20", "--out", "x.nrrd"], "source"),
                        (["drr", str(ct), "--size", "0", "--out", "x.nrrd"], "--size"),
                        (["drr", str(tmp_path / "missing.nii"), "--out", "x.nrrd"], "not found")):
        assert main(argv) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1


@pytest.fixture(scope="module")
def chest():
    """The sample chest CT and its organ labels, every second voxel in-plane (256x256x133) for speed."""
    files = sampledata.fetch("chest-ct")

    def half(volume):
        spacing = (2 * volume.spacing[0], 2 * volume.spacing[1], volume.spacing[2])
        return Volume(volume.array[:, ::2, ::2], spacing, volume.origin, volume.direction)

    return half(io.read_ct(files["chest-ct.nii.gz"])), half(io.read_ct(files["chest-ct-labels.nii.gz"]))


@pytest.mark.sampledata
def test_anatomy_is_where_radiologists_expect_it(chest):
    """PA: spine central, heart on the viewer's right. Lateral: spine on the right (posterior). Superior up."""
    ct, labels = chest
    geometry = X2CT_GEOMETRY.with_pixels(128)

    def shadow(mask, view):  # DRR of one structure: bone-like inside, air outside
        return drr(labels.with_array(np.where(mask, 1000.0, -1000.0)), view, geometry).image

    heart, spine = labels.array == 51, (labels.array >= 25) & (labels.array <= 50)  # structures.csv ids
    _, heart_col = _centroid(shadow(heart, "frontal"))
    spine_row, spine_col = _centroid(shadow(spine, "frontal"))
    assert heart_col > 64 + 5 and abs(spine_col - 63.5) < 8
    assert _centroid(shadow(labels.array == 42, "frontal"))[0] < _centroid(shadow(labels.array == 32, "frontal"))[0]
    _, heart_col = _centroid(shadow(heart, "lateral"))
    _, spine_col = _centroid(shadow(spine, "lateral"))
    assert spine_col > 64 + 16 and heart_col < spine_col - 20
    # the CT's own DRR: at heart level the mediastinum column is the densest band
    frontal = drr(ct, "frontal", geometry).image
    row = int(_centroid(shadow(heart, "frontal"))[0])
    profile = np.convolve(frontal[row - 5:row + 5].mean(axis=0), np.ones(9) / 9, mode="same")[8:-8]
    assert 40 <= np.argmax(profile) + 8 <= 88
