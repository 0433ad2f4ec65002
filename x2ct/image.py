"""The two records the whole core passes around: a CT volume and an X-ray.

Geometry follows ITK/DICOM (LPS patient coordinates, millimetres), so that a
record converts to and from SimpleITK without loss. Slicer's RAS conversion
happens once, in the Slicer glue.

Canonical model frame: the models and the projector work on volumes in one
orientation, ``CANONICAL_DIRECTION``: array axis 0 runs superior -> inferior,
axis 1 anterior -> posterior, axis 2 patient right -> left. A frontal (PA)
X-ray of such a volume is then an image whose rows are axis 0 and whose columns
are axis 2, displayed as radiologists read it (patient's right on the viewer's
left), and a lateral view has rows = axis 0, columns = axis 1 (anterior left).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import numpy as np

from x2ct.errors import InputError

#: ITK direction matrix (columns = LPS direction of index axes i, j, k) of the
#: canonical model frame: i -> patient left, j -> posterior, k -> inferior.
CANONICAL_DIRECTION = np.diag([1.0, 1.0, -1.0])

#: A view: "frontal" (posterior-anterior), "ap", "lateral", or a gantry angle in
#: degrees (0 = frontal PA, 90 = lateral; see x2ct.physics for the convention).
View = Union[str, float]


def _check_spacing(spacing, n: int, what: str) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != n:
        raise InputError(f"{what} spacing must have {n} values, got {len(values)}.")
    if not all(np.isfinite(values)) or min(values) <= 0:
        raise InputError(
            f"{what} spacing {values} is not positive: every voxel/pixel size must be > 0 mm. "
            "Fix the file's header (spacing / PixelSpacing) or pass the spacing explicitly."
        )
    return values


def _check_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(
            f"{what} has {bad} NaN or infinite values; replace them (e.g. with the background value) "
            "and try again."
        )


@dataclasses.dataclass
class Volume:
    """A 3D image: array indexed (k, j, i) as SimpleITK returns it, plus geometry.

    ``spacing`` and ``origin`` are in (i, j, k) / (x, y, z) order, millimetres,
    LPS; ``direction`` is the 3x3 ITK direction matrix whose columns are the LPS
    directions of the i, j and k index axes. Intensities are HU for CTs unless
    a pipeline says otherwise.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise InputError(
                f"A CT volume must be 3D, got an array of shape {self.array.shape}. "
                "A 2D image is an X-ray: load it as an X-ray instead."
            )
        if min(self.array.shape) < 1:
            raise InputError(f"The volume is empty (shape {self.array.shape}).")
        self.spacing = _check_spacing(self.spacing, 3, "Volume")
        self.origin = tuple(float(o) for o in self.origin)
        if len(self.origin) != 3 or not all(np.isfinite(self.origin)):
            raise InputError(f"Volume origin must be 3 finite numbers, got {self.origin}.")
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if not np.allclose(self.direction.T @ self.direction, np.eye(3), atol=1e-4):
            raise InputError(
                "The volume's direction matrix is not orthonormal (sheared or scaled axes); "
                "resample the image to an orthogonal grid before loading it."
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def size_mm(self) -> tuple[float, float, float]:
        """Physical extent along (i, j, k)."""
        k, j, i = self.array.shape
        return (i * self.spacing[0], j * self.spacing[1], k * self.spacing[2])

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, new voxels (the shape must match)."""
        if np.shape(array) != self.array.shape:
            raise InputError(f"Array shape {np.shape(array)} does not match volume shape {self.shape}.")
        return dataclasses.replace(self, array=np.asarray(array))

    def check_finite(self) -> "Volume":
        _check_finite(self.array, "The volume")
        return self


@dataclasses.dataclass
class XRay:
    """A 2D radiograph (or DRR) as displayed: rows top -> bottom, columns left -> right.

    Intensity convention: larger = more attenuation (bone bright), whatever the
    file stored (MONOCHROME1 is inverted on reading). ``pixel_spacing`` is
    (row spacing, column spacing) in mm at the detector. ``sad``/``sid`` are
    source-to-axis and source-to-imager distances in mm when known (None for
    parallel-beam or unknown geometry).
    """

    image: np.ndarray
    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    view: View = "frontal"
    sad: float | None = None
    sid: float | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image = np.asarray(self.image)
        if self.image.ndim != 2:
            raise InputError(
                f"An X-ray must be a 2D image, got an array of shape {self.image.shape}. "
                "A 3D volume is a CT: load it as a CT, or pass a single-slice image."
            )
        if min(self.image.shape) < 2:
            raise InputError(
                f"The X-ray is {self.image.shape[0]}x{self.image.shape[1]} pixels: too small to use. "
                "Give the full-resolution radiograph."
            )
        self.pixel_spacing = _check_spacing(self.pixel_spacing, 2, "X-ray pixel")
        self.view = normalise_view(self.view)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape)

    def check_finite(self) -> "XRay":
        _check_finite(self.image, "The X-ray")
        return self


def normalise_view(view: View) -> View:
    """'frontal' | 'ap' | 'lateral' | angle in degrees; accepts 'pa', 'lat', '90'."""
    if isinstance(view, (int, float, np.floating, np.integer)):
        angle = float(view)
        if not np.isfinite(angle):
            raise InputError(f"View angle must be finite, got {view}.")
        return angle
    name = str(view).strip().lower()
    aliases = {"pa": "frontal", "frontal": "frontal", "ap": "ap", "lateral": "lateral", "lat": "lateral",
               "ll": "lateral", "rl": "lateral"}
    if name in aliases:
        return aliases[name]
    try:
        angle = float(name)
    except ValueError:
        raise InputError(
            f"Unknown view {view!r}: use frontal (PA), ap, lateral, or a gantry angle in degrees."
        ) from None
    return normalise_view(angle)


def view_angle(view: View) -> float:
    """Gantry angle in degrees of a view: frontal/PA 0, lateral 90, AP 180."""
    view = normalise_view(view)
    if isinstance(view, float):
        return view
    return {"frontal": 0.0, "lateral": 90.0, "ap": 180.0}[view]


def volume_from_sitk(image) -> Volume:
    """SimpleITK 3D image -> Volume (array copied, float32 kept as stored type)."""
    import SimpleITK as sitk

    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection()).reshape(3, 3),
    )


def volume_to_sitk(volume: Volume):
    """Volume -> SimpleITK image with the same geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(volume.direction.ravel()))
    return image


