"""CT volumes in and out: NRRD, MetaImage and NIfTI through SimpleITK, DICOM series via x2ct.io.dicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from x2ct.errors import InputError, X2CTError
from x2ct.image import Volume, volume_to_sitk
from x2ct.io import checks, dicom
from x2ct.io.files import PICTURE_FORMATS, VOLUME_FORMATS, existing, is_dicom_file, suffix
from x2ct.io.outputs import atomic_output, check_target


def read_ct(path, *, max_bytes: int | None = None) -> Volume:
    """A CT as a float32 Volume (HU, LPS geometry) from a DICOM series, NIfTI, NRRD or MetaImage.

    ``path`` is a file, a folder of DICOM slices, or one slice of a series (to
    pick that series when the folder holds several). NIfTI scl_slope/scl_inter
    and DICOM Rescale Slope/Intercept are applied. ``max_bytes`` caps the size
    of the float32 array (see ``x2ct.io.checks.memory_limit`` for the default).
    """
    path = existing(path, "CT")
    if path.is_dir() or is_dicom_file(path):
        return dicom.read_ct_series(path, max_bytes=max_bytes)
    header = volume_header(path)
    check_volume_header(header, max_bytes)
    return Volume(*_read_voxels(path))


def volume_header(path: Path) -> checks.Header:
    """The header of a NRRD, MetaImage or NIfTI file; other extensions are refused."""
    if suffix(path) in PICTURE_FORMATS:
        raise InputError(f"{path} is a 2D picture, not a CT volume: load it as an X-ray, or give a CT as "
                         f"a DICOM folder or one of {', '.join(VOLUME_FORMATS)}.")
    if suffix(path) not in VOLUME_FORMATS:
        raise InputError(f"{path.name}: unknown extension {suffix(path) or '(none)'}; a CT must be a DICOM folder "
                         f"or one of {', '.join(VOLUME_FORMATS)}.")
    return checks.read_header(path, VOLUME_FORMATS[suffix(path)])


def check_volume_header(header: checks.Header, max_bytes: int | None) -> None:
    """A readable 3D scalar volume with sound geometry that fits in memory."""
    size = header.size
    if header.dimension == 2 or (header.dimension == 3 and size[2] == 1):
        raise InputError(f"{header.path} is a 2D image ({size[1]}x{size[0]} pixels), not a CT volume: load it "
                         "as an X-ray instead.")
    if header.dimension != 3:
        raise InputError(f"{header.path} is a {header.dimension}D image of size {size}; x2ct reads 2D X-rays and "
                         "3D CTs. Extract one 2D or 3D image (e.g. one time point) first.")
    checks.check_scalar(header, "a CT")
    checks.check_geometry(header)
    checks.check_memory(header.path, size[::-1], max_bytes)


def _read_voxels(path: Path) -> tuple[np.ndarray, tuple, tuple, np.ndarray]:
    """Array (k, j, i) as float32, spacing, origin and direction, after the header passed its checks."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    except RuntimeError:
        raise InputError(f"{path} has a valid header but its voxel data cannot be read (truncated or corrupt "
                         "file); copy or export it again.") from None
    array = sitk.GetArrayFromImage(image)
    checks.check_finite(array, path)
    n = image.GetDimension()
    return array, image.GetSpacing(), image.GetOrigin(), np.asarray(image.GetDirection()).reshape(n, n)


def write_volume(volume: Volume, path, *, overwrite: bool = True) -> Path:
    """Write a Volume with its geometry to .nrrd/.nhdr, .mha/.mhd or .nii/.nii.gz, all or nothing.

    Non-finite values are refused (x2ct never reads them back either). The
    file is read back in full before it replaces ``path``: ITK reports some
    short writes (a full disk) only as a line on stderr, or not at all.
    Without ``overwrite`` an existing file is refused.
    """
    import SimpleITK as sitk

    path = check_target(path, VOLUME_FORMATS, "a volume", overwrite=overwrite)
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise X2CTError(f"Refusing to write {path}: the volume has {bad} NaN or infinite values; nothing was "
                        "written.")
    image = volume_to_sitk(volume.with_array(array))
    written = sitk.GetArrayViewFromImage(image)

    def reads_back(staged: Path) -> None:
        read = sitk.ReadImage(str(staged))  # held: the array view below borrows its buffer
        if not np.array_equal(sitk.GetArrayViewFromImage(read), written):
            raise OSError("the voxels read back differ from those written (short write)")

    with atomic_output(path, overwrite=overwrite, check=reads_back, needed_bytes=array.nbytes) as partial:
        sitk.WriteImage(image, str(partial), True)
    return path
