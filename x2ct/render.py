"""PNG previews for reports and the demo, with Pillow (no Slicer, no GPU).

Images are shown with their physical aspect ratio (pixels resampled to
square millimetres) and labelled, so a reader can check orientation: the
axial slice is seen from the feet (patient's right on the viewer's left), the
coronal from the front, the sagittal from the patient's left (anterior on the left), as in Slicer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from x2ct.image import Volume, XRay, to_canonical

#: (level, width) in HU.
CT_WINDOWS = {"soft-tissue": (40.0, 400.0), "lung": (-600.0, 1500.0), "bone": (400.0, 1800.0)}


def window(array: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map values to 0..255 uint8 with a display window."""
    low = level - width / 2.0
    scaled = (np.asarray(array, dtype=np.float32) - low) / max(width, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def auto_window(array: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Window between two percentiles (for X-rays and DRRs of unknown scale)."""
    low, high = np.percentile(array, percentiles)
    return window(array, (low + high) / 2.0, max(high - low, 1e-6))


def _panel(gray: np.ndarray, spacing_rc: tuple[float, float], height: int, label: str) -> Image.Image:
    """One labelled image, resized to ``height`` pixels with square physical pixels."""
    rows, cols = gray.shape
    aspect = (cols * spacing_rc[1]) / (rows * spacing_rc[0])
    image = Image.fromarray(gray).resize((max(1, round(height * aspect)), height), Image.Resampling.BILINEAR)
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.text((4, 2), label, fill=(255, 220, 0), font=ImageFont.load_default())
    return image


def _row(panels: list[Image.Image], gap: int = 4) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


def _stack(rows: list[Image.Image], gap: int = 4) -> Image.Image:
    width = max(r.width for r in rows)
    canvas = Image.new("RGB", (width, sum(r.height for r in rows) + gap * (len(rows) - 1)), (0, 0, 0))
    y = 0
    for row in rows:
        canvas.paste(row, (0, y))
        y += row.height + gap
    return canvas


def ct_planes(volume: Volume, level: float, width: float, height: int = 256,
              title: str = "") -> Image.Image:
    """Central axial, coronal and sagittal slices of a CT, and their MIP row below."""
    canonical = to_canonical(volume)
    a = canonical.array
    s_lr, s_ap, s_si = canonical.spacing  # spacing of axes 2, 1, 0
    d, h, w = a.shape
    slices = [
        (a[d // 2], (s_ap, s_lr), "axial"),
        (a[:, h // 2, :], (s_si, s_lr), "coronal"),
        (a[:, :, w // 2], (s_si, s_ap), "sagittal"),
    ]
    mips = [
        (a.max(axis=0), (s_ap, s_lr), "axial MIP"),
        (a.max(axis=1), (s_si, s_lr), "coronal MIP"),
        (a.max(axis=2), (s_si, s_ap), "sagittal MIP"),
    ]
    top = _row([_panel(window(x, level, width), sp, height, f"{title} {name}".strip()) for x, sp, name in slices])
    bottom = _row([_panel(auto_window(x), sp, height, name) for x, sp, name in mips])
    return _stack([top, bottom])


def xray_panel(xray: XRay, height: int = 512, lines: list[str] | None = None) -> Image.Image:
    """A radiograph with its geometry written on it."""
    panel = _panel(auto_window(xray.image), xray.pixel_spacing, height, "")
    draw = ImageDraw.Draw(panel)
    rows, cols = xray.shape
    text = [f"view: {xray.view}", f"{rows}x{cols} px, {xray.pixel_spacing[0]:.3f}x{xray.pixel_spacing[1]:.3f} mm",
            f"field: {rows * xray.pixel_spacing[0]:.0f}x{cols * xray.pixel_spacing[1]:.0f} mm"]
    if xray.sid:
        text.append(f"SID {xray.sid:.0f} mm" + (f", SAD {xray.sad:.0f} mm" if xray.sad else ""))
    text += lines or []
    for n, line in enumerate(text):
        draw.text((6, 4 + 12 * n), line, fill=(255, 220, 0), font=ImageFont.load_default())
    return panel


def side_by_side(images: list[Image.Image]) -> Image.Image:
    return _row(images)


def stacked(images: list[Image.Image]) -> Image.Image:
    """Images one above the other (left-aligned)."""
    return _stack(images)


def save_png(image: Image.Image, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a PNG all or nothing (``x2ct.io.outputs``): staged, read back, fsynced, renamed."""
    from x2ct.io.outputs import atomic_output, check_target

    path = check_target(path, {".png": "PNG"}, "a PNG picture", overwrite=overwrite)

    def reads_back(staged: Path) -> None:
        with Image.open(staged) as written:
            written.load()

    with atomic_output(path, overwrite=overwrite, check=reads_back,
                       needed_bytes=image.width * image.height) as partial:
        image.save(partial, format="PNG")
    return path
