"""x2ct.losses: each loss against an independent reference on tiny inputs."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from x2ct import losses
from x2ct.errors import InputError
from x2ct.models.lifting import lift_view


# --- optimal transport ---------------------------------------------------------------------------

def _exact_ot(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact OT between equal-weight clouds with geomloss's p=2 cost |x - y|^2 / 2, by brute force."""
    cost = (torch.cdist(x, y) ** 2 / 2).numpy()
    n = len(x)
    return min(cost[range(n), list(p)].mean() for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("n", [4, 5, 6])
def test_sinkhorn_divergence_matches_exact_optimal_transport(n):
    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64)
    y = torch.rand(n, 3, generator=g, dtype=torch.float64) + torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)
    exact = _exact_ot(x, y)
    assert losses.sinkhorn_divergence(x, y).item() == pytest.approx(exact, rel=0.02)
    assert losses.sinkhorn_divergence(x, x).item() == pytest.approx(0.0, abs=1e-9)


def test_sinkhorn_divergence_refuses_mismatched_clouds():
    with pytest.raises(InputError, match="point clouds"):
        losses.sinkhorn_divergence(torch.rand(4, 3), torch.rand(4, 2))


def test_feature_cost_is_zero_for_identical_volumes_and_positive_otherwise():
    cost = losses.SinkhornFeatureCost()
    a, b = torch.rand(3, 1, 16, 16, 16), torch.rand(3, 1, 16, 16, 16)
    assert cost(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert cost(a, b).item() > 0.01


def test_feature_cost_of_one_sample_is_the_weighted_feature_distance():
    """A batch of one is a pair of Diracs: the Sinkhorn divergence is then exactly |f(a) - f(b)|^2 / 2."""
    cost = losses.SinkhornFeatureCost(weight=0.1)
    a, b = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    expected = 0.0
    for fa, fb in zip(cost.extractor(a), cost.extractor(b)):
        fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
        fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
        expected += ((fa - fb) ** 2).sum().item() / 2
    assert cost(a, b).item() == pytest.approx(0.1 * expected, rel=1e-4)


def test_feature_extractor_is_seeded_frozen_and_has_four_maps():
    first, second = losses.FeatureExtractor(seed=3), losses.FeatureExtractor(seed=3)
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q) and not p.requires_grad
    first.train()
    assert not first.training
    maps = first(torch.rand(2, 1, 32, 32, 32))
    assert [m.shape[1] for m in maps] == [16, 32, 64, 128]
    assert not torch.equal(losses.FeatureExtractor(seed=4).blocks[0].conv.weight, first.blocks[0].conv.weight)


def test_feature_cost_gradient_reaches_the_prediction_only():
    cost = losses.SinkhornFeatureCost()
    pred = torch.rand(2, 1, 16, 16, 16, requires_grad=True)
    cost(pred, torch.rand(2, 1, 16, 16, 16)).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in cost.parameters())


def test_neural_ot_signs_follow_seed_000():
    critic_pred, critic_real = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])
    cost = torch.tensor(2.0)
    assert losses.neural_ot_generator_loss(cost, critic_pred).item() == pytest.approx(2.0 - 0.1 * 2.0)
    assert losses.neural_ot_critic_loss(critic_pred, critic_real).item() == pytest.approx(100 * (2.0 - 6.0))
    # The generator gains by raising its score; the critic by scoring real above predicted.
    score = torch.tensor([0.5], requires_grad=True)
    losses.neural_ot_generator_loss(cost, score).backward()
    assert score.grad.item() < 0
    real = torch.tensor([0.5], requires_grad=True)
    losses.neural_ot_critic_loss(torch.tensor([0.2]), real).backward()
    assert real.grad.item() < 0


# --- adversarial ---------------------------------------------------------------------------------

def test_lsgan_losses():
    real, fake = torch.tensor([1.0, 0.5]), torch.tensor([0.0, 0.5])
    assert losses.lsgan_generator_loss(torch.ones(3)).item() == 0.0
    assert losses.lsgan_generator_loss(fake).item() == pytest.approx((1 + 0.25) / 2)
    assert losses.lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.25 / 2 + 0.25 / 2)
    assert losses.lsgan_generator_loss([torch.ones(2), torch.zeros(2)]).item() == pytest.approx(0.5)


