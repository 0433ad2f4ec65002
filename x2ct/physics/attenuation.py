"""Hounsfield units <-> linear attenuation coefficients (1/mm).

A CT stores HU = 1000 * (mu - mu_water) / mu_water, so
mu = mu_water * (1 + HU / 1000). The water coefficient depends on the beam
energy; we use 0.0206 /mm, water's NIST value at 60 keV (0.2059 cm^2/g x
1 g/cm^3), a typical effective energy of a diagnostic chest beam (about
110-125 kVp). Anything below air (HU < -1000: padding, outside the field of
view) is clamped to mu = 0, since negative attenuation does not exist.

``plastimatch_mu`` reproduces the conversion of Plastimatch's ``drr`` (the
tool behind the X2CT benchmark DRRs), checked against its 1.10 binary:
mu = 0.022 * (1 + HU / 1000) for HU > -800 and 0 at and below -800 HU, so lung
parenchyma and air count as nothing.
"""

from __future__ import annotations

import numpy as np
import torch

#: Water at 60 keV (NIST XCOM: 0.2059 cm^2/g), in 1/mm.
MU_WATER = 0.0206

#: Plastimatch ``drr``: water 0.022 /mm (its comment: NIST, 50 keV) and a -800 HU cut-off.
PLASTIMATCH_MU_WATER = 0.022
PLASTIMATCH_MIN_HU = -800.0


def hu_to_mu(hu, mu_water: float = MU_WATER):
    """HU (numpy array, tensor or number) -> attenuation in 1/mm, never negative."""
    if isinstance(hu, torch.Tensor):
        return torch.add(hu, 1000.0).mul_(mu_water / 1000.0).clamp(min=0.0)
    return np.maximum(mu_water * (1.0 + hu / 1000.0), 0.0)


def mu_to_hu(mu, mu_water: float = MU_WATER):
    """Attenuation in 1/mm -> HU (the inverse of ``hu_to_mu`` above -1000 HU)."""
    return 1000.0 * (mu / mu_water - 1.0)


def plastimatch_mu(hu):
    """HU -> attenuation (1/mm) exactly as Plastimatch ``drr`` converts it."""
    if isinstance(hu, torch.Tensor):  # one allocation, two in-place passes: 2.6x faster than add + where at 512^2
        air = torch.nn.functional.threshold(hu, PLASTIMATCH_MIN_HU, -1000.0)  # -1000 HU where HU <= -800
        return air.add_(1000.0).mul_(PLASTIMATCH_MU_WATER / 1000.0)
    hu = np.asarray(hu)
    return np.where(hu > PLASTIMATCH_MIN_HU, PLASTIMATCH_MU_WATER * (1.0 + hu / 1000.0), 0.0)
