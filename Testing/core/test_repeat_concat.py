"""repeat-concat (seed 000): view lifting, the orientation-bug option, output range, presets, critic, a neural-OT step.

The registry-wide contract (shapes, gradients, InputError...) is in test_models_contract.py.
"""

import pytest
import torch
import torch.nn.functional as F

from x2ct.errors import InputError
from x2ct.losses import SinkhornFeatureCost, neural_ot_critic_loss, neural_ot_generator_loss
from x2ct.models import build, build_critic, count_parameters
from x2ct.models.lifting import lift_view
from x2ct.models.methods.repeat_concat import PAPER_ANGLES


def _constant_along(volume: torch.Tensor, axis: int) -> bool:
    return torch.equal(volume, volume.narrow(axis, 0, 1).expand_as(volume))


def test_each_view_is_repeated_along_its_own_rays():
    model = build("repeat-concat", "tiny")
    views = torch.rand(2, 2, 32, 32)
    lifted = model.lift(views, torch.tensor([[0.0, 90.0]] * 2))
    assert lifted.shape == (2, 2, 32, 32, 32)
    frontal, lateral = lifted[:, 0], lifted[:, 1]  # (B, D, H, W)
    assert _constant_along(frontal, 2) and not _constant_along(frontal, 3)  # rays along axis 1
    assert _constant_along(lateral, 3) and not _constant_along(lateral, 2)  # rays along axis 2
    assert torch.equal(frontal[:, :, 0, :], views[:, 0])  # rows = axis 0, columns = axis 2
    assert torch.equal(lateral[:, :, :, 0], views[:, 1])  # rows = axis 0, columns = axis 1


def test_same_orientation_bug_repeats_every_view_like_the_frontal():
    model = build("repeat-concat", "tiny", same_orientation_bug=True)
    views = torch.rand(1, 2, 32, 32)
    lifted = model.lift(views, torch.tensor([[0.0, 90.0]]))
    assert _constant_along(lifted[:, 0], 2) and _constant_along(lifted[:, 1], 2)
    assert torch.equal(lifted[:, 1, :, 0, :], views[:, 1])


@pytest.mark.parametrize("n_views", [1, 4, 8])
def test_paper_view_sets_lift_along_rotated_rays(n_views):
    model = build("repeat-concat", "tiny", n_views=n_views)
    assert model.spec.view_counts == (n_views,)
    assert model.default_angles(n_views) == PAPER_ANGLES[n_views]
    views = torch.rand(1, n_views, 32, 32)
    angles = torch.tensor([PAPER_ANGLES[n_views]])
    lifted = model.lift(views, angles)
    assert lifted.shape == (1, n_views, 32, 32, 32)
    for i, angle in enumerate(PAPER_ANGLES[n_views]):
        assert torch.equal(lifted[:, i : i + 1], lift_view(views[:, i : i + 1], angle, 32))
    if n_views == 4:  # 180 degrees: the AP view, columns towards the patient's right
        assert torch.equal(lifted[0, 2, :, 0, :], views[0, 2].flip(-1))


def test_each_sample_is_lifted_at_its_own_angles():
    model = build("repeat-concat", "tiny")
    views = torch.rand(2, 2, 32, 32)
    lifted = model.lift(views, torch.tensor([[0.0, 90.0], [90.0, 0.0]]))
    assert _constant_along(lifted[0, 0], 1) and _constant_along(lifted[1, 0], 2)


def test_views_are_resized_to_the_volume_side():
    model = build("repeat-concat", "tiny", view_size=64)
    views = torch.rand(1, 2, 64, 64)
    lifted = model.lift(views, torch.tensor([[0.0, 90.0]]))
    small = F.interpolate(views, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert lifted.shape == (1, 2, 32, 32, 32)
    assert torch.allclose(lifted[0, 0, :, 0, :], small[0, 0])


def test_raw_output_in_training_clipped_to_unit_range_in_eval():
    model = build("repeat-concat", "tiny")
    with torch.no_grad():
        for p in model.net.out.parameters():  # push the output outside [0, 1]
            p.mul_(50.0)
        views, angles = torch.rand(1, 2, 32, 32), torch.tensor([[0.0, 90.0]])
        raw = model.train()(views, angles)
        clipped = model.eval()(views, angles)
    assert raw.min() < 0 or raw.max() > 1
    assert torch.allclose(clipped, raw.clamp(0, 1), atol=1e-5)


def test_paper_preset_is_swin_unetr_48_whatever_the_view_count():
    for n_views in (1, 8):
        with torch.device("meta"):
            model = build("repeat-concat", "paper", n_views=n_views)
        assert model.net.swinViT.embed_dim == 48
        assert abs(count_parameters(model) - 62.2e6) / 62.2e6 < 0.01
    assert model.spec.volume_size == 64 and model.spec.view_size == 128


def test_small_preset_size():
    model = build("repeat-concat", "small")
    assert count_parameters(model) < 8e6
    assert model.spec.volume_size % 32 == 0
    assert model.spec.protocol == "durham"  # the Durham papers' intensity protocol


def test_volume_side_must_divide_by_32():
    with pytest.raises(InputError, match="divisible by 32"):
        build("repeat-concat", "tiny", volume_size=48)


def test_critic_scores_volumes_and_checks_their_size():
    critic = build_critic("repeat-concat", "tiny")
    scores = critic(torch.rand(3, 1, 32, 32, 32))
    assert scores.shape == (3, 1)
    with pytest.raises(InputError, match="volume_size"):
        critic(torch.rand(1, 1, 16, 16, 16))
    with torch.device("meta"):
        paper = build_critic("repeat-concat", "paper")
    assert paper.volume_size == 64 and paper.score.in_features == 512 * 4 ** 3  # 32 filters doubling to 512
    with pytest.raises(InputError, match="power of two"):
        build_critic("repeat-concat", "tiny", volume_size=48)


def test_one_neural_ot_round_updates_generator_and_critic():
    """k generator steps on cost - 0.1 d(pred), then one critic step on 100 (d(pred) - d(gt)) (seed 000)."""
    model = build("repeat-concat", "tiny").train()
    critic = build_critic("repeat-concat", "tiny")
    cost = SinkhornFeatureCost()
    g_opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-3)
    d_opt = torch.optim.AdamW(critic.parameters(), lr=1e-4, eps=1e-3)
    views, angles = torch.rand(1, 2, 32, 32), torch.tensor([[0.0, 90.0]])
    target = torch.rand(1, 1, 32, 32, 32)

    critic.requires_grad_(False)
    before = [p.clone() for p in model.parameters()]
    pred = model(views, angles)
    g_loss = neural_ot_generator_loss(cost(pred, target), critic(pred))
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()
    assert torch.isfinite(g_loss) and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    critic.requires_grad_(True)
    pred = pred.detach()  # the critic step sees predictions as fixed samples
    d_loss = neural_ot_critic_loss(critic(pred), critic(target))
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()
    assert all(p.grad is not None for p in critic.parameters())
    with torch.no_grad():
        assert neural_ot_critic_loss(critic(pred), critic(target)) < d_loss
