"""Density and coverage of reconstructions, in the code-diffusion paper's terms.

Naeem et al. (ICML 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models") score a set of generated samples against a set of real
ones in an embedding space, with k-nearest-neighbour balls around the real
embeddings (radius: the distance to the k-th nearest other real one):

* density = (1 / kM) sum over the M fakes of the number of real balls that
  contain them (fidelity; about 1 when fakes look like reals, can exceed 1);
* coverage = the fraction of real balls that contain at least one fake
  (diversity; in [0, 1]).

The code-diffusion paper (seed 002) computes them for CT volumes on
embeddings of dimension 2,197 from a randomly initialised 3D convolutional
encoder, since ImageNet features do not fit CT. Its encoder is not
published; ours is fixed here: the volume resampled to 128^3 (trilinear),
then four 3D convs (4^3 kernels; 1->8->16->32 channels with stride 2 and
ReLU, then 32->1 without padding), which gives 13^3 = 2,197 values, with
PyTorch's default initialisation drawn from seed ``ENCODER_SEED``. The same
seed gives the same encoder, so numbers compare across runs and models.
Numbers are comparable with the paper's only in kind (their encoder and
their data differ).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from x2ct.errors import InputError

#: Neighbours per real ball (Naeem et al.'s and the ``prdc`` package's default).
NEAREST_K = 5
#: Seed of the random encoder's weights.
ENCODER_SEED = 2020
#: Side the volumes are resampled to before embedding (2,197 = 13^3 features).
EMBED_SIDE = 128
DESCRIPTION = (f"density/coverage (Naeem et al. 2020, k={NEAREST_K}) on 2,197-d embeddings of a random 3D CNN "
               f"(seed {ENCODER_SEED}), as the code-diffusion paper; volumes in [0,1] resampled to {EMBED_SIDE}^3")


def random_encoder(seed: int = ENCODER_SEED) -> nn.Sequential:
    """The fixed random 3D CNN: (B, 1, 128, 128, 128) -> (B, 2197)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = nn.Sequential(
            nn.Conv3d(1, 8, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv3d(32, 1, 4), nn.Flatten())
    return encoder.eval()


class Embedder:
    """Embeds (D, H, W) volumes in [0, 1] with one random encoder (built once)."""

    def __init__(self, seed: int = ENCODER_SEED, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.encoder = random_encoder(seed).to(self.device)

    def __call__(self, volume) -> np.ndarray:
        tensor = torch.as_tensor(np.asarray(volume, dtype=np.float32) if not torch.is_tensor(volume) else volume)
        if tensor.ndim != 3 or min(tensor.shape) < 2:
            raise InputError(f"Embedding needs a 3D volume, got shape {tuple(tensor.shape)}.")
        tensor = tensor.float().to(self.device)[None, None]
        if tuple(tensor.shape[2:]) != (EMBED_SIDE,) * 3:
            tensor = F.interpolate(tensor, size=(EMBED_SIDE,) * 3, mode="trilinear", align_corners=False)
        with torch.no_grad():
            return self.encoder(tensor)[0].double().cpu().numpy()


def density_coverage(real: np.ndarray, fake: np.ndarray, nearest_k: int = NEAREST_K) -> dict:
    """Density and coverage of ``fake`` (M, F) against ``real`` (N, F) embeddings; k is capped at N - 1.

    Returns {"density", "coverage", "k", "real", "fake"}; NaN scores when
    there are fewer than two real samples (no ball can be drawn).
    """
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise InputError(f"Density/coverage need (N, F) and (M, F) embeddings, got {real.shape} and {fake.shape}.")
    k = min(int(nearest_k), real.shape[0] - 1)
    result = {"k": k, "real": int(real.shape[0]), "fake": int(fake.shape[0])}
    if k < 1 or fake.shape[0] < 1:
        return {**result, "density": float("nan"), "coverage": float("nan")}
    radii = np.sort(_distances(real, real), axis=1)[:, k]  # column 0 is each real's distance to itself
    inside = _distances(real, fake) < radii[:, None]  # (N, M): fake j in real i's ball
    return {**result, "density": float(inside.sum() / (k * fake.shape[0])),
            "coverage": float(inside.any(axis=1).mean())}


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b))."""
    from scipy.spatial.distance import cdist

    return cdist(a, b, "euclidean")


def volume_density_coverage(real: Sequence, fake: Sequence, nearest_k: int = NEAREST_K,
                            seed: int = ENCODER_SEED) -> dict:
    """``density_coverage`` of two lists of (D, H, W) volumes in [0, 1], embedded by the random encoder."""
    embed = Embedder(seed)
    return density_coverage(np.stack([embed(v) for v in real]), np.stack([embed(v) for v in fake]), nearest_k)
