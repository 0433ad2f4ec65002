"""Read a file as a CT or an X-ray, whichever it is."""

from __future__ import annotations

from x2ct.image import Volume, XRay
from x2ct.io import dicom
from x2ct.io.checks import read_header
from x2ct.io.files import PICTURE_FORMATS, VOLUME_FORMATS, existing, is_dicom_file, suffix
from x2ct.io.volumes import read_ct
from x2ct.io.xrays import read_xray


def read_image(path, *, max_bytes: int | None = None) -> Volume | XRay:
    """A Volume for 3D data (DICOM series, 3D NRRD/MetaImage/NIfTI), an XRay for 2D or one-slice images."""
    path = existing(path, "Image")
    if path.is_dir():
        return read_ct(path, max_bytes=max_bytes)
    if suffix(path) in PICTURE_FORMATS:
        return read_xray(path, max_bytes=max_bytes)
    if suffix(path) in VOLUME_FORMATS:
        size = read_header(path, VOLUME_FORMATS[suffix(path)]).size
        flat = len(size) == 2 or (len(size) == 3 and size[2] == 1)
        return read_xray(path, max_bytes=max_bytes) if flat else read_ct(path, max_bytes=max_bytes)
    if is_dicom_file(path) and dicom.is_series_slice(dicom.read_header(path)):
        return read_ct(path, max_bytes=max_bytes)
    return read_xray(path, max_bytes=max_bytes)