def test_bce_losses_match_log_sigmoid():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    log_sigmoid = lambda s: np.log(1 / (1 + np.exp(-s)))  # noqa: E731
    expected_g = -np.mean([log_sigmoid(0.5), log_sigmoid(-3.0)])
    expected_d = -np.mean([log_sigmoid(2.0), log_sigmoid(-1.0)]) - np.mean([log_sigmoid(-0.5), log_sigmoid(3.0)])
    assert losses.bce_generator_loss(fake).item() == pytest.approx(expected_g, rel=1e-5)
    assert losses.bce_discriminator_loss(real, fake).item() == pytest.approx(expected_d, rel=1e-5)


# --- masked --------------------------------------------------------------------------------------

def test_masked_losses_average_over_the_mask_only():
    pred, target = torch.rand(2, 1, 4, 4, 4), torch.rand(2, 1, 4, 4, 4)
    mask = torch.rand(2, 1, 4, 4, 4) > 0.5
    diff = (pred - target)[mask]
    assert losses.masked_mse(pred, target, mask).item() == pytest.approx(diff.square().mean().item(), rel=1e-6)
    assert losses.masked_l1(pred, target, mask).item() == pytest.approx(diff.abs().mean().item(), rel=1e-6)
    pred.requires_grad_(True)
    empty = losses.masked_mse(pred, target, torch.zeros_like(mask))
    empty.backward()
    assert empty.item() == 0.0 and pred.grad is not None
    with pytest.raises(InputError, match="broadcast"):
        losses.masked_l1(pred, target, torch.ones(3, 3))


def test_total_variation_matches_numpy():
    volume = torch.rand(2, 1, 4, 5, 6)
    v = volume.numpy()
    expected = sum(np.abs(np.diff(v, axis=a)).mean() for a in (2, 3, 4))
    assert losses.total_variation(volume).item() == pytest.approx(expected, rel=1e-5)
    assert losses.total_variation(torch.ones(1, 1, 4, 4, 4)).item() == 0.0


# --- projection ----------------------------------------------------------------------------------

def test_x2ct_projection_loss_matches_numpy():
    pred, target = torch.randn(2, 1, 6, 6, 6), torch.randn(2, 1, 6, 6, 6)
    p, t = np.abs(pred.numpy()), np.abs(target.numpy())
    expected = np.mean([np.abs(p.mean(axis=a) - t.mean(axis=a)).mean() for a in (2, 3, 4)])
    assert losses.x2ct_projection_loss(pred, target).item() == pytest.approx(expected, rel=1e-5)
    assert losses.x2ct_projection_loss(pred, pred).item() == 0.0


@pytest.mark.parametrize("angle", [0, 90, 180, 270])
def test_line_integrals_invert_lifting_at_quarter_angles(angle):
    view = torch.rand(1, 1, 8, 8)
    volume = lift_view(view, angle, 8)
    assert torch.allclose(losses.line_integrals(volume, [angle])[0, 0], 8 * view[0, 0], atol=1e-5)


def test_line_integrals_orientation_on_an_asymmetric_phantom():
    """A block superior, anterior and on the patient's left: frontal columns run to the patient's left."""
    volume = torch.zeros(1, 1, 8, 8, 8)
    volume[0, 0, 1, 2, 6] = 1.0  # axis 0 row 1 (superior), axis 1 = 2 (anterior), axis 2 = 6 (left)
    frontal, lateral = losses.line_integrals(volume, [0, 90])[0]
    assert tuple((frontal == frontal.max()).nonzero()[0].tolist()) == (1, 6)
    assert tuple((lateral == lateral.max()).nonzero()[0].tolist()) == (1, 2)  # anterior on the left


