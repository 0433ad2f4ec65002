"""CT volumes and X-ray images in and out, with their geometry.

Readers return ``x2ct.image.Volume`` (float32 HU, LPS geometry) and
``x2ct.image.XRay`` (larger = more attenuation) records; every expected
problem with a file raises ``x2ct.errors.InputError`` with a one-line message.
Writers replace the target only once the whole file is written.

- CT: DICOM series folder, NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), MetaImage (.mha/.mhd)
- X-ray: DICOM CR/DX, PNG/JPEG/TIFF (8/16 bit gray), 2D or one-slice NRRD/MetaImage
"""

from x2ct.io.images import read_image
from x2ct.io.volumes import read_ct, write_volume
from x2ct.io.xrays import read_xray, write_xray

__all__ = ["read_ct", "read_image", "read_xray", "write_volume", "write_xray"]
