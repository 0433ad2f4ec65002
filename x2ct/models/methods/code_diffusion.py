"""Conditional vector-quantised code diffusion (Corona-Figueroa et al. 2023; seed 002).

Two stages, trained one after the other:

1. ``xray_vq`` (2D) and ``ct_vq`` (3D): VQ-VAEs that compress each X-ray and
   each CT into grids of codebook indices (``x2ct.models.vqvae``), trained
   separately with ``xray_vq_loss`` / ``ct_vq_loss``;
2. ``prior``: absorbing-state discrete diffusion over the CT codes with a
   transformer that attends to the X-ray codes of all views
   (``x2ct.models.absorbing``), trained with ``prior_loss`` while the VQ-VAEs
   stay fixed (codes are computed without gradients).

A departure, for fine-tuning a trained model: ``ct_decoder_loss`` trains the
CT VQ-VAE's decoder alone on fixed codes (encoder, codebook and prior
untouched), so a better decoder can follow a trained prior without
retraining it: the CTs' own codes, or the codes the prior draws from their
views, so that it learns the CT such codes stand for at inference.

``reconstruct`` draws one sample (or the mean of ``samples``) with a fixed
seed, so a given input always gives the same volume; ``sample`` gives the
mean and the voxel-wise standard deviation of n samples (an uncertainty
map); ``elbo`` bounds the likelihood of a CT's codes given the views.

Paper sizes (``paper`` preset): X-rays 256^2 -> 16^2 codes, CT 128^3 -> 8^3
codes, codebooks 1024 x 256, commitment 0.25; transformer 8 layers, width
512, 4 heads, dropout 0.5, the 2 x 256 view codes projected 256 -> 512 and
placed before the 512 CT tokens; sampling temperature 0.9, 512 steps (fewer
possible). The X-ray encoder's widths are not published (ours: 32 x
[1, 2, 4, 8, 8]). Intensities follow the Durham protocol (HU clamped to
[-1000, 1000], min-max normalised to [0, 1]).

As in the paper the network is not told the view angles ("no camera
priors"): it is trained on views in a fixed order at fixed angles, so the
angles must be the spec's (0 and 90 degrees) and are checked, not used.
See the two helper modules for departures (EMA codebooks, no GAN loss,
sampling schedule).
"""

from __future__ import annotations

import math

import torch

from x2ct.errors import InputError
from x2ct.models.absorbing import AbsorbingDiffusion
from x2ct.models.base import ModelSpec, ReconstructionModel
from x2ct.models.registry import register
from x2ct.models.vqvae import VQAutoencoder

PRESETS = {
    "paper": dict(view_size=256, view_codes=16, view_width=32, view_multipliers=(1, 2, 4, 8, 8),
                  volume_size=128, volume_codes=8, volume_width=16, volume_multipliers=(1, 2, 4, 8, 16),
                  num_embeddings=1024, embedding_dim=256, res_layers=2,
                  width=512, layers=8, heads=4, dropout=0.5, diffusion_steps=512, sample_steps=512),
    # <= 8M parameters at 64^3 (a 128^3 VQ-VAE is out of reach on 2 CPU cores): 64^2 -> 8^2, 64^3 -> 8^3.
    "small": dict(view_size=64, view_codes=8, view_width=16, view_multipliers=(1, 2, 4, 8),
                  volume_size=64, volume_codes=8, volume_width=8, volume_multipliers=(1, 2, 4, 8),
                  num_embeddings=512, embedding_dim=64, res_layers=1,
                  width=256, layers=4, heads=4, dropout=0.5, diffusion_steps=512, sample_steps=16),
    "tiny": dict(view_size=16, view_codes=4, view_width=4, view_multipliers=(1, 2, 4),
                 volume_size=16, volume_codes=4, volume_width=4, volume_multipliers=(1, 2, 4),
                 num_embeddings=32, embedding_dim=16, res_layers=1,
                 width=32, layers=2, heads=2, dropout=0.0, diffusion_steps=64, sample_steps=8),
}


