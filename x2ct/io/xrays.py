"""X-ray images in and out: DICOM radiographs, plain pictures and NRRD/MetaImage DRRs.

Geometry that a format cannot hold is never guessed silently: when the pixel
spacing or the view is assumed, ``XRay.metadata`` says so. x2ct writes the
view, distances and (for PNG) the pixel spacing and intensity scaling into
the file's own key/value fields, and reads them back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from x2ct.errors import InputError
from x2ct.image import XRay, normalise_view
from x2ct.io import checks, dicom
from x2ct.io.files import PICTURE_FORMATS, VOLUME_FORMATS, existing, is_dicom_file, suffix
from x2ct.io.outputs import atomic_output, check_target

#: Formats write_xray writes.
XRAY_OUTPUTS = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage", ".png": "PNG"}
#: Field names x2ct uses to store an X-ray's geometry inside the file.
VIEW, SAD, SID, SPACING, RANGE = "x2ct_view", "x2ct_sad", "x2ct_sid", "x2ct_pixel_spacing", "x2ct_intensity_range"
#: PNG scaling: the image range maps linearly onto 0..PNG_MAX.
PNG_MAX = 65535
#: What the reader learnt about a film that its preparation depends on (whether the pixel spacing was only
#: assumed, the DICOM photometric interpretation...): written as ``x2ct_<key>`` fields and restored on reading,
#: so a film handed on as a file (the Slicer module's background run) is prepared as the original would be.
CARRIED_METADATA = ("pixel_spacing_source", "PhotometricInterpretation", "orientation", "Modality")


def read_xray(path, view=None, *, pixel_spacing=None, max_bytes: int | None = None) -> XRay:
    """An X-ray (larger = more attenuation) from DICOM CR/DX, PNG/JPEG/TIFF, or a 2D/one-slice NRRD/MetaImage.

    ``view`` ("frontal", "lateral", "ap" or an angle) overrides the file's;
    ``pixel_spacing`` (row, column) in mm overrides the file's or the 1 mm
    assumed for pictures. Pictures and NRRD/MetaImage files are taken as the
    model sees them (x2ct.image convention: seen from the detector, head up).
    """
    path = existing(path, "X-ray")
    if path.is_dir():
        raise InputError(f"{path} is a folder; an X-ray is a single file (a folder of DICOM slices is a CT).")
    if suffix(path) in PICTURE_FORMATS:
        image, spacing, fields = _read_picture(path, max_bytes)
    elif suffix(path) in VOLUME_FORMATS:
        image, spacing, fields = _read_grid(path, max_bytes)
    elif is_dicom_file(path):
        return dicom.read_radiograph(path, view, pixel_spacing, max_bytes)
    else:
        raise InputError(f"{path.name}: unknown extension {suffix(path) or '(none)'}; an X-ray must be DICOM or "
                         f"one of {', '.join({**PICTURE_FORMATS, **VOLUME_FORMATS})}.")
    metadata = {"source": str(path)}
    if pixel_spacing is not None:
        spacing, metadata["pixel_spacing_source"] = pixel_spacing, "argument"
    elif spacing is not None:
        metadata["pixel_spacing_source"] = "file"
    else:
        spacing = (1.0, 1.0)
        metadata["pixel_spacing_source"] = ("assumed 1 mm (pictures carry no spacing); for true geometry give "
                                            "an NRRD or DICOM with its spacing (or pixel_spacing=)")
    if view is not None:
        metadata["view_source"] = "argument"
    elif VIEW in fields:
        view, metadata["view_source"] = fields[VIEW], "file"
    else:
        view, metadata["view_source"] = "frontal", "assumed frontal; give the view if it is not (FILE:VIEW, view=)"
    distances = {key: _numbers(fields, field, 1, path, positive=True)[0] for key, field in (("sad", SAD), ("sid", SID))
                 if field in fields}
    metadata.update(_carried(fields, spacing_given=pixel_spacing is not None))
    return XRay(image, spacing, normalise_view(view), metadata=metadata, **distances)


def _carried(fields: dict, spacing_given: bool) -> dict:
    """The reader's metadata that x2ct wrote into the file (CARRIED_METADATA); a spacing argument overrides its
    recorded source."""
    carried = {key: str(fields[f"x2ct_{key}"]) for key in CARRIED_METADATA if f"x2ct_{key}" in fields}
    if spacing_given:
        carried.pop("pixel_spacing_source", None)
    return carried


def _read_picture(path: Path, max_bytes) -> tuple[np.ndarray, tuple | None, dict]:
    """Gray pixels of a PNG/JPEG/TIFF, turned upright by their EXIF orientation; spacing and scaling only from
    x2ct's own PNG text fields."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            if getattr(picture, "n_frames", 1) > 1:
                raise InputError(f"{path} has {picture.n_frames} pages (a stack, not one radiograph); give one "
                                 "image, or a CT as a DICOM folder or NRRD/NIfTI.")
            checks.check_memory(path, (picture.height, picture.width), max_bytes)
            fields = {key: str(value) for key, value in getattr(picture, "text", {}).items()}
            picture = ImageOps.exif_transpose(picture)  # a camera's or scanner's EXIF orientation: upright pixels
            if picture.mode in ("P", "PA"):
                picture = picture.convert("RGBA")  # palette indices -> the colours they stand for
            elif picture.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                picture = picture.convert("RGB")
            array = np.asarray(picture)
    except Image.DecompressionBombError:
        raise InputError(f"{path} is too large to open safely (over Pillow's pixel limit); downsample "
                         "it first.") from None
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise InputError(f"{path} cannot be read as a {PICTURE_FORMATS[suffix(path)]} image: it is corrupt or in "
                         "another format. Export it again.") from None
    image = checks.gray_from_channels(array, path) if array.ndim == 3 else array.astype(np.float32)
    checks.check_finite(image, path)
    if RANGE in fields:
        low, high = _numbers(fields, RANGE, 2, path)
        image = low + image / PNG_MAX * (high - low)
    spacing = _numbers(fields, SPACING, 2, path, positive=True) if SPACING in fields else None
    return image, spacing, fields