def test_beer_lambert_loss():
    pred, target = torch.rand(1, 1, 8, 8, 8, requires_grad=True), torch.rand(1, 1, 8, 8, 8)
    assert losses.beer_lambert_loss(target, target, [0, 90]).item() == 0.0
    loss = losses.beer_lambert_loss(pred, target, [0, 45, 90])
    loss.backward()
    scale = 4.0 / 8
    expected = F.mse_loss(torch.exp(-scale * pred.detach().sum(dim=3)), torch.exp(-scale * target.sum(dim=3)))
    frontal_only = losses.beer_lambert_loss(pred.detach(), target, [0])
    assert frontal_only.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() > 0 and torch.isfinite(pred.grad).all()


def test_view_consistency_loss_is_zero_for_the_volumes_own_views():
    volume = torch.rand(2, 1, 8, 8, 8)
    images = losses.line_integrals(volume, [0, 90])
    views = images / images.amax(dim=(-2, -1), keepdim=True)
    assert losses.view_consistency_loss(volume, views, [0, 90]).item() == pytest.approx(0.0, abs=1e-10)
    assert losses.view_consistency_loss(volume, views.flip(-1), [0, 90]).item() > 1e-3
    big = F.interpolate(views, size=(16, 16), mode="bilinear", align_corners=False)
    assert losses.view_consistency_loss(volume, big, [0, 90]).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(InputError, match="angle"):
        losses.view_consistency_loss(volume, views, [0])


# --- discrete ------------------------------------------------------------------------------------

def test_straight_through_and_vq_loss_gradients():
    encodings = torch.randn(2, 4, 3, 3, requires_grad=True)
    codes = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = losses.straight_through(encodings, codes)
    assert torch.allclose(out, codes, atol=1e-6)
    out.sum().backward()
    assert torch.equal(encodings.grad, torch.ones_like(encodings)) and codes.grad is None
    encodings.grad = None
    loss = losses.vq_loss(encodings, codes, commitment=0.25)
    mse = F.mse_loss(encodings, codes).item()
    assert loss.item() == pytest.approx(1.25 * mse, rel=1e-6)
    loss.backward()
    diff = (encodings - codes).detach() * 2 / encodings.numel()
    assert torch.allclose(codes.grad, -diff, atol=1e-7)  # codebook term moves the codes
    assert torch.allclose(encodings.grad, 0.25 * diff, atol=1e-7)  # commitment term moves the encoder


def test_vqvae_loss_wraps_monai_vqvae():
    from monai.networks.nets import VQVAE

    net = VQVAE(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 4), num_res_channels=4,
                num_res_layers=1, downsample_parameters=((2, 4, 1, 1),) * 2,
                upsample_parameters=((2, 4, 1, 1, 0),) * 2, num_embeddings=8, embedding_dim=4)
    image = torch.rand(1, 1, 8, 8)
    reconstruction, quantisation = net(image)
    loss = losses.vqvae_loss(reconstruction, image, quantisation)
    assert loss.item() == pytest.approx(F.l1_loss(reconstruction, image).item() + quantisation.item(), rel=1e-6)
    with pytest.raises(InputError, match="reconstruction_loss"):
        losses.vqvae_loss(reconstruction, image, quantisation, reconstruction_loss="ssim")


def test_absorbing_diffusion_loss_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]]]))
    targets = torch.tensor([[0, 1, 0, 2]])
    mask = torch.tensor([[True, False, True, False]])
    masked_nll = -math.log(0.5) - math.log(0.2)  # the unmasked tokens do not count
    t, T = torch.tensor([2]), 4
    elbo = losses.absorbing_diffusion_loss(logits, targets, mask, t, T, reweighted=False)
    assert elbo.item() == pytest.approx(T / 2 * masked_nll / 4, rel=1e-5)
    reweighted = losses.absorbing_diffusion_loss(logits, targets, mask, t, T)
    assert reweighted.item() == pytest.approx((T - 2 + 1) / T * masked_nll / 4, rel=1e-5)
    per_sample = losses.absorbing_diffusion_loss(logits.repeat(2, 1, 1), targets.repeat(2, 1), mask.repeat(2, 1),
                                                 torch.tensor([1, 4]), T, reduction="none")
    assert per_sample.tolist() == pytest.approx([masked_nll / 4, 0.25 * masked_nll / 4], rel=1e-5)
    with pytest.raises(InputError, match="1..4"):
        losses.absorbing_diffusion_loss(logits, targets, mask, torch.tensor([0]), T)
