"""Re-projection consistency: do DRRs of the reconstruction reproduce the input X-rays?

Needs no ground-truth CT, so it scores real radiographs too. The caller
renders the DRRs of the prediction in each input view's geometry (with
``x2ct.physics``) and passes them here, one per X-ray, same shape.
"""

from __future__ import annotations

import numpy as np

from x2ct.errors import InputError
from x2ct.metrics.core import as_array, mse, ncc, psnr


def _images(views, what: str) -> list[np.ndarray]:
    """A list of 2D arrays from one image, a (V, H, W) stack, or a sequence of images or XRay records."""
    if hasattr(views, "image") or hasattr(views, "ndim"):
        views = [views]
    images = [as_array(getattr(view, "image", view), what) for view in views]
    if not images:
        raise InputError(f"No {what} given.")
    if len(images) == 1 and images[0].ndim == 3:
        images = list(images[0])
    for index, image in enumerate(images):
        if image.ndim != 2:
            raise InputError(f"{what} {index} has shape {image.shape}; each view must be a 2D image.")
    return images


def _min_max(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float64)
    span = image.max() - image.min()
    return (image - image.min()) / span if span > 0 else np.zeros_like(image)


def reprojection_consistency(xrays, drrs) -> dict:
    """NCC and PSNR between each input X-ray and the prediction's DRR of that view.

    NCC is Pearson correlation of the pixel values (scale-free). PSNR (dB,
    peak 1) compares the two images after scaling each to [0, 1] by its own
    minimum and maximum, since X-rays and DRRs come in unrelated units.
    Returns the means over views and the per-view lists.
    """
    images = _images(xrays, "X-ray")
    renders = _images(drrs, "DRR")
    if len(images) != len(renders):
        raise InputError(f"Got {len(images)} X-rays but {len(renders)} DRRs; give one DRR per X-ray view.")
    nccs, psnrs = [], []
    for index, (image, render) in enumerate(zip(images, renders)):
        if image.shape != render.shape:
            raise InputError(f"View {index}: the X-ray is {image.shape} but its DRR is {render.shape}; "
                             "render the DRR at the X-ray's size (or resample one onto the other).")
        nccs.append(ncc(image, render))
        psnrs.append(psnr(mse(_min_max(image), _min_max(render)), 1.0))
    return {"ncc": float(np.mean(nccs)), "psnr_db": float(np.mean(psnrs)),
            "ncc_by_view": nccs, "psnr_db_by_view": psnrs}
