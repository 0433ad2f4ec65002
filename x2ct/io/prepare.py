"""Real-film preparation: one place where a radiograph becomes the view a model was trained on.

A DRR-trained network expects its views framed, scaled and shaded like the
training DRRs (X2CT protocol: a 500 mm detector at SID 949 / SAD 541, i.e.
about 285 mm at the patient, normalised per image, 8-bit levels). A real
film differs in every one of these, and a field report on DRR-trained models
found that each skipped step failed silently. ``prepare`` therefore runs
every step and records each in ``PreparedView.steps`` (provenance):

1. ``decode``: MONOCHROME1/2, Rescale Slope/Intercept, PatientOrientation
   and EXIF orientation are applied by the readers (``x2ct.io.dicom``,
   ``x2ct.io.xrays``); this step records what they did, it does not redo it.
2. ``polarity`` (films, frontal views): a picture with no photometric
   information whose mediastinum is darker than both lung fields is a
   negative; it is inverted.
3. ``borders``: collimation borders (flat, bright) and black bands (flat,
   dark) are detected line by line from each edge and cropped.
4. ``field``: the chest is centred and scaled to the training field. With a
   known pixel spacing the scale comes from it (and the SID/SAD when given);
   otherwise from the detected lung field, whose width and centre are put
   where they lie in the training DRRs; failing both, the whole image is
   fitted (as before). The record says which.
5. ``align`` (films): the window of step 4, and the whole image as a second
   start, refined by registration to the mean training DRR of the view's
   angle (``x2ct.io.align``: zoom and shift, or shift only when the spacing
   sets the scale), kept only when it matches the mean DRR better. A tilt
   is not corrected (it did not help on simulated films; the film
   simulation trains the models with rotations of +-5 degrees).
6. ``normalise``: the DRRs' own normalisation (``x2ct_normalise``).
7. ``intensity`` (films): histogram matching to the training DRRs' value
   distribution for the view's angle (quantiles in ``drr_reference.json``).

Kinds: ``film`` runs every step; ``drr`` (a DRR made by x2ct, in memory or
read back from a file: values in [0, 1]) only decode, field (from spacing)
and normalise, exactly as before; ``auto`` picks one of the two (``_kind``).
The reference statistics (lung field, quantiles, mean view, and the input-likeness
model of ``x2ct.likeness``) are computed from training DRRs by
``python -m x2ct.io.prepare_reference`` (docs/real-radiographs.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from x2ct.errors import InputError
from x2ct.image import XRay, view_angle

#: The reference statistics of the training DRRs, shipped with the package.
REFERENCE_FILE = Path(__file__).with_name("drr_reference.json")
#: X2CT benchmark detector: field (mm) and pixels, and its magnification SID / SAD.
DETECTOR_MM = 500.0
DETECTOR_PIXELS = 320
X2CT_SAD, X2CT_SID = 541.0, 949.0
#: Working resolution of the detection steps (longest side, pixels).
WORKING_PIXELS = 512
#: A border line: this share of its pixels within BORDER_SPREAD of its median, the median at an extreme.
BORDER_SHARE, BORDER_SPREAD, BORDER_EXTREME = 0.9, 0.08, 0.12
#: Borders are looked for up to this fraction of the side from each edge.
BORDER_MAX = 0.3
KINDS = ("auto", "film", "drr")
#: Fewer pixels than this on a side is a thumbnail or an icon, not a radiograph.
MIN_PIXELS = 16
#: Larger intensities are refused: no detector or DRR gives them, and float32 arithmetic on them overflows.
MAX_INTENSITY = 1e12
#: A pixel spacing is believed when it makes the image's longest side this multiple of DETECTOR_MM; outside,
#: it is a wrong tag (or not a radiograph) and would ask for a window of billions of pixels, so it is ignored.
EXTENT_RANGE = (0.25, 4.0)
#: A detected lung field is used when it makes the training field this share of the image's width.
LUNG_SCALE = (0.5, 1.5)


@dataclasses.dataclass
class PreparedView:
    """The view the network sees (size, size) in [0, 1], the provenance of each step, and notes for the user."""

    view: np.ndarray
    steps: list[dict]
    notes: list[str]
    kind: str


def prepare(xray: XRay, size: int, kind: str = "auto") -> PreparedView:
    """Prepare one X-ray as the training DRRs were made (module docstring); ``kind``: auto, film or drr."""
    if kind not in KINDS:
        raise InputError(f"Unknown input kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    xray.check_finite()
    kind = _kind(xray) if kind == "auto" else kind
    name = Path(str(xray.metadata.get("source", "the X-ray"))).name or "the X-ray"
    angle = view_angle(xray.view) % 360.0
    frontal = angle in (0.0, 180.0)
    image = np.asarray(xray.image, dtype=np.float32)
    largest = float(np.abs(image).max())
    if largest > MAX_INTENSITY:
        raise InputError(f"{name} holds values up to {largest:.3g}, far beyond any radiograph's (stored values, "
                         "attenuation or line integrals); rescale it or export it again.")
    if float(image.max() - image.min()) <= 0:
        raise InputError(f"{name} is blank (one grey level); give the radiograph itself.")
    if min(image.shape) < MIN_PIXELS:
        raise InputError(f"{name} is only {image.shape[1]}x{image.shape[0]} pixels, a thumbnail rather than a "
                         f"radiograph (at least {MIN_PIXELS} a side); give the full-resolution image.")
    steps = [_decode_record(xray, kind)]
    notes: list[str] = []
    spacing = tuple(float(s) for s in xray.pixel_spacing)
    spacing_known = not str(xray.metadata.get("pixel_spacing_source", "file")).startswith("assumed")
    extent = max(image.shape[0] * spacing[0], image.shape[1] * spacing[1])  # mm, longest side
    if spacing_known and not EXTENT_RANGE[0] * DETECTOR_MM <= extent <= EXTENT_RANGE[1] * DETECTOR_MM:
        spacing_known = False
        notes.append(f"{name}: its pixel spacing ({spacing[0]:g} x {spacing[1]:g} mm) would make it {extent:g} mm "
                     "across, not the size of a radiograph; the spacing was ignored and the scale taken from the "
                     "image. Check the file's pixel spacing for true geometry.")
    lungs = None
    if kind == "film":
        image, spacing, record = _working_copy(image, spacing)
        steps.append(record)
        if frontal and "PhotometricInterpretation" not in xray.metadata:
            image = _polarity(image, steps, notes, name)
        image = _borders(image, steps, notes, name)
        lungs = lung_field(image)
    window = _field(image, spacing, spacing_known, xray, lungs, angle, steps, notes, name)
    if kind == "film":
        window = _align(image, window, angle, spacing_known, steps, notes, name)
    view = _normalise(_crop_or_pad(image, *window), size)
    steps.append({"step": "normalise", "how": "x2ct_normalise: minimum subtracted, divided by the maximum, 8-bit "
                                              f"levels, {DETECTOR_PIXELS} -> {size} pixels"})
    if kind == "film":
        view = _match_intensity(view, angle, steps, notes, name)
    return PreparedView(view.astype(np.float32), steps, notes, kind)


# ------------------------------------------------------------------------------------------- steps


def _kind(xray: XRay) -> str:
    """'drr' for a DRR x2ct made, else 'film'.

    In memory a DRR says so (``source``), and a DICOM film by its header.
    Read back from a file (the demo's inputs, Slicer's temporary copies of its
    X-ray nodes) a film is known by its values: films decoded from pictures or
    integer volumes hold stored integers (0..255, 0..4095, 0..32767...), while
    DRRs are fractional line integrals (X2CT-mode DRRs in [0, 1], raw ones a
    little above). A film already scaled to fractions is therefore taken as a
    DRR: pass kind="film".
    """
    if xray.metadata.get("source") == "x2ct drr":
        return "drr"
    if "PhotometricInterpretation" in xray.metadata:
        return "film"
    image = np.asarray(xray.image)
    stored_integers = bool(np.all(image == np.round(image)))
    return "film" if stored_integers and float(image.max()) > 1.0 else "drr"


def _decode_record(xray: XRay, kind: str) -> dict:
    keys = ("PhotometricInterpretation", "orientation", "pixel_spacing_source", "view_source", "Modality")
    record = {"step": "decode", "kind": kind, "by": "the X-ray reader (x2ct.io)"}
    record.update({key: str(xray.metadata[key]) for key in keys if key in xray.metadata})
    if record.get("PhotometricInterpretation") == "MONOCHROME1":
        record["inverted"] = "MONOCHROME1: stored values inverted so that bone is bright"
    return record


def _working_copy(image: np.ndarray, spacing) -> tuple[np.ndarray, tuple, dict]:
    """Shrink (antialiased) so the longest side is at most WORKING_PIXELS; spacing follows."""
    import torch
    import torch.nn.functional as F

    factor = WORKING_PIXELS / max(image.shape)
    if factor >= 1.0:
        return image, spacing, {"step": "working copy", "shape": list(image.shape), "resized": False}
    shape = (max(8, round(image.shape[0] * factor)), max(8, round(image.shape[1] * factor)))
    small = F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None, None], size=shape, mode="bilinear",
                          align_corners=False, antialias=True)[0, 0].numpy()
    new_spacing = (spacing[0] * image.shape[0] / shape[0], spacing[1] * image.shape[1] / shape[1])
    return small, new_spacing, {"step": "working copy", "shape": list(shape), "from": list(image.shape),
                                "resized": True}


def _unit(image: np.ndarray) -> np.ndarray:
    """The image mapped to [0, 1] between its 0.5th and 99.5th percentiles (for detection only)."""
    low, high = np.percentile(image, (0.5, 99.5))
    return np.clip((image - low) / max(float(high - low), 1e-6), 0.0, 1.0)


def _polarity(image: np.ndarray, steps: list, notes: list, name: str) -> np.ndarray:
    """Invert a negative: in a chest film the mediastinum is brighter than both lung fields."""
    unit = _unit(image)
    rows, cols = unit.shape
    band = slice(int(0.25 * rows), int(0.6 * rows))
    centre = unit[band, int(0.45 * cols):int(0.55 * cols)].mean()
    sides = [unit[band, int(a * cols):int(b * cols)].mean() for a, b in ((0.2, 0.35), (0.65, 0.8))]
    inverted = bool(centre < min(sides))
    steps.append({"step": "polarity", "mediastinum": round(float(centre), 3),
                  "lung_fields": [round(float(s), 3) for s in sides], "inverted": inverted})
    if inverted:
        notes.append(f"{name}: looked like a negative (mediastinum darker than the lungs) and was inverted.")
        return image.max() + image.min() - image
    return image


def border_widths(unit: np.ndarray) -> dict[str, int]:
    """Widths (pixels) of the flat bright or dark border on each side of a [0, 1] image."""
    widths = {}
    for side in ("top", "bottom", "left", "right"):
        lines = {"top": unit, "bottom": unit[::-1], "left": unit.T, "right": unit.T[::-1]}[side]
        limit = int(BORDER_MAX * lines.shape[0])
        width = 0
        while width < limit and _is_border_line(lines[width]):
            width += 1
        widths[side] = width
    return widths


def _is_border_line(line: np.ndarray) -> bool:
    median = float(np.median(line))
    if BORDER_EXTREME < median < 1.0 - BORDER_EXTREME:
        return False
    return float(np.mean(np.abs(line - median) <= BORDER_SPREAD)) >= BORDER_SHARE


def _borders(image: np.ndarray, steps: list, notes: list, name: str) -> np.ndarray:
    widths = border_widths(_unit(image))
    rows, cols = image.shape
    kept = image[widths["top"]:rows - widths["bottom"], widths["left"]:cols - widths["right"]]
    steps.append({"step": "borders", "cropped_pixels": widths, "shape": list(kept.shape)})
    if any(widths.values()):
        notes.append(f"{name}: collimation borders or black bands cropped ("
                     + ", ".join(f"{side} {px}" for side, px in widths.items() if px) + " working pixels).")
    return kept


def lung_field(image: np.ndarray) -> tuple[float, float, float, float] | None:
    """(top row, centre col, height, width) of the lung fields as fractions of the sides, or None.

    The lungs are the large dark regions (below the Otsu threshold of the
    smoothed image) once the air outside the body is taken away: that air is
    far darker (below half the threshold) and reaches the image's edge.
    """
    import SimpleITK as sitk

    side = max(image.shape)
    unit = ndimage.gaussian_filter(_unit(image), 0.01 * side)
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(sitk.GetImageFromArray(unit.astype(np.float32)))
    level = otsu.GetThreshold()
    air, count = ndimage.label(unit < 0.5 * level)
    edge = np.unique(np.concatenate([air[0], air[-1], air[:, 0], air[:, -1]]))
    outside = ndimage.binary_dilation(np.isin(air, edge[edge > 0]), iterations=max(1, round(0.02 * side)))
    dark = ndimage.binary_opening((unit < level) & ~outside, iterations=max(1, round(0.01 * side)))
    regions, count = ndimage.label(dark)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(np.ones(dark.shape), regions, range(1, count + 1))
    centres = ndimage.center_of_mass(dark, regions, range(1, count + 1))
    h, w = dark.shape
    inside = sorted(((size, label) for label, (size, (r, c)) in enumerate(zip(sizes, centres), start=1)
                     if size >= 0.01 * dark.size and 0.1 * h < r < 0.8 * h and 0.1 * w < c < 0.9 * w),
                    reverse=True)
    if not inside:
        return None
    chosen = [label for size, label in inside[:2] if size >= 0.25 * inside[0][0]]
    return field_box(np.isin(regions, chosen))


def field_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(top row, centre col, height, width) of a lung mask as fractions of the sides.

    Rows narrower than a fifth of the widest row are left out (a thin dark
    neck or trachea); width and centre come from the middle half of the rows
    (the mid lungs), which neither the flaring apices nor the diaphragm set.
    """
    h, w = mask.shape
    widths = mask.sum(axis=1)
    rows = np.flatnonzero(widths >= 0.2 * widths.max())
    r0, r1 = rows.min(), rows.max() + 1
    middle = mask[r0 + (r1 - r0) // 4:r0 + 3 * (r1 - r0) // 4 + 1]  # width and centre from the mid lungs
    cols = np.flatnonzero(middle.any(axis=0))
    c0, c1 = cols.min(), cols.max() + 1
    return (r0 / h, (c0 + c1) / 2.0 / w, (r1 - r0) / h, (c1 - c0) / w)


def _field(image, spacing, spacing_known: bool, xray: XRay, lungs, angle: float, steps: list, notes: list,
           name: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """The window (centre, size_rc) of the training field, centred on the lungs where they were found."""
    reference = reference_for(angle)
    rows, cols = image.shape
    record: dict = {"step": "field"}
    if lungs is not None and reference is not None:
        ratio = lungs[3] / reference["lung_field"][3]  # the field's side as a share of the image's width
        if not LUNG_SCALE[0] <= ratio <= LUNG_SCALE[1]:
            record["lung_field_rejected"] = [round(float(v), 4) for v in lungs]
            lungs = None  # one lung, or a dark region that is not the lungs: do not zoom onto it
    if spacing_known:
        field = DETECTOR_MM
        if xray.sad and xray.sid:
            field = DETECTOR_MM * (X2CT_SAD / X2CT_SID) * (xray.sid / xray.sad)
            record["magnification"] = f"SID {xray.sid:g} / SAD {xray.sad:g} from the file"
        else:
            notes.append(f"{name}: source distances unknown; the X2CT magnification ({X2CT_SID / X2CT_SAD:.2f}) "
                         "was assumed.")
            record["magnification"] = "assumed X2CT (SID 949 / SAD 541)"
        size_rc = (field / spacing[0], field / spacing[1])
        record.update(scale="from the pixel spacing", field_mm=round(field, 1))
    elif lungs is not None and reference is not None:
        side = lungs[3] * cols / reference["lung_field"][3]
        size_rc = (side, side)
        record["scale"] = "from the detected lung field (pixel spacing unknown)"
        notes.append(f"{name}: pixel spacing unknown; scaled so the detected lung field is as wide as in the "
                     "training DRRs.")
    else:
        side = float(max(rows, cols))
        size_rc = (side, side)
        record["scale"] = "whole image fitted (pixel spacing unknown, no lung field found)"
        notes.append(f"{name}: pixel spacing unknown, so the whole image was fitted to the model's field of "
                     "view; anatomy sizes may not match the training data. Give the spacing for true geometry.")
    if lungs is not None and reference is not None:  # the lung tops and the lungs' middle where the DRRs have them
        centre = (lungs[0] * rows - (reference["lung_field"][0] - 0.5) * size_rc[0],
                  lungs[1] * cols - (reference["lung_field"][1] - 0.5) * size_rc[1])
        record["centre"] = "lung apices and lung-field middle placed where the training DRRs have them"
        record["lung_field"] = [round(float(v), 4) for v in lungs]
    else:
        centre = (rows / 2.0, cols / 2.0)
        record["centre"] = "image centre"
    record["crop_rows_cols"] = _window_record(centre, size_rc)
    steps.append(record)
    return centre, size_rc


def _window_record(centre, size_rc) -> list[float]:
    """A window as (top, left, rows, cols) working pixels, rounded for provenance."""
    return [round(float(centre[0] - size_rc[0] / 2), 1), round(float(centre[1] - size_rc[1] / 2), 1),
            round(float(size_rc[0]), 1), round(float(size_rc[1]), 1)]


def _align(image, window, angle: float, spacing_known: bool, steps: list, notes: list, name: str):
    """Refine the field window by registering the view to the mean training DRR (``x2ct.io.align``)."""
    from x2ct.io.align import refine_window

    reference = reference_for(angle)
    if reference is None or "mean_view" not in reference:
        steps.append({"step": "align", "aligned": False, "why": f"no mean training DRR for {angle:g} degrees"})
        return window
    mean_view = np.asarray(reference["mean_view"], dtype=np.float32)

    def preview(centre, size_rc):  # the view of a window as the registration sees it
        return match_intensity(_normalise(_crop_or_pad(image, centre, size_rc), mean_view.shape[0]), angle)

    rows, cols = image.shape
    whole = ((rows / 2.0, cols / 2.0), window[1] if spacing_known else (float(max(rows, cols)),) * 2)
    refined, record = refine_window(preview, [window, whole], mean_view, scale=not spacing_known)
    record["step"] = "align"
    if record["aligned"]:
        record["crop_rows_cols"] = _window_record(*refined)
        notes.append(f"{name}: field refined by registration to the mean training DRR ("
                     + ("translation only: the pixel spacing sets the scale" if spacing_known else
                        f"zoom x{1.0 / record['scale']:.2f}") + ").")
    steps.append(record)
    return refined


def _crop_or_pad(image: np.ndarray, centre, size_rc) -> np.ndarray:
    """The (size_rc) window of ``image`` around ``centre`` (fractional pixels), the minimum outside."""
    rows, cols = max(1, round(size_rc[0])), max(1, round(size_rc[1]))
    top, left = int(round(centre[0] - rows / 2.0)), int(round(centre[1] - cols / 2.0))
    out = np.full((rows, cols), image.min(), dtype=np.float32)
    src_r = slice(max(0, top), min(image.shape[0], top + rows))
    src_c = slice(max(0, left), min(image.shape[1], left + cols))
    if src_r.start < src_r.stop and src_c.start < src_c.stop:
        out[src_r.start - top:src_r.stop - top, src_c.start - left:src_c.stop - left] = image[src_r, src_c]
    return out


def _normalise(image: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from x2ct.physics import x2ct_normalise

    detector = F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None, None],
                             size=(DETECTOR_PIXELS, DETECTOR_PIXELS), mode="bilinear", align_corners=False,
                             antialias=True)
    return x2ct_normalise(detector - detector.min(), size)[0, 0].numpy()


def _match_intensity(view: np.ndarray, angle: float, steps: list, notes: list, name: str) -> np.ndarray:
    reference = reference_for(angle)
    if reference is None:
        steps.append({"step": "intensity", "matched": False, "why": f"no reference for {angle:g} degrees"})
        notes.append(f"{name}: no training-DRR intensity reference for a {angle:g} degree view; intensities "
                     "were not matched.")
        return view
    out = match_intensity(view, angle)
    steps.append({"step": "intensity", "matched": True, "how": "histogram matching to the training DRRs' "
                  f"quantiles at {reference['angle']:g} degrees", "median_before": round(float(np.median(view)), 3),
                  "median_after": round(float(np.median(out)), 3)})
    return out


def match_intensity(view: np.ndarray, angle: float) -> np.ndarray:
    """Histogram matching of a view to the training DRRs' quantiles at ``angle`` (ties keep one level), 8-bit
    levels; the view unchanged when there is no reference for the angle."""
    reference = reference_for(angle % 360.0)
    if reference is None:
        return view
    levels = np.asarray(reference["quantiles"], dtype=np.float64)
    values, inverse, counts = np.unique(view, return_inverse=True, return_counts=True)
    position = (np.cumsum(counts) - counts / 2.0) / view.size  # mid-rank of each grey level
    mapped = np.interp(position, np.linspace(0.0, 1.0, len(levels)), levels)
    return np.floor(mapped[inverse].reshape(view.shape) * 255.0 + 0.5) / 255.0


# ------------------------------------------------------------------------------------------- reference


@functools.lru_cache(maxsize=1)
def load_reference() -> dict:
    """The shipped reference statistics (empty when the file is missing: steps that need it say so)."""
    if not REFERENCE_FILE.is_file():
        return {}
    try:
        return json.loads(REFERENCE_FILE.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{REFERENCE_FILE} is damaged ({error}); reinstall x2ct or run "
                         "python -m x2ct.io.prepare_reference.") from None


def reference_for(angle: float) -> dict | None:
    """The reference of the view angle (0 or 90, to within 1 degree), or None."""
    for view in load_reference().get("views", []):
        if abs((float(view["angle"]) - angle + 180.0) % 360.0 - 180.0) <= 1.0:
            return view
    return None