class CodeDiffusion(ReconstructionModel):
    """X-ray codes -> sampled CT codes -> CT volume; see the module docstring."""

    def __init__(self, spec: ModelSpec, xray_vq: VQAutoencoder, ct_vq: VQAutoencoder, prior: AbsorbingDiffusion,
                 sample_steps: int, temperature: float = 0.9, samples: int = 1, seed: int = 0):
        super().__init__(spec)
        self.xray_vq, self.ct_vq, self.prior = xray_vq, ct_vq, prior
        self.sample_steps, self.temperature, self.samples, self.seed = sample_steps, temperature, samples, seed

    # --- the ReconstructionModel interface ---------------------------------------------------------

    def check_input(self, views: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
        angles = super().check_input(views, angles)
        trained = torch.tensor(self.spec.default_angles, dtype=angles.dtype, device=angles.device)
        if not torch.allclose(angles, trained.expand_as(angles), atol=1e-3):
            raise InputError(f"{self.spec.name} does not take view angles as input: it was trained on views at "
                             f"{list(self.spec.default_angles)} degrees, in that order; give views at those angles.")
        return angles

    def reconstruct(self, views: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        if self.samples == 1:
            return self._draw(views, self.sample_steps, self.temperature, self._generator(views, self.seed))
        return self._mean_std(views, self.samples, self.sample_steps, self.temperature, self.seed)[0]

    # --- sampling and likelihood --------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, views: torch.Tensor, angles=None, n: int = 8, steps: int | None = None,
               temperature: float | None = None, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and voxel-wise standard deviation (B, 1, D, D, D) of ``n`` samples.

        ``steps`` network passes per sample (default: the preset's),
        ``temperature`` scales the logits (default 0.9), ``seed`` makes the
        draw repeatable (None: from torch's global generator). Dropout
        follows the module's mode: call ``eval()`` first.
        """
        self.check_input(views, angles)
        steps = self.sample_steps if steps is None else int(steps)
        temperature = self.temperature if temperature is None else float(temperature)
        if n < 1 or steps < 1 or not (math.isfinite(temperature) and temperature > 0):
            raise InputError(f"sample needs n >= 1, steps >= 1 and temperature > 0, got {n}, {steps}, {temperature}.")
        return self._mean_std(views, n, min(steps, self.prior.num_tokens), temperature, seed)

    @torch.no_grad()
    def elbo(self, views: torch.Tensor, angles, ct: torch.Tensor, strata: int = 16, seed: int | None = 0):
        """Negative ELBO of the CT's codes given the views, bits per code, per case (B,); lower is better.

        Bounds -log p(codes | views) / number of codes. The decoder term
        log p(CT | codes) of the paper's likelihood is not included.
        """
        self.check_input(views, angles)
        generator = self._generator(views, seed)
        return self.prior.nll_bound(self.ct_codes(ct), self.context(views), strata, generator)

    # --- the parts, for the trainer -----------------------------------------------------------------

    def stage_parameters(self, stage: str) -> list[torch.nn.Parameter]:
        """Trainable parameters of one stage: 'xray_vq', 'ct_vq' (stage 1) or 'prior' (stage 2)."""
        if stage not in ("xray_vq", "ct_vq", "prior"):
            raise InputError(f"Unknown stage {stage!r}; choose xray_vq, ct_vq or prior.")
        return [p for p in getattr(self, stage).parameters() if p.requires_grad]

    def xray_vq_loss(self, views: torch.Tensor) -> torch.Tensor:
        """Stage 1, 2D: every view of (B, V, S, S) autoencoded on its own."""
        b, v, s, _ = views.shape
        return self.xray_vq.loss(views.reshape(b * v, 1, s, s))

    def ct_vq_loss(self, ct: torch.Tensor) -> torch.Tensor:
        """Stage 1, 3D: CTs (B, 1, D, D, D)."""
        return self.ct_vq.loss(self._check_ct(ct))

    def ct_decoder_loss(self, ct: torch.Tensor, views: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """Decoder fine-tuning, CTs (B, 1, D, D, D): only the CT decoder learns, so the codes, and the prior trained
        on them, stay valid. Given the CTs' ``views``, it decodes the codes the prior draws from them (as
        ``reconstruct`` does, dropout off) instead of the CTs' own, so the decoder learns what those codes mean."""
        ct = self._check_ct(ct)
        if views is None:
            return self.ct_vq.decoder_loss(ct)
        mode = self.prior.training
        self.prior.eval()
        try:
            codes = self._drawn_codes(views, self.sample_steps, self.temperature, generator)
        finally:
            self.prior.train(mode)
        return self.ct_vq.decoder_loss(ct, codes)

    def prior_loss(self, views: torch.Tensor, angles, ct: torch.Tensor, generator=None) -> torch.Tensor:
        """Stage 2: the reweighted ELBO of the CT's codes given the views' codes (VQ-VAEs fixed)."""
        self.check_input(views, angles)
        return self.prior.loss(self.ct_codes(ct), self.context(views), generator)

    def training_loss(self, views: torch.Tensor, angles, ct: torch.Tensor, generator=None) -> torch.Tensor:
        """All three losses summed: one step trains every part (the paper trains them one after another)."""
        return self.xray_vq_loss(views) + self.ct_vq_loss(ct) + self.prior_loss(views, angles, ct, generator)

    @torch.no_grad()
    def context(self, views: torch.Tensor) -> torch.Tensor:
        """Views (B, V, S, S) -> codebook vectors of their codes, view after view: (B, V * h * w, C)."""
        b, v, s, _ = views.shape
        codes = self.xray_vq.codes(views.reshape(b * v, 1, s, s))
        vectors = self.xray_vq.code_vectors(codes)  # (B*V, C, h, w)
        return vectors.flatten(2).transpose(1, 2).reshape(b, -1, vectors.shape[1])

    @torch.no_grad()
    def ct_codes(self, ct: torch.Tensor) -> torch.Tensor:
        """CTs (B, 1, D, D, D) -> code indices (B, N) in raster order."""
        return self.ct_vq.codes(self._check_ct(ct)).flatten(1)

    # --- helpers ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def _drawn_codes(self, views: torch.Tensor, steps: int, temperature: float, generator) -> torch.Tensor:
        """CT codes (B, g, g, g) the prior draws from the views."""
        codes = self.prior.sample(self.context(views), steps, temperature, generator)
        grid = self.ct_vq.code_size
        return codes.reshape(-1, grid, grid, grid)

    def _draw(self, views: torch.Tensor, steps: int, temperature: float, generator) -> torch.Tensor:
        with torch.no_grad():
            return self.ct_vq.decode_codes(self._drawn_codes(views, steps, temperature, generator))

    def _mean_std(self, views, n, steps, temperature, seed):
        generator = self._generator(views, seed)
        draws = torch.stack([self._draw(views, steps, temperature, generator) for _ in range(n)])
        return draws.mean(dim=0), draws.std(dim=0, correction=0)

    @staticmethod
    def _generator(views: torch.Tensor, seed: int | None):
        return None if seed is None else torch.Generator(device=views.device).manual_seed(int(seed))

    def _check_ct(self, ct: torch.Tensor) -> torch.Tensor:
        d = self.spec.volume_size
        if not isinstance(ct, torch.Tensor) or tuple(ct.shape[1:]) != (1, d, d, d):
            shape = tuple(ct.shape) if isinstance(ct, torch.Tensor) else type(ct).__name__
            raise InputError(f"{self.spec.name}: expected CTs of shape (B, 1, {d}, {d}, {d}), got {shape}.")
        if not torch.isfinite(ct).all():
            raise InputError(f"{self.spec.name}: the CT contains NaN or infinite values.")
        return ct


@register("code-diffusion", presets=PRESETS,
          summary="VQ-VAE codes of two X-rays -> absorbing discrete diffusion transformer -> CT codes -> CT",
          paper="seed 002: Corona-Figueroa et al., Unaligned 2D to 3D Translation with Conditional "
                "Vector-Quantized Code Diffusion using Transformers, 2023")
def build(preset: str, view_size: int, view_codes: int, view_width: int, view_multipliers, volume_size: int,
          volume_codes: int, volume_width: int, volume_multipliers, num_embeddings: int, embedding_dim: int,
          res_layers: int, width: int, layers: int, heads: int, dropout: float, diffusion_steps: int,
          sample_steps: int, temperature: float = 0.9, samples: int = 1, seed: int = 0, views: int = 2,
          commitment: float = 0.25) -> CodeDiffusion:
    angles = (0.0, 90.0) if views == 2 else tuple(360.0 * i / (2 * views) for i in range(views))
    spec = ModelSpec(name="code-diffusion", preset=preset, view_counts=(views,), view_size=view_size,
                     volume_size=volume_size, protocol="durham", default_angles=angles)
    xray_vq = VQAutoencoder(2, view_size, view_codes, view_width, view_multipliers, num_embeddings, embedding_dim,
                            res_layers, commitment)
    ct_vq = VQAutoencoder(3, volume_size, volume_codes, volume_width, volume_multipliers, num_embeddings,
                          embedding_dim, res_layers, commitment)
    prior = AbsorbingDiffusion(num_codes=num_embeddings, num_tokens=volume_codes**3,
                               context_tokens=views * view_codes**2, context_dim=embedding_dim, width=width,
                               layers=layers, heads=heads, dropout=dropout, diffusion_steps=diffusion_steps)
    return CodeDiffusion(spec, xray_vq, ct_vq, prior, sample_steps, temperature, samples, seed)
