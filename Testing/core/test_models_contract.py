"""The contract every registered model keeps (tiny presets, so seconds on a CPU)."""

import pytest
import torch

from x2ct.errors import InputError
from x2ct.models import build, count_parameters, names

#: Published parameter counts (methods.md) for the `paper` presets, two views.
PAPER_PARAMETERS = {"repeat-concat": 62.2e6, "x2ct-cnn": 61.7e6, "x2ct-gan": 61.7e6}

MODELS = names()


def _loss(model, views, angles, target):
    """Supervised loss; generative models whose forward samples (code-diffusion) give their training loss."""
    if hasattr(model, "training_loss"):
        return model.training_loss(views, angles, target)
    return torch.nn.functional.mse_loss(model(views, angles), target)


def _inputs(model, n_views, batch=1):
    size = model.spec.view_size
    views = torch.rand(batch, n_views, size, size)
    return views, torch.tensor(model.default_angles(n_views), dtype=torch.float32).expand(batch, n_views)


def test_registry_is_populated():
    expected = {"repeat-concat", "x2ct-cnn", "x2ct-gan", "duolift-cnn", "duolift-gan", "henzler",
                "code-diffusion", "projection-gan"}
    assert expected <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_output_shape_for_every_view_count(name):
    model = build(name, "tiny").eval()
    for n_views in model.spec.view_counts:
        views, angles = _inputs(model, n_views, batch=2)
        with torch.no_grad():
            out = model(views, angles)
        d = model.spec.volume_size
        assert out.shape == (2, 1, d, d, d), (name, n_views)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_every_parameter(name):
    model = build(name, "tiny").train()
    views, angles = _inputs(model, model.spec.view_counts[-1])
    d = model.spec.volume_size
    _loss(model, views, angles, torch.rand(1, 1, d, d, d)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_eval_mode_is_deterministic(name):
    model = build(name, "tiny").eval()
    views, angles = _inputs(model, model.spec.view_counts[-1])
    with torch.no_grad():
        torch.manual_seed(1)
        first = model(views, angles)
        torch.manual_seed(1)
        second = model(views, angles)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", MODELS)
def test_a_few_steps_lower_the_loss(name):
    model = build(name, "tiny").train()
    views, angles = _inputs(model, model.spec.view_counts[-1])
    d = model.spec.volume_size
    target = torch.rand(1, 1, d, d, d)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(0)  # same dropout masks/noise each step: the loss change is the optimiser's
        loss = _loss(model, views, angles, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name}: {losses}"


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_is_refused_before_computation(name):
    model = build(name, "tiny")
    size = model.spec.view_size
    too_many = max(model.spec.view_counts) + 1
    with pytest.raises(InputError, match="view"):
        model(torch.rand(1, too_many, size, size))
    with pytest.raises(InputError, match=f"{size}"):
        model(torch.rand(1, model.spec.view_counts[0], size + 3, size))
    bad = torch.rand(1, model.spec.view_counts[0], size, size)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        model(bad)


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_paper_preset_parameter_count(name):
    with torch.device("meta"):
        model = build(name, "paper")
    count = count_parameters(model)
    assert abs(count - PAPER_PARAMETERS[name]) / PAPER_PARAMETERS[name] < 0.10, count


@pytest.mark.parametrize("name", MODELS)
def test_every_paper_and_small_preset_builds(name):
    with torch.device("meta"):
        paper = build(name, "paper")
    small = build(name, "small")
    assert count_parameters(small) <= 8.5e6, f"{name} small has {count_parameters(small)} parameters"
    assert count_parameters(paper) >= count_parameters(small)
