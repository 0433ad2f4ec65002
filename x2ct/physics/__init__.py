"""X-ray physics: HU <-> attenuation, DRR geometry, the differentiable projector, DRR modes.

- ``hu_to_mu`` / ``mu_to_hu`` / ``plastimatch_mu``: attenuation (``attenuation``)
- ``DRRGeometry``, ``X2CT_GEOMETRY``, ``view_frame``: where source and detector are (``geometry``)
- ``project``: differentiable line integrals through canonical volumes, batched, CPU/CUDA (``projector``)
- ``x2ct_views``: DRRs as the X2CT benchmark made them (``x2ct_mode``)
- ``drr``: a CT ``Volume`` in HU -> an ``XRay`` record (``radiograph``)
"""

from x2ct.physics.attenuation import MU_WATER, hu_to_mu, mu_to_hu, plastimatch_mu
from x2ct.physics.geometry import X2CT_GEOMETRY, DRRGeometry, view_frame
from x2ct.physics.projector import project
from x2ct.physics.radiograph import MODES, drr
from x2ct.physics.x2ct_mode import X2CT_SIZE, x2ct_normalise, x2ct_views

__all__ = ["MODES", "MU_WATER", "X2CT_GEOMETRY", "X2CT_SIZE", "DRRGeometry", "drr", "hu_to_mu", "mu_to_hu",
           "plastimatch_mu", "project", "view_frame", "x2ct_normalise", "x2ct_views"]
