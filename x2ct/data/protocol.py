"""The preprocessing protocol that turns a CT in HU into a model's input, and back.

Geometry follows the X2CT-GAN benchmark (``docs/methods.md``): the CT is put
in the canonical model frame (``x2ct.image.to_canonical``), resampled to 1 mm
isotropic (linear), cropped or padded to a 320 mm cube, and resized to
``size``^3 voxels (linear), so one voxel is 320/size mm (2.5 mm at 128).

The crop follows X2CT's ``crop_to_standard``: along the body axis it keeps the
last 320 slices of an inferior->superior stack, i.e. the most superior 320 mm
(lung apices kept, abdomen dropped) and pads evenly when the scan is shorter;
across the body it keeps or pads the centre. Padding is air (-1024 HU; X2CT
padded with 0).

Intensity comes in two flavours:

* ``X2CT``: clip to [-1024, 1476] HU and map linearly to [0, 1]
  ((HU + 1024) / 2500, the X2CT loader's [0, 2500] / 2500);
* ``DURHAM`` (Repeat-and-Concatenate, code diffusion): clamp to
  [-1000, 1000] HU, then min-max normalise each CT; the min and max are kept.

``apply`` returns the normalised array and a ``ProtocolState`` holding the
output geometry and the HU that map to 0 and 1, so ``to_hu`` can write a
prediction back in HU at its physical position.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume, to_canonical, volume_from_sitk, volume_to_sitk

#: HU of air, used for padding.
AIR_HU = -1024.0


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A preprocessing pipeline: grid (spacing, crop, size) and intensity mapping.

    ``window`` is the HU range kept (clipped). With ``per_case_minmax`` the
    clipped CT's own min and max map to 0 and 1 (Durham); otherwise the window
    ends do (X2CT).
    """

    name: str = "x2ct"
    size: int = 128
    spacing_mm: float = 1.0
    crop_mm: float = 320.0
    window: tuple[float, float] = (-1024.0, 1476.0)
    per_case_minmax: bool = False
    pad_hu: float = AIR_HU

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 2:
            raise InputError(f"Protocol size must be an integer >= 2 voxels, got {self.size}.")
        if self.spacing_mm <= 0 or self.crop_mm <= 0:
            raise InputError(
                f"Protocol spacing ({self.spacing_mm} mm) and crop ({self.crop_mm} mm) must be positive."
            )
        if not self.window[0] < self.window[1]:
            raise InputError(f"Protocol HU window {self.window} must have low < high.")

    @property
    def crop_voxels(self) -> int:
        """Side of the cropped cube at ``spacing_mm`` (320 for X2CT)."""
        return int(round(self.crop_mm / self.spacing_mm))

    @property
    def output_spacing(self) -> float:
        """Voxel size of the output in mm (320 / 128 = 2.5 for X2CT)."""
        return self.crop_voxels * self.spacing_mm / self.size

    def with_size(self, size: int) -> "Protocol":
        """The same protocol at another output size (64 or 32 for small models)."""
        return dataclasses.replace(self, size=int(size))

    # -- geometry ---------------------------------------------------------------------------

    def crop_grid(self, volume: Volume) -> "Grid":
        """The ``spacing_mm`` crop cube (320^3 at 1 mm for X2CT) for ``volume``, in LPS."""
        canonical = to_canonical(volume)
        step = self.spacing_mm
        n_crop = self.crop_voxels
        offset = np.zeros(3)  # first voxel of the cube along index axes (i, j, k), mm from the scan's origin
        for axis in range(3):  # index axis: 0 = i (right->left), 1 = j (ant->post), 2 = k (sup->inf)
            count = canonical.array.shape[2 - axis]
            extent = count * canonical.spacing[axis]
            n_fine = max(1, int(round(extent / step)))  # voxels of the 1 mm grid covering the scan
            centre = (count - 1) / 2.0 * canonical.spacing[axis]
            if axis == 2:  # body axis: keep the most superior slices, pad evenly
                start = 0 if n_fine >= n_crop else -((n_crop - n_fine) - (n_crop - n_fine) // 2)
            else:  # across the body: keep the centre
                start = (n_fine - n_crop) // 2 if n_fine >= n_crop else -((n_crop - n_fine) // 2)
            offset[axis] = centre + (start - (n_fine - 1) / 2.0) * step
        corner = np.asarray(canonical.origin, dtype=np.float64) + CANONICAL_DIRECTION @ offset
        return Grid(n_crop, step, tuple(corner))

    def output_grid(self, volume: Volume) -> "Grid":
        """The ``size``^3 output grid for ``volume`` (same box as ``crop_grid``)."""
        return self.crop_grid(volume).resized(self.size)

    def resample(self, volume: Volume) -> Volume:
        """HU volume -> HU volume on the protocol's output grid (canonical frame).

        Two linear resamplings as in X2CT: first onto the 1 mm crop cube (the
        resample and the crop/pad in one pass; outside the scan is ``pad_hu``),
        then the cube onto ``size``^3 voxels of 320/size mm.
        """
        fine = resample(_checked(volume), self.crop_grid(volume), self.pad_hu)
        return resize_cube(fine, self.size, self.pad_hu)

    # -- intensity --------------------------------------------------------------------------

    def normalise(self, volume: Volume) -> tuple[np.ndarray, "ProtocolState"]:
        """HU volume already on the output grid -> (float32 array in [0, 1], state)."""
        low, high = self.window
        clipped = np.clip(np.asarray(volume.array, dtype=np.float32), low, high)
        if self.per_case_minmax:
            low, high = float(clipped.min()), float(clipped.max())
            if not high > low:
                raise InputError(
                    f"The CT is constant ({low} HU) inside the protocol's window: min-max normalisation is "
                    "undefined. Check that the file holds a CT in HU."
                )
        scaled = ((clipped - low) / (high - low)).astype(np.float32)
        state = ProtocolState(protocol=self.name, size=self.size, spacing=tuple(volume.spacing),
                              origin=tuple(volume.origin),
                              direction=tuple(float(d) for d in np.ravel(volume.direction)),
                              hu_low=float(low), hu_high=float(high))
        return scaled, state

    def apply(self, volume: Volume) -> tuple[np.ndarray, "ProtocolState"]:
        """HU volume in any orientation -> (normalised float32 (size, size, size), state)."""
        return self.normalise(self.resample(volume))


@dataclasses.dataclass(frozen=True)
class ProtocolState:
    """What ``to_hu`` needs: output geometry and the HU mapped to 0 and 1.

    Plain numbers only, so it travels as JSON (``as_dict``/``from_dict``) next
    to a prediction or inside a checkpoint card.
    """

    protocol: str
    size: int
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    hu_low: float
    hu_high: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ProtocolState":
        try:
            return cls(protocol=str(data["protocol"]), size=int(data["size"]),
                       spacing=tuple(float(s) for s in data["spacing"]),
                       origin=tuple(float(o) for o in data["origin"]),
                       direction=tuple(float(d) for d in data["direction"]),
                       hu_low=float(data["hu_low"]), hu_high=float(data["hu_high"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"Not a protocol state ({error}); it needs protocol, size, spacing, origin, "
                             "direction, hu_low and hu_high.") from None


def to_hu(normalised, state: ProtocolState) -> Volume:
    """Normalised model output (size^3, or with leading 1-sized axes) -> HU ``Volume`` with geometry."""
    array = np.asarray(normalised.detach().cpu() if hasattr(normalised, "detach") else normalised,
                       dtype=np.float32)
    array = array.reshape(array.shape[-3:]) if array.ndim > 3 and np.prod(array.shape[:-3]) == 1 else array
    if array.shape != (state.size,) * 3:
        raise InputError(f"A prediction of shape {array.shape} does not fit the protocol state "
                         f"({state.size}^3); pass the model output for this case.")
    hu = array * np.float32(state.hu_high - state.hu_low) + np.float32(state.hu_low)
    return Volume(hu, state.spacing, state.origin, np.reshape(state.direction, (3, 3)))


#: The X2CT-GAN benchmark protocol.
X2CT = Protocol()
#: The Durham variant (Repeat-and-Concatenate, code diffusion): [-1000, 1000] HU, per-CT min-max.
DURHAM = Protocol(name="durham", window=(-1000.0, 1000.0), per_case_minmax=True)
PROTOCOLS = {p.name: p for p in (X2CT, DURHAM)}


def get_protocol(name: str, size: int | None = None) -> Protocol:
    """A named protocol ('x2ct' or 'durham'), optionally at another size."""
    if name not in PROTOCOLS:
        raise InputError(f"Unknown protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}.")
    protocol = PROTOCOLS[name]
    return protocol if size is None else protocol.with_size(size)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A cube in the canonical frame: ``n``^3 voxels of ``spacing`` mm, first voxel centre at ``origin``."""

    n: int
    spacing: float
    origin: tuple[float, float, float]

    def resized(self, size: int) -> "Grid":
        """``size``^3 voxels covering the same box (outer faces kept, voxel centres shifted)."""
        step = self.n * self.spacing / size
        shift = CANONICAL_DIRECTION @ np.full(3, (step - self.spacing) / 2.0)
        return Grid(int(size), step, tuple(np.asarray(self.origin, dtype=np.float64) + shift))

    def volume(self, array: np.ndarray) -> Volume:
        """``array`` (n, n, n) placed on this grid."""
        return Volume(array, (self.spacing,) * 3, self.origin, CANONICAL_DIRECTION.copy())


def grid_of(volume: Volume) -> Grid:
    """The grid of a canonical cube volume (as ``resample`` returns)."""
    n = volume.shape[0]
    if volume.shape != (n, n, n) or len(set(volume.spacing)) != 1 or not np.allclose(
            volume.direction, CANONICAL_DIRECTION):
        raise InputError(f"Expected a canonical cube volume, got shape {volume.shape} and spacing "
                         f"{volume.spacing}; pass it through a protocol first.")
    return Grid(n, float(volume.spacing[0]), tuple(volume.origin))


def resize_cube(volume: Volume, size: int, pad_hu: float = AIR_HU) -> Volume:
    """Resample a canonical cube of n^3 voxels to size^3 covering the same box (linear)."""
    grid = grid_of(volume)
    return volume if size == grid.n else resample(volume, grid.resized(size), pad_hu)


def resample(volume: Volume, grid: Grid, default: float, interpolator: str = "linear") -> Volume:
    """``volume`` (any orientation) resampled onto ``grid`` with SimpleITK; ``default`` outside it."""
    import SimpleITK as sitk

    modes = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    source = volume if interpolator == "nearest" else volume.with_array(
        np.asarray(volume.array, dtype=np.float32))
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing((float(grid.spacing),) * 3)
    resampler.SetOutputOrigin(tuple(float(o) for o in grid.origin))
    resampler.SetOutputDirection(tuple(CANONICAL_DIRECTION.ravel()))
    resampler.SetSize([grid.n] * 3)
    resampler.SetInterpolator(modes[interpolator])
    resampler.SetDefaultPixelValue(float(default))
    return volume_from_sitk(resampler.Execute(volume_to_sitk(source)))


def _checked(volume: Volume) -> Volume:
    if not isinstance(volume, Volume):
        raise InputError(f"Expected a CT volume (x2ct.image.Volume), got {type(volume).__name__}.")
    if min(volume.shape) < 2:
        raise InputError(
            f"The CT has shape {volume.shape}: a CT needs at least 2 voxels along every axis. A single "
            "image is an X-ray, not a CT."
        )
    return volume.check_finite()
