"""Novel views of a reconstruction: red-cyan stereo and a turntable of DRRs.

Henzler et al. (seed 004) show what a volume from one radiograph gives that
the radiograph does not: the patient seen in stereo from the input view, and
seen from any other angle (e.g. the lateral view predicted from a PA film).
Every view here is a DRR of the volume (``x2ct.physics.drr``, Beer-Lambert
line integrals, the X2CT geometry by default) at a gantry angle about the
patient's long axis (axis 0), so the frame at 0 degrees is exactly the PA
DRR and the frame at 90 degrees the left lateral.

Stereo: the viewer stands on the detector side (``x2ct.physics.geometry``);
raising the gantry angle moves the viewpoint towards the viewer's right
(along the image columns), so the left eye sees the view at ``angle -
half_angle`` and the right eye at ``angle + half_angle``. In the red-cyan
anaglyph the red channel is the left eye's image and green + blue the
right eye's, on one shared display window.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from x2ct.errors import InputError
from x2ct.image import View, Volume, XRay, view_angle
from x2ct.physics import X2CT_GEOMETRY, DRRGeometry, drr

#: Degrees each eye turns away from the viewing direction (about 6 degrees between the eyes, as at 60 cm).
STEREO_HALF_ANGLE = 3.0
#: Turntable frames are named by index and angle.
FRAME_NAME = "frame_{index:03d}_{angle:05.1f}deg.png"


def view_at(volume: Volume, angle: float, geometry: DRRGeometry = X2CT_GEOMETRY, device: str = "cpu") -> XRay:
    """The DRR of ``volume`` (HU) at a gantry angle; 0 and 90 are named frontal and lateral."""
    named = {0.0: "frontal", 90.0: "lateral"}.get(float(angle) % 360.0, float(angle))
    return drr(volume, named, geometry, device=device)


def turntable_angles(count: int) -> list[float]:
    """``count`` gantry angles evenly around the patient, starting at 0 (PA)."""
    if int(count) != count or count < 1:
        raise InputError(f"A turntable needs a whole number of frames of at least 1, got {count}.")
    return [360.0 * i / int(count) for i in range(int(count))]


def turntable(volume: Volume, count: int, geometry: DRRGeometry = X2CT_GEOMETRY, device: str = "cpu") -> list[XRay]:
    """DRRs at ``turntable_angles(count)``: frame 0 is the PA view, frame count/4 (if whole) the lateral."""
    return [view_at(volume, angle, geometry, device) for angle in turntable_angles(count)]


def stereo_pair(volume: Volume, view: View = "frontal", half_angle: float = STEREO_HALF_ANGLE,
                geometry: DRRGeometry = X2CT_GEOMETRY, device: str = "cpu") -> tuple[XRay, XRay]:
    """(left eye, right eye) DRRs of the volume seen from ``view``."""
    if not 0.0 < float(half_angle) <= 20.0:
        raise InputError(f"The stereo half angle must be in (0, 20] degrees, got {half_angle}.")
    centre = view_angle(view)
    return (drr(volume, centre - half_angle, geometry, device=device),
            drr(volume, centre + half_angle, geometry, device=device))


def shared_window(images: list[np.ndarray], percentiles=(0.5, 99.5)) -> tuple[float, float]:
    """One display range for several images, so that their grey levels compare."""
    values = np.concatenate([np.asarray(image, dtype=np.float32).ravel() for image in images])
    low, high = np.percentile(values, percentiles)
    return float(low), float(max(high, low + 1e-6))


def to_gray(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    low, high = window
    return (np.clip((np.asarray(image, dtype=np.float32) - low) / (high - low), 0.0, 1.0) * 255).round().astype(
        np.uint8)


def anaglyph(left: np.ndarray, right: np.ndarray) -> Image.Image:
    """Red-cyan anaglyph: red = left eye, green and blue = right eye."""
    if np.shape(left) != np.shape(right):
        raise InputError(f"The two eyes' images differ in size: {np.shape(left)} and {np.shape(right)}.")
    window = shared_window([left, right])
    red, cyan = to_gray(left, window), to_gray(right, window)
    return Image.fromarray(np.stack([red, cyan, cyan], axis=-1), mode="RGB")


def stereo_anaglyph(volume: Volume, view: View = "frontal", half_angle: float = STEREO_HALF_ANGLE,
                    geometry: DRRGeometry = X2CT_GEOMETRY, device: str = "cpu") -> Image.Image:
    """The red-cyan anaglyph of the volume seen from ``view``, with square physical pixels."""
    left, right = stereo_pair(volume, view, half_angle, geometry, device)
    image = anaglyph(left.image, right.image)
    rows, cols = left.shape
    row_mm, col_mm = left.pixel_spacing
    if not np.isclose(row_mm, col_mm):
        image = image.resize((cols, max(1, round(rows * row_mm / col_mm))), Image.Resampling.BILINEAR)
    return image


def frames_to_images(frames: list[XRay]) -> list[Image.Image]:
    """Turntable frames as greyscale pictures on one shared window (brightness comparable frame to frame)."""
    window = shared_window([frame.image for frame in frames])
    return [Image.fromarray(to_gray(frame.image, window), mode="L") for frame in frames]


def write_novel_views(volume: Volume, folder, stem: str) -> dict[str, str]:
    """The demo's novel views of a reconstruction: its anaglyph from the front and its lateral DRR (PNG)."""
    from pathlib import Path

    from x2ct.render import save_png, xray_panel

    folder = Path(folder)
    written = {f"{stem}-anaglyph": save_png(stereo_anaglyph(volume), folder / f"{stem}-anaglyph.png")}
    lateral = xray_panel(view_at(volume, 90.0), height=512, lines=["lateral DRR of the reconstruction (predicted)"])
    written[f"{stem}-lateral-predicted"] = save_png(lateral, folder / f"{stem}-lateral-predicted.png")
    return {key: str(path) for key, path in written.items()}
