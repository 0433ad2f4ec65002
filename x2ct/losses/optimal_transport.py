"""Neural optimal transport losses of Repeat-and-Concatenate (seed 000, Sec. 3.2.1).

The cost between a batch of predicted volumes and their ground truths is the
de-biased Sinkhorn divergence (Feydy et al. 2019, via geomloss) between the
activations of a frozen, randomly initialised 3D CNN, each sample of the batch
being one point of the point cloud; it is summed over the extractor's four
activation maps and weighted 0.1. A critic d (``x2ct.models.methods.
repeat_concat``) adds the dual term of neural OT (Korotin et al. 2022):

* generator: ``L_g = cost - 0.1 * mean d(pred)``            (seed 000 eq. 3)
* critic:    ``L_d = 100 * (mean d(pred) - mean d(gt))``    (eq. 4; the
  public code scales it by 100)

so the critic learns to score ground truth high and predictions low, and the
generator raises its critic score. The weights are those of the released
configuration (methods.md).
"""

from __future__ import annotations

import torch
from geomloss import SamplesLoss
from monai.networks.blocks import Convolution
from torch import nn

from x2ct.errors import InputError


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, blur: float = 0.05) -> torch.Tensor:
    """De-biased Sinkhorn divergence between two equal-weight point clouds (N, F) and (M, F).

    geomloss's ``p=2`` ground cost is ``|x - y|^2 / 2``; as ``blur`` -> 0 the
    value tends to the exact optimal transport cost with that ground cost.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise InputError(f"sinkhorn_divergence takes point clouds (N, F) and (M, F), got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}.")
    return SamplesLoss("sinkhorn", p=2, blur=blur, debias=True)(x, y)


class FeatureExtractor(nn.Module):
    """The frozen random 3D CNN whose activations the Sinkhorn cost compares.

    PatchGAN-like, as in the public code: ``n_layers`` 4x4x4 stride-2
    convolutions (filters ``base_filters * 2^i``, at most x8) and one stride-1
    convolution, each followed by LeakyReLU(0.2); Kaiming-normal weights drawn
    from ``seed`` so it is the same network every run. Departure: the code's
    BatchNorm layers are left out. That code never puts the extractor in eval
    mode, so its BatchNorm normalises with the statistics of whichever batch
    passes through (predictions and ground truths separately); a frozen
    BatchNorm at initialisation is the identity, which is what we use, and
    each sample's features then do not depend on the rest of its batch.
    """

    def __init__(self, in_channels: int = 1, base_filters: int = 16, n_layers: int = 3, seed: int = 0):
        super().__init__()
        channels = [in_channels] + [base_filters * min(2 ** i, 8) for i in range(n_layers + 1)]
        strides = [2] * n_layers + [1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.blocks = nn.ModuleList(
                Convolution(3, c_in, c_out, strides=stride, kernel_size=4, padding=1, bias=i == 0,
                            act=("leakyrelu", {"negative_slope": 0.2}), norm=None)
                for i, (c_in, c_out, stride) in enumerate(zip(channels[:-1], channels[1:], strides)))
            for block in self.blocks:
                nn.init.kaiming_normal_(block.conv.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)  # frozen: never in training mode

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        """Volumes (B, C, D, H, W) -> the activation map after every block."""
        activations = []
        for block in self.blocks:
            volume = block(volume)
            activations.append(volume)
        return activations


def _unit_channels(activation: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each voxel's feature vector to unit length (as the public code does before the cost)."""
    return activation / (activation.norm(dim=1, keepdim=True) + eps)


class SinkhornFeatureCost(nn.Module):
    """``weight * sum_maps S_eps(f(pred), f(gt))``: the transport cost of seed 000 eq. 3.

    Each sample's unit-normalised activation map, flattened, is one point;
    the divergence compares the batch of predictions with the batch of
    ground truths as two point clouds (so a batch of one reduces to the
    squared feature distance / 2, and the cost can split mass between samples).
    """

    def __init__(self, in_channels: int = 1, base_filters: int = 16, n_layers: int = 3, blur: float = 0.05,
                 weight: float = 0.1, seed: int = 0):
        super().__init__()
        self.extractor = FeatureExtractor(in_channels, base_filters, n_layers, seed)
        self.divergence = SamplesLoss("sinkhorn", p=2, blur=blur, debias=True)
        self.weight = weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 5 or pred.shape[1:] != target.shape[1:]:
            raise InputError(f"SinkhornFeatureCost compares volumes (B, C, D, H, W) of one shape, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}.")
        cost = pred.new_zeros(())
        for a, b in zip(self.extractor(pred), self.extractor(target)):
            a, b = _unit_channels(a).flatten(1), _unit_channels(b).flatten(1)
            cost = cost + self.divergence(a, b)
        return self.weight * cost


def neural_ot_generator_loss(cost: torch.Tensor, critic_pred: torch.Tensor, weight: float = 0.1) -> torch.Tensor:
    """``cost - weight * mean d(pred)`` (seed 000 eq. 3, lambda = 0.1): the generator raises its critic score."""
    return cost - weight * critic_pred.mean()


def neural_ot_critic_loss(critic_pred: torch.Tensor, critic_real: torch.Tensor, weight: float = 100.0) -> torch.Tensor:
    """``weight * (mean d(pred) - mean d(gt))`` (seed 000 eq. 4, x100 as in the public code).

    Minimising it scores ground truth high and predictions low; no gradient
    penalty (as published). Pass ``critic_pred`` computed on detached predictions.
    """
    return weight * (critic_pred.mean() - critic_real.mean())
