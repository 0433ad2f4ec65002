"""Henzler single-image tomography: depth-as-channels orientation, view averaging, presets."""

import pytest
import torch

from x2ct.errors import InputError
from x2ct.models import build, count_parameters
from x2ct.models.lifting import lift_view
from x2ct.models.methods.henzler import view_frame_to_canonical


@pytest.mark.parametrize("angle", [0.0, 90.0, 180.0, 270.0, -90.0])
def test_prediction_constant_along_depth_is_the_lifted_view(angle):
    """Channels are the depth along the view's rays: the same convention as lift_view and the projector."""
    view = torch.rand(1, 1, 6, 8)
    frame = view[:, 0].unsqueeze(2).expand(1, 6, 8, 8)  # (N, rows, depth, cols), constant along depth
    assert torch.equal(view_frame_to_canonical(frame, angle), lift_view(view, angle, 8)[:, 0])


def test_oblique_rotation_agrees_with_lifting_inside_the_field_of_view():
    view = torch.rand(1, 1, 4, 16)
    frame = view[:, 0].unsqueeze(2).expand(1, 4, 16, 16)
    rotated = view_frame_to_canonical(frame, 30.0)
    lifted = lift_view(view, 30.0, 16)[:, 0]
    coords = torch.linspace(-1 + 1 / 16, 1 - 1 / 16, 16)
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) < 0.8**2  # rays that stay in the depth range
    assert torch.allclose(rotated[..., inside], lifted[..., inside], atol=1e-5)


def test_first_channel_is_nearest_the_detector():
    """Frontal (PA): detector anterior -> depth 0 is axis 1 index 0; left lateral: patient's left, axis 2 end."""
    frame = torch.zeros(1, 3, 5, 5)
    frame[0, 1, 0, 2] = 1.0  # row 1, depth 0, centre column
    front = view_frame_to_canonical(frame, 0.0)
    assert front[0, 1, 0, 2] == 1 and front.sum() == 1
    lateral = view_frame_to_canonical(frame, 90.0)
    assert lateral[0, 1, 2, 4] == 1 and lateral.sum() == 1


def test_two_views_average_the_single_view_reconstructions():
    model = build("henzler", "tiny").eval()
    views = torch.rand(2, 2, 16, 16)
    angles = torch.tensor([[0.0, 90.0], [90.0, 180.0]])
    with torch.no_grad():
        both = model(views, angles)
        singles = [model(views[:, i : i + 1], angles[:, i : i + 1]) for i in range(2)]
    assert both.shape == (2, 1, 16, 16, 16)
    assert torch.allclose(both, (singles[0] + singles[1]) / 2, atol=1e-6)
    assert both.min() >= 0 and both.max() <= 1


def test_instance_norm_is_batch_norm_at_batch_one_in_training():
    """norm="instance" computes what the paper's batch norm computes when trained on one image at a time, so a
    network trained that way keeps its weights and, unlike batch norm's running averages, behaves at inference as
    it did in training."""
    torch.manual_seed(0)
    batch = build("henzler", "tiny")
    instance = build("henzler", "tiny", norm="instance")
    state = {name: value for name, value in batch.state_dict().items()
             if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    norms = [name for name, module in batch.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    with torch.no_grad():  # a learnt scale and shift, not the identity
        for name in norms:
            state[f"{name}.weight"].uniform_(0.5, 1.5)
            state[f"{name}.bias"].uniform_(-0.2, 0.2)
    instance.load_state_dict(state, strict=True)
    view = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        trained_mode = batch.train().net(view)
        assert torch.allclose(instance.eval().net(view), trained_mode, atol=1e-6)
        assert not torch.allclose(batch.eval().net(view), trained_mode, atol=1e-3)  # running averages differ
    with pytest.raises(InputError, match="Unknown norm 'layer'"):
        build("henzler", "tiny", norm="layer")


def test_presets_sizes():
    """paper: 256^2 -> 128 slices of 128^2 (built on the meta device); small <= 8M parameters."""
    with torch.device("meta"):
        paper = build("henzler", "paper")
        out = paper.net(torch.empty(1, 1, 256, 256))
    assert tuple(out.shape) == (1, 128, 128, 128)
    assert paper.spec.view_size == 256 and paper.spec.volume_size == 128
    small = build("henzler", "small")
    assert count_parameters(small) <= 8_000_000 and small.spec.volume_size == 128


def test_bad_input():
    model = build("henzler", "tiny")
    with pytest.raises(InputError, match="1 or 2 view"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(InputError, match=r"32x32 pixels.*\(B, V, 16, 16\)"):
        model(torch.rand(1, 1, 32, 32))
