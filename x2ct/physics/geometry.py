"""Where the source and the detector are: the DRR geometry and the view frame.

All positions are in the canonical model frame (``x2ct.image``): axis 0
superior -> inferior, axis 1 anterior -> posterior, axis 2 patient right ->
left, in mm, with the isocentre at the origin. A view at gantry angle theta is
seen from the detector side looking at the source, superior up; its image
columns run along ``c = cos(theta) e2 + sin(theta) e1`` and its rows along
``e0``. Rays travel from the source to the detector along
``d = -cos(theta) e1 + sin(theta) e2``: theta = 0 is the PA frontal view
(source posterior), 90 the left lateral (source on the patient's right,
detector on the left), 180 the AP view (source anterior; its columns then run
towards the patient's right).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from x2ct.errors import InputError

BEAMS = ("cone", "parallel")


def view_frame(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(ray direction d, column direction c) of a view, as (axis0, axis1, axis2) vectors."""
    theta = math.radians(float(angle_deg))
    cos, sin = math.cos(theta), math.sin(theta)
    # Snap the round-off of cos(90 deg) etc. so that quarter views stay axis-aligned.
    cos, sin = (0.0 if abs(cos) < 1e-12 else cos), (0.0 if abs(sin) < 1e-12 else sin)
    return np.array([0.0, -cos, sin]), np.array([0.0, sin, cos])


def _positive(value, what: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{what} must be a positive number of mm, got {value}.")
    return number


@dataclasses.dataclass(frozen=True)
class DRRGeometry:
    """A flat-panel radiography set-up; the defaults are the X2CT benchmark's.

    ``sad``: source to isocentre (rotation axis), ``sid``: source to detector,
    both mm; ``detector_mm`` and ``pixels`` are (rows, columns). The detector is
    centred on the central ray. ``isocentre`` is the isocentre's offset from the
    volume centre in canonical (axis0, axis1, axis2) mm. A parallel beam
    ignores ``sad``/``sid``: its detector lies in the isocentre plane.
    """

    beam: str = "cone"
    sad: float = 541.0
    sid: float = 949.0
    detector_mm: tuple[float, float] = (500.0, 500.0)
    pixels: tuple[int, int] = (320, 320)
    isocentre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.beam not in BEAMS:
            raise InputError(f"Beam must be one of {', '.join(BEAMS)}, got {self.beam!r}.")
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("sad", _positive(self.sad, "The source-axis distance (SAD)"))
        set_("sid", _positive(self.sid, "The source-imager distance (SID)"))
        if self.beam == "cone" and self.sid <= self.sad:
            raise InputError(
                f"The source-imager distance ({self.sid:g} mm) must exceed the source-axis distance "
                f"({self.sad:g} mm): the detector sits behind the patient. Increase --sid or decrease --sad."
            )
        if len(self.detector_mm) != 2 or len(self.pixels) != 2:
            raise InputError("detector_mm and pixels are (rows, columns) pairs.")
        set_("detector_mm", tuple(_positive(v, "The detector size") for v in self.detector_mm))
        pixels = tuple(self.pixels)
        if any(int(p) != p or int(p) < 1 for p in pixels):
            raise InputError(f"The detector needs at least 1x1 whole pixels, got {pixels}.")
        set_("pixels", tuple(int(p) for p in pixels))
        iso = tuple(float(v) for v in self.isocentre)
        if len(iso) != 3 or not all(map(math.isfinite, iso)):
            raise InputError(f"The isocentre offset must be 3 finite numbers (mm), got {self.isocentre}.")
        set_("isocentre", iso)

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """Detector pixel size (row spacing, column spacing) in mm."""
        return (self.detector_mm[0] / self.pixels[0], self.detector_mm[1] / self.pixels[1])

    def with_pixels(self, rows: int, cols: int | None = None) -> "DRRGeometry":
        """Same detector area sampled with another number of pixels."""
        return dataclasses.replace(self, pixels=(rows, rows if cols is None else cols))

    def check_volume(self, extent_mm) -> None:
        """Refuse a cone beam whose source or detector lies within the volume's bounding sphere."""
        if self.beam != "cone":
            return
        radius = 0.5 * float(np.linalg.norm(np.asarray(extent_mm, dtype=float)))
        offset = float(np.linalg.norm(self.isocentre))
        reach = radius + offset  # farthest a voxel can be from the isocentre
        if self.sad <= reach:
            raise InputError(
                f"The X-ray source ({self.sad:g} mm from the isocentre) would lie inside the volume's "
                f"bounding sphere (radius {radius:.0f} mm, isocentre {offset:.0f} mm off its centre): "
                f"use a source-axis distance above {reach:.0f} mm or crop the volume."
            )
        if self.sid - self.sad <= reach:
            raise InputError(
                f"The detector ({self.sid - self.sad:g} mm behind the isocentre) would cut through the "
                f"volume's bounding sphere (radius {radius:.0f} mm, isocentre {offset:.0f} mm off its "
                f"centre): use a source-imager distance above {self.sad + reach:.0f} mm or crop the volume."
            )


#: The X2CT benchmark geometry (Plastimatch drr -g "541 949" -z "500 500" -r "320 320").
X2CT_GEOMETRY = DRRGeometry()
