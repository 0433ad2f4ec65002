"""Training losses of the model zoo, one small module per family.

* ``optimal_transport``: Sinkhorn feature cost and neural-OT generator/critic
  losses (Repeat-and-Concatenate, seed 000);
* ``adversarial``: LSGAN and BCE generator/discriminator losses (X2CT-GAN,
  DuoLift-GAN);
* ``reconstruction``: voxel MSE / L1 inside a mask (DuoLift's lung loss), total
  variation (u-X2CTGAN's shape loss);
* ``projection``: X2CT's mean-absolute projection loss, Beer-Lambert and
  view-consistency losses;
* ``discrete``: vector-quantisation and absorbing-diffusion losses (code
  diffusion, seed 002).
"""

from x2ct.losses.adversarial import (bce_discriminator_loss, bce_generator_loss, lsgan_discriminator_loss,
                                     lsgan_generator_loss)
from x2ct.losses.discrete import absorbing_diffusion_loss, straight_through, vq_loss, vqvae_loss
from x2ct.losses.optimal_transport import (FeatureExtractor, SinkhornFeatureCost, neural_ot_critic_loss,
                                           neural_ot_generator_loss, sinkhorn_divergence)
from x2ct.losses.projection import (beer_lambert_loss, line_integrals, mean_abs_projections,
                                    view_consistency_loss, x2ct_projection_loss)
from x2ct.losses.reconstruction import masked_l1, masked_mse, total_variation

__all__ = [
    "FeatureExtractor", "SinkhornFeatureCost", "absorbing_diffusion_loss", "bce_discriminator_loss",
    "bce_generator_loss", "beer_lambert_loss", "line_integrals", "lsgan_discriminator_loss", "lsgan_generator_loss",
    "masked_l1", "masked_mse", "mean_abs_projections", "neural_ot_critic_loss", "neural_ot_generator_loss",
    "sinkhorn_divergence", "straight_through", "total_variation", "view_consistency_loss", "vq_loss", "vqvae_loss",
    "x2ct_projection_loss",
]
