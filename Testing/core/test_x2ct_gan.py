"""X2CT-CNN / X2CT-GAN: published size, scales, view orientation, critic (tiny presets except on meta)."""

import pytest
import torch

from x2ct.errors import InputError
from x2ct.models import build, build_critic, count_parameters
from x2ct.models.lifting import lift_per_sample
from x2ct.models.lifting import lift_view

FRONTAL_LATERAL = torch.tensor([[0.0, 90.0]])


def test_paper_generator_has_the_published_size():
    # X2CT-GAN's two-view generator: 61.7M parameters (methods.md, from the paper).
    with torch.device("meta"):
        model = build("x2ct-gan", "paper")
    assert abs(count_parameters(model) - 61.7e6) / 61.7e6 < 0.01, count_parameters(model)
    assert model.spec.view_counts == (2,) and model.spec.volume_size == 128


def test_paper_encoder_scales_and_dense_channels():
    with torch.device("meta"):
        model = build("x2ct-gan", "paper")
        features = model.branches[0].encoder(torch.rand(1, 1, 128, 128))
    # 7x7 stem at 128, then dense blocks [6, 12, 24, 16, 6] with growth 32 down to 4x4 (pooled to a code).
    assert [tuple(f.shape[1:]) for f in features] == [
        (64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16), (512, 8, 8), (704, 1, 1)]
    assert model.branches[0].begin == 4  # connection A: 4^3 x 256
    assert model.branches[0].connection_a[1].out_features == 4**3 * 256


def test_paper_forward_shape_on_meta():
    with torch.device("meta"):
        model = build("x2ct-cnn", "paper")
        views = torch.rand(1, 2, 128, 128)
    assert model.reconstruct(views, FRONTAL_LATERAL).shape == (1, 1, 128, 128, 128)


@pytest.mark.parametrize("n_views", [1, 2])
def test_connection_b_lifts_each_view_along_its_rays(n_views):
    model = build("x2ct-gan", "tiny", n_views=n_views).eval()
    lifted = {}
    for i, branch in enumerate(model.branches):
        branch.connection_b[0].conv.register_forward_pre_hook(lambda m, args, i=i: lifted.__setitem__(i, args[0]))
    with torch.no_grad():
        out = model(torch.rand(1, n_views, 16, 16), FRONTAL_LATERAL[:, :n_views])
    assert out.shape == (1, 1, 16, 16, 16) and (out >= 0).all()  # ReLU output, X2CT protocol
    frontal = lifted[0]  # rays along axis 1 (anterior-posterior): constant along dim 3
    assert torch.allclose(frontal, frontal[:, :, :, :1].expand_as(frontal))
    assert not torch.allclose(frontal, frontal[:, :, :, :, :1].expand_as(frontal))
    if n_views == 2:
        lateral = lifted[1]  # rays along axis 2 (right-left): constant along dim 4
        assert torch.allclose(lateral, lateral[:, :, :, :, :1].expand_as(lateral))


def test_fused_output_depends_on_both_views():
    model = build("x2ct-gan", "tiny").eval()
    views = torch.rand(1, 2, 16, 16)
    changed = views.clone()
    changed[:, 1] = torch.rand(16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(views), model(changed))


def test_samples_with_different_angles_are_lifted_separately():
    model = build("x2ct-gan", "tiny").eval()
    views = torch.rand(2, 2, 16, 16)
    angles = torch.tensor([[0.0, 90.0], [30.0, 120.0]])
    with torch.no_grad():
        batch = model(views, angles)
        one_by_one = torch.cat([model(views[i : i + 1], angles[i : i + 1]) for i in range(2)])
    assert torch.allclose(batch, one_by_one, atol=1e-5)


def test_lift_per_sample_matches_lift_view():
    features = torch.rand(3, 2, 6, 6)
    lifted = lift_per_sample(features, torch.tensor([0.0, 90.0, 45.0]), 6)
    for i, angle in enumerate([0.0, 90.0, 45.0]):
        assert torch.equal(lifted[i : i + 1], lift_view(features[i : i + 1], angle, 6))


def test_critic_is_the_conditional_patchgan():
    with torch.device("meta"):
        critic = build_critic("x2ct-gan", "paper")
    # pix2pix 3D PatchGAN, ndf 64, 3 layers, input = volume + 2 lifted views (kernel 4, conv biases):
    widths = [3, 64, 128, 256, 512, 1]
    expected = sum(cin * cout * 4**3 + cout for cin, cout in zip(widths[:-1], widths[1:]))
    assert count_parameters(critic) == expected
    tiny = build_critic("x2ct-gan", "tiny").eval()
    volume, views = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        score = tiny(volume, views, FRONTAL_LATERAL)
        other = tiny(volume, torch.rand(1, 2, 16, 16), FRONTAL_LATERAL)
    assert score.ndim == 5 and score.shape[:2] == (1, 1)
    assert not torch.allclose(score, other)  # conditioned on the X-rays
    with pytest.raises(ValueError, match="views"):
        tiny(volume)


def test_only_the_gan_has_a_critic():
    with pytest.raises(InputError, match="not adversarial"):
        build_critic("x2ct-cnn", "tiny")


def test_small_preset_fits_the_budget():
    model = build("x2ct-gan", "small")
    assert count_parameters(model) <= 8e6
    assert model.spec.view_size == model.spec.volume_size == 128


def test_impossible_sizes_are_refused_with_advice():
    with pytest.raises(InputError, match="multiple of 4"):
        build("x2ct-gan", "tiny", view_size=18)
