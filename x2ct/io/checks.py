"""Checks on an image file: its header before any voxel is read, its values after.

Refusing early keeps a bad file from costing a long read or all the memory:
SimpleITK's ``ReadImageInformation`` parses only the header, so the size,
pixel type and geometry are checked first.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from x2ct.errors import InputError

#: Environment variable that sets the largest image (float32 bytes, in MiB) the readers accept.
MEMORY_LIMIT_ENV = "X2CT_MAX_IMAGE_MB"
#: Without that variable, an image's float32 array may take at most this share of the
#: memory available now: reading needs the stored array, the float32 copy and the
#: reoriented copy at the same time, and the models need room after that.
MEMORY_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class Header:
    """Geometry and pixel layout of an image file; sizes in SimpleITK (x, y, z) order."""

    path: Path
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: np.ndarray  # (dimension x dimension), columns = index axes
    components: int
    pixel_type: str
    fields: dict  # the header's key/value metadata (NRRD fields, NIfTI header entries, ...)

    @property
    def dimension(self) -> int:
        return len(self.size)


def read_header(path: Path, format_name: str) -> Header:
    """Parse the header with SimpleITK; a file it cannot parse is reported as corrupt."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1].replace("ITK ERROR: ", "").replace("sitk::ERROR: ", "")
        raise InputError(f"{path} cannot be read as a {format_name} file ({reason.strip()}): it is corrupt, in "
                         "another format, or its header is refused. Export it again from the original "
                         "software.") from None
    n = reader.GetDimension()
    return Header(path=path, size=tuple(reader.GetSize()), spacing=tuple(reader.GetSpacing()),
                  origin=tuple(reader.GetOrigin()),
                  direction=np.asarray(reader.GetDirection(), dtype=np.float64).reshape(n, n),
                  components=reader.GetNumberOfComponents(),
                  pixel_type=sitk.GetPixelIDValueAsString(reader.GetPixelID()),
                  fields={key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()})


def check_scalar(header: Header, what: str) -> None:
    """One real number per pixel: refuse complex, RGB and other vector images."""
    if "complex" in header.pixel_type:
        raise InputError(f"{header.path} holds complex numbers ({header.pixel_type}); {what} must hold real "
                         "intensities. Save the magnitude image instead.")
    if header.components != 1:
        raise InputError(f"{header.path} is a vector image ({header.components} values per pixel, e.g. RGB); "
                         f"{what} must hold one intensity per pixel. Convert it to a scalar (grayscale) image.")


def check_geometry(header: Header) -> None:
    """Positive spacing and an orthonormal direction matrix, as the header states them.

    SimpleITK would silently fold a negative spacing into the direction matrix;
    such a header is more often a mistake than a deliberate flip, so it is refused.
    """
    if not all(math.isfinite(s) and s > 0 for s in header.spacing):
        raise InputError(f"{header.path} has spacing {tuple(header.spacing)} mm: every voxel size must be "
                         "> 0. Fix the header (put flips in the direction matrix, not in the spacing).")
    d = header.direction
    if not np.allclose(d.T @ d, np.eye(len(d)), atol=1e-4):
        raise InputError(f"{header.path} has a non-orthonormal direction matrix (sheared or scaled axes): "
                         f"{np.round(d, 4).tolist()}. Resample it onto an orthogonal grid first.")


def available_memory() -> int | None:
    """Bytes of memory available now, or None where the platform does not say."""
    try:
        with open("/proc/meminfo") as handle:  # Linux: MemAvailable counts reclaimable cache
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    if os.name == "nt":
        return _windows_available_memory()
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # macOS: total memory
    except (ValueError, OSError, AttributeError):
        return None


def _windows_available_memory() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("length", ctypes.c_ulong), ("load", ctypes.c_ulong), ("total_phys", ctypes.c_ulonglong),
                    ("avail_phys", ctypes.c_ulonglong), ("total_page", ctypes.c_ulonglong),
                    ("avail_page", ctypes.c_ulonglong), ("total_virtual", ctypes.c_ulonglong),
                    ("avail_virtual", ctypes.c_ulonglong), ("avail_extended", ctypes.c_ulonglong)]

    status = MemoryStatus(length=ctypes.sizeof(MemoryStatus))
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.avail_phys)


def memory_limit(max_bytes: int | None = None) -> tuple[int | None, str]:
    """The largest float32 image accepted, in bytes, and where that limit comes from."""
    if max_bytes is not None:
        return int(max_bytes), "the max_bytes argument"
    if os.environ.get(MEMORY_LIMIT_ENV):
        try:
            return int(float(os.environ[MEMORY_LIMIT_ENV]) * 2**20), f"${MEMORY_LIMIT_ENV}"
        except ValueError:
            raise InputError(f"${MEMORY_LIMIT_ENV}={os.environ[MEMORY_LIMIT_ENV]!r} is not a number of "
                             "MiB; set it to e.g. 2048 or unset it.") from None
    available = available_memory()
    if available is None:
        return None, "no limit (available memory unknown)"
    return int(available * MEMORY_SHARE), (f"{MEMORY_SHARE:.0%} of the {available / 2**20:.0f} MiB of memory "
                                            f"available now; ${MEMORY_LIMIT_ENV} overrides it")


def check_memory(path: Path, shape: tuple[int, ...], max_bytes: int | None = None) -> None:
    """Refuse an image whose float32 array would not fit the memory limit."""
    needed = 4 * math.prod(int(n) for n in shape)
    limit, source = memory_limit(max_bytes)
    if limit is not None and needed > limit:
        size = "x".join(str(int(n)) for n in shape)
        raise InputError(f"{path} is too large: its {size} float32 array needs {needed / 2**20:.0f} MiB, over "
                         f"the limit of {limit / 2**20:.0f} MiB ({source}). Crop or downsample it first "
                         "(e.g. Slicer's Crop Volume), or free memory.")


def check_finite(array: np.ndarray, path: Path) -> None:
    """Refuse NaN and infinite values, which would poison every later computation."""
    if not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise InputError(f"{path} has {bad} NaN or infinite values; replace them (e.g. with the background "
                         "value) and save it again.")


def gray_from_channels(array: np.ndarray, path: Path) -> np.ndarray:
    """A (rows, cols, channels) picture as gray, if its colour channels agree.

    Gray radiographs are often saved as RGB(A); those are accepted, within 2
    grey levels for lossy JPEG chroma noise. Alpha is ignored. A real colour
    image (an annotated screenshot, a heat map) is refused.
    """
    colour = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    if np.ptp(colour, axis=-1).max() > 2:
        raise InputError(f"{path} is a colour image; an X-ray must be grayscale. Export the radiograph itself "
                         "(DICOM, or a grayscale PNG/TIFF) rather than a coloured or annotated picture.")
    return colour.mean(axis=-1, dtype=np.float32)
