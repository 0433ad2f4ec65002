"""Building blocks shared by every metric convention: input checks, errors, PSNR, SSIM, NCC.

Functions take numpy arrays or torch tensors and compute in float64, except
``ssim_3d``, which runs MONAI's float32 convolution. Per-slice functions take
an ``axis``: slices are the planes perpendicular to it.
"""

from __future__ import annotations

import math

import numpy as np

from x2ct.errors import InputError


def as_array(values, what: str) -> np.ndarray:
    """A numpy array of a numpy array or torch tensor; float32/float64 kept, anything else -> float64.

    The float type is kept because the X2CT code scaled float32 volumes in
    float32 before truncating them to integers (see ``conventions``).
    """
    if hasattr(values, "detach"):  # a torch tensor, on any device
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise InputError(f"{what} has {bad} NaN or infinite values; metrics need finite values everywhere "
                         "(replace them, e.g. with the background value).")
    return array


def volume_pair(pred, gt, min_side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Checked (prediction, ground truth) arrays: finite, 3D, same shape, every side >= ``min_side``."""
    p = as_array(pred, "The prediction")
    g = as_array(gt, "The ground truth")
    for array, what in ((p, "prediction"), (g, "ground truth")):
        if array.ndim != 3:
            raise InputError(f"The {what} must be one 3D volume (D, H, W), got shape {array.shape}; "
                             "pass a single volume, e.g. batch[0, 0].")
    if p.shape != g.shape:
        raise InputError(f"The prediction {p.shape} and the ground truth {g.shape} differ in shape; "
                         "resample the prediction onto the ground-truth grid first.")
    if min(p.shape) < min_side:
        raise InputError(f"The volumes {p.shape} are too small: these metrics need at least {min_side} "
                         "voxels along every axis (their SSIM window).")
    return p, g


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b)))


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.square(a.astype(np.float64) - b)))


def psnr(mse_value: float, peak: float, if_identical: float = math.inf) -> float:
    """PSNR in dB from a mean squared error; ``if_identical`` is returned when the error is zero."""
    if mse_value == 0:
        return float(if_identical)
    return float(10.0 * np.log10(peak * peak / mse_value))


def psnr_by_slice(pred: np.ndarray, gt: np.ndarray, axis: int, peak: float,
                  if_identical: float = math.inf) -> np.ndarray:
    """PSNR (dB) of each slice perpendicular to ``axis``."""
    other = tuple(a for a in range(pred.ndim) if a != axis)
    errors = np.mean(np.square(pred.astype(np.float64) - gt), axis=other)
    return np.array([psnr(e, peak, if_identical) for e in errors])


def ssim_by_slice(pred: np.ndarray, gt: np.ndarray, axis: int, *, win_size: int = 7,
                  data_range: float = 1.0, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """2D SSIM of each slice perpendicular to ``axis``, uniform window, sample covariance.

    The same computation as ``skimage.metrics.structural_similarity`` with its
    defaults (``gaussian_weights=False``, ``use_sample_covariance=True``),
    which is what the X2CT evaluation called: the SSIM map is averaged over
    the pixels whose window lies inside the slice. Done for all slices at once.
    """
    from scipy import ndimage  # here, not at import: the CLI and Slicer import x2ct.metrics at start-up

    x = np.moveaxis(np.asarray(pred, np.float64), axis, 0)
    y = np.moveaxis(np.asarray(gt, np.float64), axis, 0)
    if min(x.shape[1:]) < win_size:
        raise InputError(f"Slices of shape {x.shape[1:]} are smaller than the {win_size}x{win_size} SSIM window.")
    size = (1, win_size, win_size)

    def local_mean(image):
        return ndimage.uniform_filter(image, size=size)

    n = win_size * win_size
    cov_norm = n / (n - 1)
    mx, my = local_mean(x), local_mean(y)
    vx = cov_norm * (local_mean(x * x) - mx * mx)
    vy = cov_norm * (local_mean(y * y) - my * my)
    vxy = cov_norm * (local_mean(x * y) - mx * my)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return ssim_map[:, pad:-pad, pad:-pad].mean(axis=(1, 2))


def ssim_3d(pred: np.ndarray, gt: np.ndarray, *, data_range: float = 1.0, win_size: int = 11,
            sigma: float = 1.5) -> float:
    """3D SSIM with a Gaussian window (MONAI), averaged over the voxels whose window fits inside.

    Defaults follow Wang et al. 2004 (11-point window, sigma 1.5, K1 0.01,
    K2 0.03, population covariance); skimage's 3D ``structural_similarity``
    with ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``
    computes the same value in float64.
    """
    import torch
    from monai.metrics.regression import compute_ssim_and_cs

    if min(pred.shape) < win_size:
        raise InputError(f"The volume {pred.shape} is smaller than the {win_size}-voxel 3D SSIM window.")
    x = torch.as_tensor(np.asarray(pred, np.float32))[None, None]
    y = torch.as_tensor(np.asarray(gt, np.float32))[None, None]
    with torch.no_grad():
        ssim_map, _ = compute_ssim_and_cs(x, y, spatial_dims=3, kernel_size=(win_size,) * 3,
                                          kernel_sigma=(sigma,) * 3, data_range=data_range,
                                          kernel_type="gaussian")
    return float(ssim_map.double().mean())


def ncc(a, b) -> float:
    """Zero-normalised cross-correlation (Pearson correlation of the values), in [-1, 1].

    Invariant to brightness offset and gain, so it compares an X-ray with a
    DRR whatever their intensity scales. NaN when either input is constant.
    """
    x = as_array(a, "The first image").astype(np.float64)
    y = as_array(b, "The second image").astype(np.float64)
    if x.shape != y.shape:
        raise InputError(f"NCC needs two arrays of the same shape, got {x.shape} and {y.shape}.")
    x = x - x.mean()
    y = y - y.mean()
    denominator = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y) / denominator) if denominator > 0 else math.nan


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between the two volumes as vectors; NaN when either is all zero."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.dot(x, y) / denominator) if denominator > 0 else math.nan