def to_canonical(volume: Volume) -> Volume:
    """Reorient to the model frame (CANONICAL_DIRECTION) without resampling.

    Axis-aligned volumes are permuted and flipped exactly; the physical
    position of every voxel is unchanged. An oblique volume is resampled
    (linear) onto an axis-aligned grid covering it.
    """
    direction = volume.direction
    dominant = np.abs(direction).argmax(axis=0)  # LPS axis each index axis runs along
    aligned = len(set(dominant)) == 3 and np.allclose(np.abs(direction).max(axis=0), 1.0, atol=1e-3)
    if not aligned:
        return _resample_canonical(volume)
    # For canonical index axis m (0=i, 1=j, 2=k) find the source index axis along LPS axis m.
    source_axis = [int(np.where(dominant == m)[0][0]) for m in range(3)]
    signs = [np.sign(direction[m, source_axis[m]]) * CANONICAL_DIRECTION[m, m] for m in range(3)]
    # numpy axes are (k, j, i): index axis a lives at numpy axis 2 - a.
    array = np.transpose(volume.array, [2 - source_axis[2 - n] for n in range(3)])
    spacing = tuple(volume.spacing[source_axis[m]] for m in range(3))
    corner = np.asarray(volume.origin, dtype=np.float64)
    for m in range(3):
        if signs[m] < 0:
            a = source_axis[m]
            corner = corner + direction[:, a] * volume.spacing[a] * (volume.array.shape[2 - a] - 1)
            array = np.flip(array, axis=2 - m)
    return Volume(np.ascontiguousarray(array), spacing, tuple(corner), CANONICAL_DIRECTION.copy())


def _resample_canonical(volume: Volume) -> Volume:
    import SimpleITK as sitk

    image = volume_to_sitk(volume)
    k, j, i = volume.array.shape
    corners = [np.asarray(volume.origin) + volume.direction @ (np.array([a, b, c]) * volume.spacing)
               for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)]
    corners = np.array(corners)
    spacing = float(min(volume.spacing))
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = [int(np.ceil((high[m] - low[m]) / spacing)) + 1 for m in range(3)]
    origin = [low[0], low[1], high[2]]  # canonical k runs inferior: start at the top
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing((spacing,) * 3)
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputDirection(tuple(CANONICAL_DIRECTION.ravel()))
    resampler.SetSize(size)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(volume.array.min()))
    return volume_from_sitk(resampler.Execute(image))