def _numbers(fields: dict, key: str, count: int, path: Path, positive: bool = False) -> tuple[float, ...]:
    """``count`` finite numbers from an x2ct field of the file, or an InputError naming the field."""
    try:
        values = tuple(float(v) for v in str(fields[key]).split())
    except ValueError:
        values = ()
    if len(values) != count or not all(np.isfinite(values)) or (positive and min(values) <= 0):
        raise InputError(f"{path}: its {key} field {str(fields[key])[:60]!r} is not {count} finite"
                         f"{' positive' if positive else ''} number(s); remove the field or export the file "
                         "again.")
    return values


def _read_grid(path: Path, max_bytes) -> tuple[np.ndarray, tuple, dict]:
    """A 2D (or one-slice 3D) NRRD/MetaImage/NIfTI image with its pixel spacing."""
    import SimpleITK as sitk

    header = checks.read_header(path, VOLUME_FORMATS[suffix(path)])
    size = header.size
    if header.dimension > 3 or (header.dimension == 3 and size[2] > 1):
        raise InputError(f"{path} is a {header.dimension}D volume of size {'x'.join(map(str, size))}, not an "
                         "X-ray: load it as a CT, or give a 2D image (or a single slice).")
    checks.check_scalar(header, "an X-ray")
    checks.check_geometry(header)
    checks.check_memory(path, (size[1], size[0]), max_bytes)
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path), sitk.sitkFloat32))
    except RuntimeError:
        raise InputError(f"{path} has a valid header but its pixel data cannot be read (truncated or corrupt "
                         "file); copy or export it again.") from None
    image = array.reshape(size[1], size[0])
    checks.check_finite(image, path)
    return image, (header.spacing[1], header.spacing[0]), header.fields


def write_xray(xray: XRay, path, *, overwrite: bool = True) -> Path:
    """Write an X-ray to .nrrd/.nhdr/.mha/.mhd (float, with spacing) or .png (16-bit, scaled), all or nothing.

    The view, source distances and the reader's metadata that film preparation
    depends on (CARRIED_METADATA) are stored as x2ct fields in every format;
    a PNG also records its pixel spacing and the intensity range that 0..65535
    stands for, so read_xray restores the values (to 1/65535 of the range).
    The file is read back before it replaces ``path`` (see ``write_volume``).
    """
    path = check_target(path, XRAY_OUTPUTS, "an X-ray", overwrite=overwrite)
    xray.check_finite()
    fields = {VIEW: str(xray.view)}
    fields.update({key: repr(float(value)) for key, value in ((SAD, xray.sad), (SID, xray.sid))
                   if value is not None})
    fields.update({f"x2ct_{key}": " ".join(str(xray.metadata[key]).split()) for key in CARRIED_METADATA
                   if key in xray.metadata})  # one line: a header field holds no line break
    with atomic_output(path, overwrite=overwrite, check=_reads_back(xray.shape),
                       needed_bytes=4 * xray.image.size) as partial:
        if suffix(path) == ".png":
            _write_png(xray, partial, fields)
        else:
            _write_grid(xray, partial, fields)
    return path


def _reads_back(shape: tuple[int, int]):
    """A check that the staged file decodes in full to an image of ``shape``."""

    def check(staged: Path) -> None:
        if suffix(staged) == ".png":
            from PIL import Image

            with Image.open(staged) as picture:
                picture.load()
                size = (picture.height, picture.width)
        else:
            import SimpleITK as sitk

            size = tuple(sitk.ReadImage(str(staged)).GetSize()[:2])[::-1]
        if tuple(size) != tuple(shape):
            raise OSError(f"the image read back is {size}, not {shape} (short write)")

    return check


def _write_grid(xray: XRay, path: Path, fields: dict) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(xray.image, dtype=np.float32))
    image.SetSpacing((xray.pixel_spacing[1], xray.pixel_spacing[0]))  # SimpleITK order: (x=column, y=row)
    for key, value in fields.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path), True)


def _write_png(xray: XRay, path: Path, fields: dict) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    low, high = float(np.min(xray.image)), float(np.max(xray.image))
    scaled = (xray.image - low) / (high - low) * PNG_MAX if high > low else np.zeros(xray.shape)
    info = PngInfo()
    for key, value in {**fields, SPACING: f"{xray.pixel_spacing[0]!r} {xray.pixel_spacing[1]!r}",
                       RANGE: f"{low!r} {high!r}"}.items():
        info.add_text(key, value)
    info.add_text("Comment", f"x2ct X-ray: 16-bit gray, 0..{PNG_MAX} = intensities {low:g}..{high:g}, "
                             f"pixel spacing {xray.pixel_spacing[0]:g} x {xray.pixel_spacing[1]:g} mm")
    Image.fromarray(np.round(scaled).astype(np.uint16)).save(path, format="PNG", pnginfo=info)
