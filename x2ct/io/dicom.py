"""DICOM: CT series and CR/DX radiographs.

pydicom reads the headers, so the geometry is computed here in plain sight
(slices sorted along the slice normal, spacing and tilt checked). SimpleITK
(GDCM) decodes the pixels because it handles every common transfer syntax,
including the JPEG-lossless and JPEG 2000 compression that hospital archives
use. GDCM applies Rescale Slope/Intercept and turns MONOCHROME1 into
MONOCHROME2, so bone comes out bright; the tests check both on files written
with pydicom.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from x2ct.errors import InputError
from x2ct.image import Volume, XRay, normalise_view, view_angle
from x2ct.io import checks

#: DICOM ViewPosition -> x2ct view. A right lateral (RL) is seen from the patient's
#: right, gantry angle 270 in the convention of x2ct.image.
VIEW_POSITIONS = {"PA": "frontal", "AP": "ap", "LL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
                  "RL": 270.0}
#: For a view at a multiple of 90 degrees: the patient direction the image columns should run
#: towards (x2ct.image: theta=0 -> patient left, 90 -> posterior, ...). Rows always run to the feet.
COLUMN_DIRECTION = {0: "L", 90: "P", 180: "R", 270: "A"}
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
#: Modalities whose images are slices of a 3D series.
SLICE_MODALITIES = ("CT", "MR", "PT", "NM")
#: Header fields kept in XRay.metadata for provenance (identifiers, not names).
PROVENANCE = ("Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "StudyDate",
              "Manufacturer", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation")


def read_header(path: Path):
    """The DICOM header without pixel data; anything pydicom cannot parse is refused."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        raise InputError(f"{path} is not a readable DICOM file (corrupt or another format); export it again "
                         "from the PACS or scanner.") from None


def is_series_slice(header) -> bool:
    """A CT/MR/PET/NM slice with its position in a 3D series.

    A localizer (CT scout or topogram) carries the CT modality but is a
    projection radiograph, so it is not a slice: it loads as an X-ray.
    """
    image_type = header.get("ImageType", "")
    parts = image_type.split("\\") if isinstance(image_type, str) else list(image_type)
    return (str(header.get("Modality", "")) in SLICE_MODALITIES and "ImagePositionPatient" in header
            and "LOCALIZER" not in (str(part).upper() for part in parts))


# ---------------------------------------------------------------- CT series


