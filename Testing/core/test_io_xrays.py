"""X-rays from pictures and NRRD/MetaImage: values, spacing, view; writing round trips; bad files."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from x2ct.errors import InputError
from x2ct.image import XRay
from x2ct.io import read_image, read_xray, write_xray

GRAY = (np.arange(20, dtype=np.uint8).reshape(4, 5) * 12)  # asymmetric 4x5, 0..228


def save(array, path, mode=None, **options):
    Image.fromarray(array, mode=mode).save(path, **options)
    return path


def test_png_8_and_16_bit_with_assumed_spacing_and_view(tmp_path):
    xray = read_xray(save(GRAY, tmp_path / "gray.png"))
    np.testing.assert_array_equal(xray.image, GRAY)
    assert xray.image.dtype == np.float32
    assert (xray.pixel_spacing, xray.view) == ((1.0, 1.0), "frontal")
    assert xray.metadata["pixel_spacing_source"].startswith("assumed 1 mm")
    assert xray.metadata["view_source"].startswith("assumed frontal")
    deep = GRAY.astype(np.uint16) * 280 + 1000  # up to 64840: needs 16 bits
    xray = read_xray(save(deep, tmp_path / "deep.png"), "lateral", pixel_spacing=(0.2, 0.25))
    np.testing.assert_array_equal(xray.image, deep)
    assert (xray.pixel_spacing, xray.view) == ((0.2, 0.25), "lateral")
    assert xray.metadata["pixel_spacing_source"] == "argument"


def test_gray_saved_as_colour_is_accepted_but_real_colour_is_refused(tmp_path):
    for mode, channels in (("RGB", 3), ("RGBA", 4)):
        stacked = np.repeat(GRAY[..., None], channels, axis=2)
        if mode == "RGBA":
            stacked[..., 3] = 255
        np.testing.assert_array_equal(read_xray(save(stacked, tmp_path / f"{mode}.png")).image, GRAY)
    palette = Image.fromarray(GRAY).convert("P")
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_xray(tmp_path / "palette.png").image, GRAY)
    colour = np.repeat(GRAY[..., None], 3, axis=2)
    colour[1, 2] = (200, 30, 30)  # one red annotation pixel
    with pytest.raises(InputError, match="is a colour image; an X-ray must be grayscale"):
        read_xray(save(colour, tmp_path / "colour.png"))


def test_jpeg_gray_and_colour_encoded_gray(tmp_path):
    smooth = np.repeat(np.linspace(40, 200, 16)[None], 16, axis=0).astype(np.uint8)
    for mode in ("L", "RGB"):
        picture = Image.fromarray(smooth).convert(mode)
        picture.save(tmp_path / f"{mode}.jpg", quality=95)
        image = read_xray(tmp_path / f"{mode}.jpg").image
        assert image.shape == (16, 16)
        assert np.abs(image - smooth).max() <= 4  # lossy, but the same picture


def test_tiff_16_bit_float_nan_and_multipage(tmp_path):
    deep = GRAY.astype(np.uint16) * 250
    np.testing.assert_array_equal(read_xray(save(deep, tmp_path / "deep.tif")).image, deep)
    floats = GRAY.astype(np.float32)
    floats[0, 0] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite values"):
        read_xray(save(floats, tmp_path / "nan.tiff"))
    first, second = Image.fromarray(GRAY), Image.fromarray(GRAY)
    first.save(tmp_path / "stack.tif", save_all=True, append_images=[second])
    with pytest.raises(InputError, match="has 2 pages"):
        read_xray(tmp_path / "stack.tif")


def write_grid(path, array, spacing=(1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_nrrd_2d_and_one_slice_3d_keep_pixel_spacing(tmp_path):
    image = GRAY.astype(np.float32) - 50
    xray = read_xray(write_grid(tmp_path / "drr.nrrd", image, spacing=(0.3, 0.2)))  # x = column, y = row
    np.testing.assert_array_equal(xray.image, image)
    assert xray.pixel_spacing == (0.2, 0.3)
    assert xray.metadata["pixel_spacing_source"] == "file"
    xray = read_xray(write_grid(tmp_path / "slice.mha", image[None], spacing=(0.3, 0.2, 5.0)))
    np.testing.assert_array_equal(xray.image, image)
    assert xray.pixel_spacing == (0.2, 0.3)
    assert isinstance(read_image(tmp_path / "slice.mha"), XRay)


def test_volume_vector_complex_and_bad_spacing_are_refused(tmp_path):
    with pytest.raises(InputError, match="3D volume of size 5x4x3, not an X-ray: load it as a CT"):
        read_xray(write_grid(tmp_path / "ct.nrrd", np.zeros((3, 4, 5), np.float32), (1, 1, 1)))
    vector = sitk.GetImageFromArray(np.zeros((4, 5, 2), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    with pytest.raises(InputError, match="vector image \\(2 values per pixel"):
        read_xray(tmp_path / "vector.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5), np.complex64)), str(tmp_path / "complex.nrrd"))
    with pytest.raises(InputError, match="complex numbers"):
        read_xray(tmp_path / "complex.nrrd")
    with pytest.raises(InputError, match="X-ray pixel spacing .* is not positive"):
        read_xray(save(GRAY, tmp_path / "gray.png"), pixel_spacing=(0.0, 0.2))
    header = (b"NRRD0004\ntype: float\ndimension: 2\nspace dimension: 2\nsizes: 5 4\n"
              b"space directions: (-0.2,0) (0,0.2)\nendian: little\nencoding: raw\n\n")
    (tmp_path / "flipped.nrrd").write_bytes(header + np.zeros(20, np.float32).tobytes())
    assert read_xray(tmp_path / "flipped.nrrd").pixel_spacing == (0.2, 0.2)  # a flip, not a bad size
    nan = GRAY.astype(np.float32)
    nan[3, 4] = np.inf
    with pytest.raises(InputError, match="1 NaN or infinite values"):
        read_xray(write_grid(tmp_path / "inf.mha", nan))


@pytest.mark.parametrize("extension", [".nrrd", ".nhdr", ".mha", ".mhd"])
@pytest.mark.parametrize("view", ["frontal", "lateral", 33.5])
def test_write_read_round_trip_keeps_values_and_geometry(tmp_path, extension, view):
    source = XRay(GRAY.astype(np.float32) * 0.01 - 0.3, (0.25, 0.4), view, sad=1000.0, sid=1500.0)
    back = read_xray(write_xray(source, tmp_path / f"drr{extension}"))
    np.testing.assert_array_equal(back.image, source.image)
    assert (back.pixel_spacing, back.view, back.sad, back.sid) == ((0.25, 0.4), view, 1000.0, 1500.0)
    assert back.metadata["view_source"] == "file"


@pytest.mark.parametrize("extension", [".nrrd", ".mha", ".png"])
def test_round_trip_keeps_what_film_preparation_depends_on(tmp_path, extension):
    # the Slicer module hands films to its background run as files: an assumed spacing must stay assumed
    metadata = {"pixel_spacing_source": "assumed 1 mm (pictures carry no spacing);\npass pixel_spacing=",
                "PhotometricInterpretation": "MONOCHROME1", "Modality": "CR", "source": "elsewhere"}
    source = XRay(GRAY.astype(np.float32), (1.0, 1.0), "frontal", metadata=metadata)
    path = write_xray(source, tmp_path / f"film{extension}")
    back = read_xray(path)
    assert back.metadata["pixel_spacing_source"] == "assumed 1 mm (pictures carry no spacing); pass pixel_spacing="
    assert (back.metadata["PhotometricInterpretation"], back.metadata["Modality"]) == ("MONOCHROME1", "CR")
    assert back.metadata["source"] == str(path)  # where it was read from, not carried
    assert read_xray(path, pixel_spacing=(0.2, 0.2)).metadata["pixel_spacing_source"] == "argument"
    assert "Modality" not in read_xray(write_xray(XRay(GRAY.astype(np.float32)), tmp_path / f"drr{extension}")).metadata


def test_png_is_16_bit_scaled_with_a_note_and_restored(tmp_path):
    source = XRay(GRAY.astype(np.float32) * 0.01 - 0.3, (0.25, 0.4), "lateral", sid=1500.0)
    path = write_xray(source, tmp_path / "drr.png")
    with Image.open(path) as picture:
        assert picture.mode.startswith("I;16")
        assert np.asarray(picture).max() == 65535 and np.asarray(picture).min() == 0
        assert "0..65535 = intensities -0.3..1.98" in picture.text["Comment"]
    back = read_xray(path)
    np.testing.assert_allclose(back.image, source.image, atol=(1.98 + 0.3) / 65535)
    assert (back.pixel_spacing, back.view, back.sid, back.sad) == ((0.25, 0.4), "lateral", 1500.0, None)
    assert back.metadata["pixel_spacing_source"] == "file"
    flat = read_xray(write_xray(XRay(np.full((3, 3), 7.0)), tmp_path / "flat.png"))
    np.testing.assert_array_equal(flat.image, 7.0)


def test_write_refuses_unknown_extension(tmp_path):
    for name in ("drr.jpg", "drr.dcm", "drr"):
        with pytest.raises(InputError, match="unknown extension"):
            write_xray(XRay(np.zeros((3, 3))), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_missing_empty_corrupt_truncated_and_folder(tmp_path):
    with pytest.raises(InputError, match="X-ray not found"):
        read_xray(tmp_path / "none.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        read_xray(tmp_path / "empty.png")
    noise = np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8).tobytes()
    for name in ("noise.png", "noise.jpg", "noise.tif", "noise.nrrd", "noise.mha"):
        (tmp_path / name).write_bytes(noise)
        with pytest.raises(InputError, match="corrupt"):
            read_xray(tmp_path / name)
    whole = save(np.random.default_rng(4).integers(0, 256, (64, 64), dtype=np.uint8), tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes(whole.read_bytes()[:-200])
    with pytest.raises(InputError, match="corrupt"):
        read_xray(tmp_path / "cut.png")
    with pytest.raises(InputError, match="is a folder"):
        read_xray(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="unknown extension .txt"):
        read_xray(tmp_path / "notes.txt")


def test_memory_limit_applies_to_pictures(tmp_path):
    path = save(GRAY, tmp_path / "gray.png")
    assert read_xray(path, max_bytes=80).shape == (4, 5)
    with pytest.raises(InputError, match="too large: its 4x5 float32 array"):
        read_xray(path, max_bytes=79)
