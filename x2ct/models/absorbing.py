"""Absorbing-state discrete diffusion over CT codes, conditioned on X-ray codes: stage 2 of code diffusion.

Corona-Figueroa et al. (seed 002, Sec. 3.2), after Austin et al. and
Bond-Taylor et al.: at diffusion time t of T each CT code is replaced by a
[MASK] token with probability t / T; an unconstrained (bidirectional)
transformer reads the X-ray codes, projected to its width and placed before
the CT tokens, and predicts every masked CT code. Sampling starts from all
masks and unmasks tokens step by step.

The bound on the negative log-likelihood of codes c given views X, for this
masking schedule, is

    -log p(c | X) <= sum_{t=1..T} E_{c_t ~ q(c_t | c)} [ (1 / t) sum_{i masked} -log p(c_i | c_t, X) ]

(a masked token at time t is revealed at t - 1 with probability 1/t). The
paper trains with the reweighted form of their Eq. 7, weight (T - t + 1) / T
on the masked cross-entropy instead of 1 / t.

Ours: losses are divided by the number of CT tokens (per-token scale; the
loss itself is ``x2ct.losses.absorbing_diffusion_loss``); the likelihood
estimate stratifies t over T (unbiased) and is reported in bits per token;
sampling reveals a fixed share of the tokens per step in a random order,
so that exactly ``steps`` network passes unmask every token (the paper's
sampler reveals each masked token with probability 1/t, the same in
expectation). The transformer is ``torch.nn.TransformerEncoder`` with
pre-normalisation and GELU, 4x feed-forward width, trainable positional
embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from x2ct.losses.discrete import absorbing_diffusion_loss


class AbsorbingDiffusion(nn.Module):
    """Transformer denoiser p(c_0 | c_t, X) with the absorbing-state process around it."""

    def __init__(self, num_codes: int, num_tokens: int, context_tokens: int, context_dim: int, width: int,
                 layers: int, heads: int, dropout: float, diffusion_steps: int):
        super().__init__()
        self.num_codes, self.num_tokens, self.diffusion_steps = num_codes, num_tokens, diffusion_steps
        self.mask_id = num_codes  # the absorbing state: one index past the codebook
        self.token_embedding = nn.Embedding(num_codes + 1, width)
        self.context_projection = nn.Linear(context_dim, width)
        self.position = nn.Parameter(torch.randn(1, context_tokens + num_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_codes)

    def logits(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """CT tokens (B, N) with mask_id where masked, context (B, M, context_dim) -> logits (B, N, codes)."""
        sequence = torch.cat([self.context_projection(context), self.token_embedding(tokens)], dim=1)
        hidden = self.transformer(sequence + self.position)
        return self.head(self.norm(hidden[:, -self.num_tokens :]))

    def masked(self, codes: torch.Tensor, t: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask each code of sample b with probability t[b] / T -> (tokens, mask)."""
        draw = torch.rand(codes.shape, generator=generator, device=codes.device)
        mask = draw < (t.float() / self.diffusion_steps).unsqueeze(-1)
        return torch.where(mask, torch.full_like(codes, self.mask_id), codes), mask

    def _predict(self, codes: torch.Tensor, context: torch.Tensor, t: torch.Tensor, generator=None):
        tokens, mask = self.masked(codes, t, generator)
        return self.logits(tokens, context), mask

    def loss(self, codes: torch.Tensor, context: torch.Tensor, generator=None) -> torch.Tensor:
        """Training loss: the paper's reweighted ELBO (Eq. 7) at a random time, nats per token, batch mean."""
        t = torch.randint(1, self.diffusion_steps + 1, codes.shape[:1], generator=generator, device=codes.device)
        logits, mask = self._predict(codes, context, t, generator)
        return absorbing_diffusion_loss(logits, codes, mask, t, self.diffusion_steps, reweighted=True)

    def nll_bound(self, codes: torch.Tensor, context: torch.Tensor, strata: int = 16, generator=None) -> torch.Tensor:
        """Negative ELBO of the codes, bits per token, per sample (B,): an upper bound on -log2 p(c | X) / N.

        Stratified Monte Carlo over t: 1..T is split into ``strata`` ranges,
        one uniform t per range weighted by the range's share of T (unbiased).
        """
        steps = self.diffusion_steps
        strata = max(1, min(strata, steps))
        bounds = [round(k * steps / strata) for k in range(strata + 1)]
        total = torch.zeros(codes.shape[0], device=codes.device)
        for low, high in zip(bounds[:-1], bounds[1:]):
            t = torch.randint(low + 1, high + 1, codes.shape[:1], generator=generator, device=codes.device)
            logits, mask = self._predict(codes, context, t, generator)
            # (T / t) * masked NLL / N: a one-sample estimate of the whole bound, weighted by this range's share
            estimate = absorbing_diffusion_loss(logits, codes, mask, t, steps, reweighted=False, reduction="none")
            total = total + (high - low) / steps * estimate
        return total / math.log(2.0)

    @torch.no_grad()
    def sample(self, context: torch.Tensor, steps: int, temperature: float = 0.9, generator=None) -> torch.Tensor:
        """Codes (B, N) drawn from p(c | X): all masked at first, ~N/steps revealed per network pass."""
        b, n = context.shape[0], self.num_tokens
        tokens = torch.full((b, n), self.mask_id, dtype=torch.long, device=context.device)
        order = torch.rand((b, n), generator=generator, device=context.device).argsort(dim=1)
        bounds = [round(k * n / steps) for k in range(steps + 1)]
        for low, high in zip(bounds[:-1], bounds[1:]):
            if high == low:
                continue
            positions = order[:, low:high]
            logits = self.logits(tokens, context).gather(
                1, positions.unsqueeze(-1).expand(-1, -1, self.num_codes))
            probabilities = torch.softmax(logits / temperature, dim=-1).reshape(-1, self.num_codes)
            drawn = torch.multinomial(probabilities, 1, generator=generator).reshape(b, high - low)
            tokens.scatter_(1, positions, drawn)
        return tokens
