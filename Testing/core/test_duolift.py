"""DuoLift-CNN / DuoLift-GAN: the sizes the paper states, both lifting branches, the critic."""

import pytest
import torch

from x2ct.errors import InputError
from x2ct.models import build, build_critic, count_parameters
from x2ct.models.blocks import ResNetEncoder2D

FRONTAL_LATERAL = torch.tensor([[0.0, 90.0]])


def test_resnet34_encoder_has_resnet34_size():
    # torchvision ResNet-34: 21,797,672 parameters; minus its fc (512*1000 + 1000) and two of the
    # stem's three input channels (2 * 64 * 7 * 7) for one grey view.
    encoder = ResNetEncoder2D()
    assert count_parameters(encoder) == 21_797_672 - 513_000 - 2 * 64 * 49


def test_resnet_encoder_strides():
    with torch.device("meta"):
        image = torch.rand(1, 1, 128, 128)
        assert ResNetEncoder2D()(image).shape == (1, 512, 32, 32)  # DuoLift: 512 x H/4 x W/4
        assert ResNetEncoder2D(strides=(1, 2, 2, 2))(image).shape == (1, 512, 4, 4)  # classic ResNet-34


def test_paper_feature_sizes_follow_the_text():
    with torch.device("meta"):
        model = build("duolift-gan", "paper")
        views = torch.rand(1, 2, 128, 128)
    shapes = {}
    for name in ("block1", "block2", "block3", "raw_block", "dropout"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape[1:]))
    model.block1.register_forward_pre_hook(lambda m, args: shapes.__setitem__("F_B", args[0].shape[1:]))
    assert model.reconstruct(views, FRONTAL_LATERAL).shape == (1, 1, 128, 128, 128)
    assert shapes["F_B"] == (1024, 32, 32, 32)
    assert shapes["block1"] == (256, 32, 32, 32)  # f_u21
    assert shapes["block2"] == (128, 64, 64, 64)  # f_u22
    assert shapes["block3"] == (64, 128, 128, 128)  # f_u23
    assert shapes["raw_block"] == (32, 128, 128, 128)  # F_o
    assert shapes["dropout"] == (224, 128, 128, 128)  # F_u
    assert model.unetpp.deep_supervision


@pytest.mark.parametrize("n_views", [1, 2])
def test_both_branches_lift_along_each_views_rays(n_views):
    model = build("duolift-cnn", "tiny", n_views=n_views).eval()
    d = model.spec.volume_size
    seen = {}
    model.block1.register_forward_pre_hook(lambda m, args: seen.__setitem__("features", args[0]))
    model.raw_block.register_forward_pre_hook(lambda m, args: seen.__setitem__("raw", args[0]))
    views = torch.rand(1, n_views, d, d)
    with torch.no_grad():
        out = model(views, FRONTAL_LATERAL[:, :n_views])
    assert out.shape == (1, 1, d, d, d) and (out >= 0).all()
    raw = seen["raw"]
    # Branch 2 repeats the X-ray itself: frontal along axis 1, lateral along axis 2.
    assert torch.equal(raw[0, 0], views[0, 0].unsqueeze(1).expand(d, d, d))
    per_view = model.encoders[0].out_channels
    frontal = seen["features"][:, :per_view]
    assert torch.allclose(frontal, frontal[:, :, :, :1].expand_as(frontal))
    if n_views == 2:
        assert torch.equal(raw[0, 1], views[0, 1].unsqueeze(2).expand(d, d, d))
        lateral = seen["features"][:, per_view:]
        assert torch.allclose(lateral, lateral[:, :, :, :, :1].expand_as(lateral))


def test_samples_with_different_angles_are_lifted_separately():
    model = build("duolift-gan", "tiny").eval()
    d = model.spec.view_size
    views, angles = torch.rand(2, 2, d, d), torch.tensor([[0.0, 90.0], [90.0, 0.0]])
    with torch.no_grad():
        batch = model(views, angles)
        one_by_one = torch.cat([model(views[i : i + 1], angles[i : i + 1]) for i in range(2)])
    assert torch.allclose(batch, one_by_one, atol=1e-5)


def test_critic_gives_five_cubed_scores_at_128():
    with torch.device("meta"):
        critic = build_critic("duolift-gan", "paper")
        assert critic(torch.rand(1, 1, 128, 128, 128)).shape == (1, 1, 5, 5, 5)
    convs = [m for m in critic.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 4
    assert all(c.kernel_size == (4, 4, 4) and c.stride == (1, 1, 1) and c.padding == (2, 2, 2) for c in convs)
    tiny = build_critic("duolift-gan", "tiny")
    volume = torch.rand(2, 1, 32, 32, 32, requires_grad=True)
    tiny(volume).mean().backward()
    assert volume.grad.abs().sum() > 0


def test_only_the_gan_has_a_critic():
    with pytest.raises(InputError, match="not adversarial"):
        build_critic("duolift-cnn", "tiny")


def test_dropout_on_the_fused_features():
    model = build("duolift-cnn", "tiny")
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == 0.25


def test_small_preset_fits_the_budget():
    model = build("duolift-gan", "small")
    assert count_parameters(model) <= 8e6
    assert model.spec.view_size == model.spec.volume_size == 64


def test_impossible_sizes_are_refused_with_advice():
    with pytest.raises(InputError, match="divisible by 16"):
        build("duolift-gan", "tiny", view_size=24)
