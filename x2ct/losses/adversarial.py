"""GAN losses on raw critic scores (logits), generator and discriminator sides.

* LSGAN (Mao et al. 2017), used by X2CT-GAN (seed 001 / methods.md, weight
  0.1): least squares towards 1 for real and 0 for fake.
* BCE, the original non-saturating GAN loss (Goodfellow et al. 2014), on
  logits; DuoLift's adversarial term (seed 003, weight beta = 0.01) does not
  name its form, so both are offered.

The discriminator side is the sum of the real and fake terms, as X2CT's code
does (pix2pix halves it; the factor only rescales the critic's learning rate).
A critic may return one tensor or a list of tensors (multi-scale critics):
the loss is averaged over the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn.functional as F

Scores = Union[torch.Tensor, Sequence[torch.Tensor]]  # evaluated at import: no `|` on Python 3.9 (Slicer 5.8)


def _average(scores: Scores, term) -> torch.Tensor:
    if isinstance(scores, torch.Tensor):
        return term(scores)
    return sum(term(s) for s in scores) / len(scores)


def _ls(target: float):
    return lambda s: F.mse_loss(s, torch.full_like(s, target))


def _bce(target: float):
    return lambda s: F.binary_cross_entropy_with_logits(s, torch.full_like(s, target))


def lsgan_generator_loss(fake: Scores) -> torch.Tensor:
    """Mean (d(fake) - 1)^2: the generator wants its volumes scored as real."""
    return _average(fake, _ls(1.0))


def lsgan_discriminator_loss(real: Scores, fake: Scores) -> torch.Tensor:
    """Mean (d(real) - 1)^2 + mean d(fake)^2 (pass scores of detached fakes)."""
    return _average(real, _ls(1.0)) + _average(fake, _ls(0.0))


def bce_generator_loss(fake: Scores) -> torch.Tensor:
    """Non-saturating -log sigmoid(d(fake))."""
    return _average(fake, _bce(1.0))


def bce_discriminator_loss(real: Scores, fake: Scores) -> torch.Tensor:
    """-log sigmoid(d(real)) - log(1 - sigmoid(d(fake))) (pass scores of detached fakes)."""
    return _average(real, _bce(1.0)) + _average(fake, _bce(0.0))
