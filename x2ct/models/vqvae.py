"""Vector-quantised autoencoders for X-rays (2D) and CT volumes (3D): stage 1 of code diffusion.

Corona-Figueroa et al. (seed 002, Sec. 3.1) compress each X-ray and each CT
separately into a small grid of codebook indices (256^2 X-ray -> 16^2 codes,
128^3 CT -> 8^3 codes, codebooks of 1024 vectors of 256 numbers, commitment
weight 0.25). This is MONAI's ``VQVAE`` laid out like their encoder: a first
level at full resolution of ``width * multipliers[0]`` channels, then one
stride-2 level per further multiplier (width 16 and multipliers
[1, 2, 4, 8, 16] give 128^3 -> 8^3 with 16..256 channels).

Departures from the paper (MONAI's VQVAE, not their VQGAN code): the codebook
is learnt by exponential moving averages (van den Oord et al.'s alternative
to the codebook loss term of their Eq. 4; decay 0.99) rather than by
gradients; no attention blocks, no normalisation layers, no adversarial or
perceptual loss (reconstruction is L1 only); a linear output, clamped to
[0, 1] (the range of X-rays and normalised CTs) only when codes are decoded
into an image: in retraining, a sigmoid output saturated at 0 in the first
steps (the L1 optimum of a mostly-air volume is 0), its gradient vanished,
and the CT decoder learnt nothing (it returned 0 everywhere). The number of
residual layers per level is not published; ours is a preset argument. Dead
codes are restarted (``restart_below``): in training, every code whose
moving-average usage has fallen below that many latents per step is moved to
a latent of the current batch drawn at random, the codebook reset of
Dhariwal et al. 2020 (Jukebox).
The first step thereby starts the codebook from the data. A restarted code
starts at twice the threshold, so one the data does not take up is moved
again some 70 steps later (decay 0.99), not the ~460 a usage of 1 would take.
The code-diffusion-2v shipped before 3 December (sigmoid, no restarts)
mapped every CT, and so every reconstruction, to one code.
"""

from __future__ import annotations

import torch
from monai.networks.nets import VQVAE

from x2ct.losses.discrete import vqvae_loss


class VQAutoencoder(VQVAE):
    """A MONAI VQ-VAE with the code-level API stage 2 needs (indices in, indices out)."""

    def __init__(self, spatial_dims: int, size: int, code_size: int, width: int, multipliers, num_embeddings: int,
                 embedding_dim: int, res_layers: int = 2, commitment: float = 0.25, decay: float = 0.99,
                 restart_below: float = 0.05):
        channels = tuple(width * m for m in multipliers)
        if size != code_size * 2 ** (len(channels) - 1):
            raise ValueError(f"{len(channels)} levels take {size} to {size >> (len(channels) - 1)}, "
                             f"not to code_size {code_size}")
        full_resolution, halve = (1, 3, 1, 1), (2, 4, 1, 1)  # (stride, kernel, dilation, padding)
        super().__init__(
            spatial_dims=spatial_dims, in_channels=1, out_channels=1, channels=channels,
            num_res_layers=res_layers, num_res_channels=channels,
            downsample_parameters=(full_resolution,) + (halve,) * (len(channels) - 1),
            upsample_parameters=(halve + (0,),) * (len(channels) - 1) + (full_resolution + (0,),),
            num_embeddings=num_embeddings, embedding_dim=embedding_dim, commitment_cost=commitment,
            decay=decay, output_act=None,
        )
        with torch.no_grad():  # start at mid-range, as the sigmoid output did, not at the edge of [0, 1]
            self.decoder.blocks[-1].conv.bias.fill_(0.5)
        self.size, self.code_size = size, code_size
        self.restart_below = restart_below

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, *size) -> codebook indices (B, *code grid); never updates the codebook."""
        return self.quantizer.quantizer.quantize(self.encode(images))[2]

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices (B, *grid) -> codebook vectors (B, embedding_dim, *grid)."""
        return self.quantizer.embed(codes)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Indices (B, *grid) -> images (B, 1, *size) in [0, 1]."""
        return self.decode(self.code_vectors(codes)).clamp(0.0, 1.0)

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Stage-1 loss: L1 reconstruction + commitment (the codebook follows by EMA in training mode)."""
        latents = self.encode(images)
        quantised, quantisation = self.quantize(latents)
        if self.training:
            self.restart_dead_codes(latents.detach())
        return vqvae_loss(self.decode(quantised), images, quantisation, "l1")

    def decoder_loss(self, images: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder fine-tuning: L1 of the images decoded from ``codes`` (default: their own codes). The codes
        come without gradient or codebook update, so only the decoder learns and every code keeps its meaning."""
        with torch.no_grad():
            vectors = self.code_vectors(self.codes(images) if codes is None else codes)
        return torch.nn.functional.l1_loss(self.decode(vectors), images)

    @torch.no_grad()
    def restart_dead_codes(self, latents: torch.Tensor) -> int:
        """Move every code used less than ``restart_below`` times a step (moving average) to a random latent
        of ``latents`` (B, C, *grid), with a usage of twice that to start from; the number moved."""
        quantizer = self.quantizer.quantizer
        dead = quantizer.ema_cluster_size < self.restart_below
        count = int(dead.sum())
        if count:
            flat = latents.movedim(1, -1).reshape(-1, latents.shape[1]).to(quantizer.ema_w.dtype)
            picks = flat[torch.randint(flat.shape[0], (count,), device=flat.device)]
            usage = 2.0 * self.restart_below
            quantizer.embedding.weight[dead] = picks
            quantizer.ema_w[dead] = picks * usage  # the EMA codebook is ema_w / usage: the code sits on its pick
            quantizer.ema_cluster_size[dead] = usage
        return count