def read_ct_series(path: Path, max_bytes: int | None = None) -> Volume:
    """A CT series from a folder of slices, or the series of one given slice (float32 HU)."""
    import SimpleITK as sitk

    chosen = None if path.is_dir() else read_header(path)
    if chosen is not None and "ImagePositionPatient" not in chosen:
        if int(chosen.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(f"{path} is a multi-frame (enhanced) DICOM object, which is not supported; convert "
                             "it to a classic series or to NRRD/NIfTI (e.g. with 3D Slicer or dcm2niix).")
        raise InputError(f"{path} is a single {chosen.get('Modality', 'DICOM')} image without slice position, "
                         "not part of a CT series: load it as an X-ray, or give the folder of the CT slices.")
    series = _series_in(path if path.is_dir() else path.parent)
    if chosen is not None:
        slices = series.get(str(chosen.get("SeriesInstanceUID", "")), [])
    elif len(series) > 1:
        listing = "; ".join(f"{s[0][1].get('SeriesDescription', '?')!s} ({len(s)} files, e.g. {s[0][0].name})"
                            for s in series.values())
        raise InputError(f"{path} holds {len(series)} series: {listing}. Give the path of one file of the "
                         "series to load.")
    else:
        slices = next(iter(series.values()), [])
    if not slices:
        raise InputError(f"No DICOM CT slices found in {path}; give the folder that holds the slice files "
                         "(sub-folders are not searched).")
    files, spacing, origin, direction = _geometry(slices)
    first = slices[0][1]
    checks.check_memory(path, (len(files), int(first.Rows), int(first.Columns)), max_bytes)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        array = sitk.GetArrayFromImage(reader.Execute())
    except RuntimeError:
        raise InputError(f"The pixel data of the series in {path} cannot be decoded (corrupt files or an "
                         "unsupported compression); export the series again uncompressed.") from None
    if array.ndim != 3 or array.shape != (len(files), int(first.Rows), int(first.Columns)):
        raise InputError(f"The series in {path} decoded to shape {array.shape}, not one frame per slice; "
                         "export it as a classic single-frame series.")
    checks.check_finite(array, path)
    return Volume(array, spacing, origin, direction)


def _series_in(folder: Path) -> dict[str, list]:
    """(file, header) pairs of the image slices in a folder, by SeriesInstanceUID."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series = defaultdict(list)
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # not DICOM (notes, thumbnails); a corrupt slice shows up as a gap below
        if _is_slice(header):
            series[str(header.get("SeriesInstanceUID", ""))].append((file, header))
    return dict(series)


def _is_slice(header) -> bool:
    """An image with the position, orientation and spacing a slice of a volume needs."""
    return ("Rows" in header and len(header.get("ImagePositionPatient") or ()) == 3
            and len(header.get("ImageOrientationPatient") or ()) == 6 and len(header.get("PixelSpacing") or ()) == 2)


def _geometry(slices: list) -> tuple[list[Path], tuple, tuple, np.ndarray]:
    """Files sorted along the slice normal, and spacing, origin (first slice) and direction.

    Index axis i runs along the image rows (IOP's first vector), j down the
    columns (second vector), k along their cross product, as in ITK.
    """
    where = slices[0][0].parent
    if len(slices) < 2:
        raise InputError(f"The series in {where} has a single slice: that is a 2D image, not a CT volume.")
    orientations = np.array([[float(v) for v in h.ImageOrientationPatient] for _, h in slices])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise InputError(f"The slices in {where} have different orientations (a localizer mixed into the "
                         "series?); remove the odd slices or export the axial series alone.")
    layouts = {(int(h.Rows), int(h.Columns), tuple(float(v) for v in h.PixelSpacing)) for _, h in slices}
    if len(layouts) > 1:
        raise InputError(f"The slices in {where} differ in size or pixel spacing; export one series alone.")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for _, h in slices])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    positions, depth = positions[order], depth[order]
    gaps = np.diff(depth)
    if gaps.min() < 1e-3:
        raise InputError(f"Some slices in {where} share a position (several acquisitions or time points in one "
                         "series); split the series or remove the duplicates.")
    step = (depth[-1] - depth[0]) / (len(depth) - 1)
    drift = positions[-1] - positions[0] - (depth[-1] - depth[0]) * normal
    if np.linalg.norm(drift) > 0.01 * abs(depth[-1] - depth[0]):
        raise InputError(f"The slices in {where} are not stacked along their normal (gantry tilt or sheared "
                         "acquisition); resample the series first (e.g. Slicer's DICOM acquisition geometry "
                         "regularization).")
    if np.abs(gaps - step).max() > 0.01 * step:
        raise InputError(f"The slice spacing in {where} is uneven ({gaps.min():.3g} to {gaps.max():.3g} mm): slices "
                         "are missing or the series mixes reconstructions; export the complete series.")
    _, _, pixel_spacing = layouts.pop()
    spacing = (pixel_spacing[1], pixel_spacing[0], step)
    direction = np.column_stack([row, col, normal])
    files = [slices[i][0] for i in order]
    return files, spacing, tuple(positions[0]), direction


# ---------------------------------------------------------------- radiographs


def read_radiograph(path: Path, view=None, pixel_spacing=None, max_bytes: int | None = None) -> XRay:
    """A CR/DX (or secondary capture) radiograph: bone bright, spacing, view and distances from the header."""
    import SimpleITK as sitk

    header = read_header(path)
    if "Rows" not in header:
        raise InputError(f"{path} is a DICOM file without an image (a report, DICOMDIR or structured data).")
    if int(header.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{path} is a colour DICOM image ({header.get('PhotometricInterpretation')}); a "
                         "radiograph must be grayscale: export the original CR/DX image.")
    if int(header.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(f"{path} holds {header.NumberOfFrames} frames (a cine loop or a volume), not one "
                         "radiograph; export a single frame.")
    if is_series_slice(header):
        raise InputError(f"{path} is a {header.Modality} slice, part of a 3D series, not a radiograph: load "
                         "its folder as a CT.")
    checks.check_memory(path, (int(header.Rows), int(header.Columns)), max_bytes)
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))
    except RuntimeError:
        raise InputError(f"The pixel data of {path} cannot be decoded (corrupt or an unsupported compression); "
                         "export it again uncompressed.") from None
    image = array.reshape(int(header.Rows), int(header.Columns))
    checks.check_finite(image, path)

    metadata = {key: str(header.get(key)) for key in PROVENANCE if key in header}
    metadata["source"] = str(path)
    spacing, metadata["pixel_spacing_source"] = _pixel_spacing(header, pixel_spacing, path)
    if view is not None:
        metadata["view_source"] = "argument"
    elif str(header.get("ViewPosition", "")).upper() in VIEW_POSITIONS:
        view = VIEW_POSITIONS[str(header.ViewPosition).upper()]
        metadata["view_source"] = "ViewPosition"
    else:
        view = "frontal"
        metadata["view_source"] = ("assumed frontal (no usable ViewPosition); give the view if it is not "
                                   "(FILE:VIEW, view=)")
    view = normalise_view(view)
    image, spacing, metadata["orientation"] = _orient(image, spacing, header.get("PatientOrientation"), view)
    distances = {key: float(header.get(tag)) for key, tag in (("sid", "DistanceSourceToDetector"),
                                                              ("sad", "DistanceSourceToPatient"))
                 if header.get(tag) not in (None, "") and float(header.get(tag)) > 0}
    return XRay(image.astype(np.float32), spacing, view, metadata=metadata, **distances)


def _pixel_spacing(header, given, path: Path) -> tuple[tuple[float, float], str]:
    """Detector pixel spacing (row, column) in mm and where it came from.

    ImagerPixelSpacing is at the detector, which is what the projection
    geometry needs; PixelSpacing may be calibrated to the patient plane and
    is the fallback. Some writers store 0\\0 for "unknown"; that counts as absent.
    """
    if given is not None:
        return tuple(float(s) for s in given), "argument"
    for tag in ("ImagerPixelSpacing", "PixelSpacing"):
        values = header.get(tag)
        if values is None or len(values) != 2:
            continue
        values = tuple(float(v) for v in values)
        if values == (0.0, 0.0):
            continue
        if min(values) <= 0:
            raise InputError(f"{path} has {tag} {values}: pixel sizes must be > 0 mm. Fix the header "
                             "(in Python, pixel_spacing= overrides it).")
        return values, tag
    return (1.0, 1.0), "assumed 1 mm (the file records none); for true geometry set it in the file (or pixel_spacing=)"


def _orient(image: np.ndarray, spacing, orientation, view) -> tuple[np.ndarray, tuple, str]:
    """Flip or transpose so the image follows x2ct's view convention, using PatientOrientation.

    DICOM PatientOrientation gives the patient directions of the image rows
    (left to right) and columns (top to bottom). x2ct wants rows of pixels
    running to the feet and columns towards the view's direction (L for PA,
    P for a left lateral, R for AP, A for a right lateral), i.e. the image as
    seen from the detector. Without that tag the image is taken as stored.
    """
    angle = view_angle(view) % 360
    letters = [str(o).upper()[:1] for o in orientation or ()]
    if len(letters) != 2 or not all(letter in OPPOSITE for letter in letters) or angle not in COLUMN_DIRECTION:
        return image, spacing, "as stored (no usable PatientOrientation to check against)"
    across, down = letters
    want = COLUMN_DIRECTION[angle]
    steps = []
    if across in "HF" and down in (want, OPPOSITE[want]):
        image, spacing, (across, down) = image.T, spacing[::-1], (down, across)
        steps.append("transposed")
    if across not in (want, OPPOSITE[want]) or down not in "HF":
        raise InputError(f"PatientOrientation {list(orientation)} does not fit a {view} view (expected columns "
                         f"along {want}/{OPPOSITE[want]}, rows head/feet); check ViewPosition, or give the view "
                         "(FILE:VIEW, view=).")
    if across != want:
        image = image[:, ::-1]
        steps.append("mirrored left-right")
    if down == "H":
        image = image[::-1, :]
        steps.append("flipped upside down")
    done = ", ".join(steps) if steps else "as stored"
    stated = "\\".join(str(o) for o in orientation)
    return np.ascontiguousarray(image), tuple(spacing), f"{done} (PatientOrientation {stated})"
