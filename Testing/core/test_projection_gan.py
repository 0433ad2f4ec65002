"""projection-gan: the projection operator, the seed's dynamic weights, the 2D critic."""

import torch

from x2ct.models import build, build_critic, count_parameters
from x2ct.models.lifting import lift_view
from x2ct.models.methods.projection_gan import SEED_NUMERATORS, dynamic_weights, project, weighted_sum


def test_projection_sums_along_depth_for_frontal_and_width_for_lateral():
    volume = torch.rand(2, 1, 8, 8, 8)
    images = project(volume, torch.tensor([[0.0, 90.0]] * 2), normalise=False)
    assert images.shape == (2, 2, 8, 8)
    assert torch.allclose(images[:, 0], volume[:, 0].sum(dim=2))  # axis 1: anterior-posterior rays
    assert torch.allclose(images[:, 1], volume[:, 0].sum(dim=3))  # axis 2: right-left rays


def test_projection_is_the_adjoint_of_lifting_at_any_angle():
    volume, image = torch.rand(1, 1, 12, 12, 12), torch.rand(1, 1, 12, 12)
    for angle in (0.0, 30.0, 90.0, 135.0):
        lifted = lift_view(image, angle, 12)
        projected = project(volume, torch.tensor([[angle]]), normalise=False)
        assert torch.allclose((lifted * volume).sum(), (image[:, 0] * projected[:, 0]).sum(), rtol=1e-5)


def test_projection_of_a_lifted_view_gives_the_view_back():
    view = torch.rand(1, 1, 10, 10)
    for angle in (0.0, 90.0):
        volume = lift_view(view, angle, 10)
        assert torch.allclose(project(volume, torch.tensor([[angle]]), normalise=False)[:, 0], 10 * view[:, 0])
        normalised = project(volume, torch.tensor([[angle]]))
        assert torch.allclose(normalised[:, 0], view[:, 0] / view.max(), atol=1e-6)


def test_projection_consistency_trains_the_generator():
    model = build("projection-gan", "tiny").train()
    views = torch.rand(1, 2, 16, 16)
    angles = torch.tensor([[0.0, 90.0]])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        torch.manual_seed(0)
        loss = torch.nn.functional.mse_loss(project(model(views, angles), angles), views)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_dynamic_weights_follow_the_seed():
    losses = [torch.tensor(2.0, requires_grad=True), torch.tensor(0.5), torch.tensor(1.0)]
    weights = dynamic_weights(losses)
    raw = torch.tensor([1.0 / 2.0, 0.1 / 0.5, 1.0 / 1.0])
    assert SEED_NUMERATORS == (1.0, 0.1, 1.0)
    assert torch.allclose(weights, raw / raw.sum())
    assert not weights.requires_grad


def test_weighted_sum_backpropagates_through_the_losses_only():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = [x[0] ** 2, 3 * x[1], x.sum()]
    weights = dynamic_weights(losses)
    weighted_sum(losses).backward()
    expected = weights[0] * torch.tensor([2.0, 0.0]) + weights[1] * torch.tensor([0.0, 3.0]) + weights[2]
    assert torch.allclose(x.grad, expected)


def test_critic_scores_each_image_on_its_own():
    critic = build_critic("projection-gan", "tiny").eval()
    images = torch.rand(2, 2, 16, 16)
    changed = images.clone()
    changed[:, 1] = torch.rand(2, 16, 16)
    with torch.no_grad():
        first, second = critic(images), critic(changed)
    assert first.shape[:2] == (2, 2)
    assert torch.equal(first[:, 0], second[:, 0]) and not torch.equal(first[:, 1], second[:, 1])


def test_generator_is_x2cts():
    with torch.device("meta"):
        assert count_parameters(build("projection-gan", "paper")) == count_parameters(build("x2ct-gan", "paper"))
    assert build("projection-gan", "tiny").spec.name == "projection-gan"
