"""Losses of the two-stage code-diffusion model (seed 002).

Stage 1, vector quantisation (van den Oord et al. 2017; seed 002 eq. 4):
``L = L_rec + |sg[E(x)] - z_q|^2 + beta |sg[z_q] - E(x)|^2`` with beta = 0.25,
the decoder fed ``z_q`` through the straight-through estimator. MONAI's
``VQVAE`` updates its codebook by exponential moving averages instead of the
codebook term and returns only the commitment term as its quantisation loss;
``vqvae_loss`` wraps that output.

Stage 2, absorbing-state discrete diffusion (Austin et al. 2021; Bond-Taylor
et al. 2022; seed 002 eq. 7): at step t of T each token is masked with
probability t / T and a transformer predicts the original tokens; the loss is
the cross-entropy on the masked tokens, weighted by 1/t for the ELBO or by
``gamma = (T - t + 1) / T`` for the reweighted ELBO that seed 002 trains with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from x2ct.errors import InputError


def straight_through(encodings: torch.Tensor, quantised: torch.Tensor) -> torch.Tensor:
    """Forward value ``quantised``, gradient passed straight to ``encodings``."""
    return encodings + (quantised - encodings).detach()


def vq_loss(encodings: torch.Tensor, quantised: torch.Tensor, commitment: float = 0.25) -> torch.Tensor:
    """Codebook term ``mse(sg[E], z_q)`` + ``commitment * mse(E, sg[z_q])``."""
    if encodings.shape != quantised.shape:
        raise InputError(f"vq_loss needs encodings and their codes of one shape, got {tuple(encodings.shape)} "
                         f"and {tuple(quantised.shape)}.")
    return F.mse_loss(quantised, encodings.detach()) + commitment * F.mse_loss(encodings, quantised.detach())


def vqvae_loss(reconstruction: torch.Tensor, target: torch.Tensor, quantisation_loss: torch.Tensor,
               reconstruction_loss: str = "l1") -> torch.Tensor:
    """Reconstruction loss (L1 as seed 002's 3D VQ-GAN, or MSE) + MONAI VQVAE's quantisation loss."""
    losses = {"l1": F.l1_loss, "mse": F.mse_loss}
    if reconstruction_loss not in losses:
        raise InputError(f"reconstruction_loss must be one of {sorted(losses)}, got {reconstruction_loss!r}.")
    return losses[reconstruction_loss](reconstruction, target) + quantisation_loss.mean()


def absorbing_diffusion_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                             num_timesteps: int, reweighted: bool = True, reduction: str = "mean") -> torch.Tensor:
    """Absorbing-diffusion training loss, in nats per token.

    ``logits`` (B, L, K) are the transformer's predictions for the L tokens,
    ``targets`` (B, L) the original codes, ``mask`` (B, L) true where the
    token was masked at step ``t`` (B,), an integer in 1..T. Per sample,
    ``w(t) * sum over masked tokens of -log p(target) / L`` with
    ``w = T / t`` (``reweighted=False``: an unbiased one-sample estimate of
    the negative ELBO, since t is drawn uniformly and the bound sums 1/t over
    T steps) or ``w = (T - t + 1) / T`` (seed 002's reweighting). ``reduction``
    "mean" averages over the batch, "none" returns (B,).
    """
    if logits.ndim != 3 or targets.shape != logits.shape[:2] or mask.shape != targets.shape:
        raise InputError(f"absorbing_diffusion_loss takes logits (B, L, K), targets and mask (B, L); got "
                         f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(mask.shape)}.")
    t = torch.as_tensor(t, device=logits.device).reshape(-1)
    if t.shape[0] != logits.shape[0] or bool((t < 1).any()) or bool((t > num_timesteps).any()):
        raise InputError(f"t must hold one step in 1..{num_timesteps} per sample, got {t.tolist()}.")
    if reduction not in ("mean", "none"):
        raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    nll = F.cross_entropy(logits.transpose(1, 2), targets.long(), reduction="none")  # (B, L)
    masked = (nll * mask.to(nll.dtype)).sum(dim=1)
    t = t.to(nll.dtype)
    weight = (num_timesteps - t + 1) / num_timesteps if reweighted else num_timesteps / t
    per_sample = weight * masked / targets.shape[1]
    return per_sample.mean() if reduction == "mean" else per_sample

