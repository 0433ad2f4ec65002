"""Density and coverage (x2ct.metrics.fidelity) against hand-computed cases and the ``prdc`` package."""

import numpy as np
import pytest

from x2ct.errors import InputError
from x2ct.metrics.fidelity import Embedder, density_coverage, random_encoder, volume_density_coverage


def test_hand_computed_one_dimensional_case():
    # Reals 0, 1, 2, 3 with k = 1: every ball has radius 1. The fake 0.5 lies in the balls of 0 and 1 only.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    result = density_coverage(real, np.array([[0.5]]), nearest_k=1)
    assert result["density"] == pytest.approx(2.0) and result["coverage"] == pytest.approx(0.5)
    # Two fakes, 0.5 and 10: density (2 + 0) / (1 * 2) = 1, coverage still 2 of 4 balls.
    result = density_coverage(real, np.array([[0.5], [10.0]]), nearest_k=1)
    assert result["density"] == pytest.approx(1.0) and result["coverage"] == pytest.approx(0.5)
    # k = 2: radii 2, 1, 1, 2 (distances to the 2nd nearest other real); the fake 3.5 (distances 3.5, 2.5,
    # 1.5, 0.5) is in the ball of 3 only: density 1 / (2 * 1), coverage 1 of 4.
    result = density_coverage(real, np.array([[3.5]]), nearest_k=2)
    assert result["density"] == pytest.approx(0.5) and result["coverage"] == pytest.approx(0.25)


def test_far_fakes_score_zero_and_too_few_reals_are_nan():
    real = np.random.default_rng(0).normal(size=(10, 3))
    far = density_coverage(real, real + 100.0)
    assert far["density"] == 0.0 and far["coverage"] == 0.0
    assert density_coverage(real, real)["coverage"] == 1.0
    one = density_coverage(real[:1], real)
    assert np.isnan(one["density"]) and one["k"] == 0
    assert density_coverage(real[:3], real)["k"] == 2  # k capped at N - 1
    with pytest.raises(InputError, match="embeddings"):
        density_coverage(real, real[:, :2])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_prdc_package(seed):
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(60, 16)), rng.normal(0.3, 1.2, size=(40, 16))
    reference = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    ours = density_coverage(real, fake, nearest_k=5)
    assert ours["density"] == pytest.approx(reference["density"], abs=1e-12)
    assert ours["coverage"] == pytest.approx(reference["coverage"], abs=1e-12)


def test_random_encoder_is_fixed_by_its_seed_and_gives_2197_features():
    a, b, c = random_encoder(), random_encoder(), random_encoder(seed=1)
    assert all(np.array_equal(x.detach(), y.detach()) for x, y in zip(a.parameters(), b.parameters()))
    assert not np.array_equal(next(a.parameters()).detach(), next(c.parameters()).detach())
    volume = np.random.default_rng(0).random((32, 40, 36)).astype(np.float32)
    features = Embedder()(volume)
    assert features.shape == (2197,) and np.array_equal(features, Embedder()(volume))


def test_volumes_like_the_reals_score_higher_than_blank_ones():
    rng = np.random.default_rng(1)
    grid = np.linspace(-1, 1, 24)
    z, y, x = np.meshgrid(grid, grid, grid, indexing="ij")

    def ball(radius):
        return ((z**2 + y**2 + x**2) < radius**2).astype(np.float32) + 0.05 * rng.random(z.shape).astype(np.float32)

    real = [ball(r) for r in np.linspace(0.4, 0.8, 8)]
    like = [ball(r) for r in np.linspace(0.45, 0.75, 4)]
    blank = [np.full(z.shape, 0.9, dtype=np.float32) for _ in range(4)]
    good, bad = volume_density_coverage(real, like), volume_density_coverage(real, blank)
    assert good["coverage"] > bad["coverage"] and good["density"] > bad["density"]


def test_evaluate_model_reports_density_and_coverage_of_its_predictions(tmp_path, capsys):
    import json

    import torch

    from x2ct import evaluation
    from x2ct.cli import main
    from x2ct.inference import load
    from x2ct.modelfile import save_model
    from x2ct.models import build

    torch.manual_seed(0)
    folder = tmp_path / "tiny-x2ct"
    save_model(build("x2ct-cnn", "tiny"), folder)
    assert main(["evaluate", "--model", str(folder), "--count", "3", "--json"]) == 0
    fidelity = json.loads(capsys.readouterr().out)["fidelity"]
    loaded = load(folder)
    embed = Embedder()
    real, fake = [], []
    for item in evaluation.dataset_for(loaded.model.spec, "simulated", count=3):
        with torch.no_grad():
            fake.append(embed(loaded.model.eval()(item["views"][None], item["angles"][None])[0, 0]))
        real.append(embed(item["ct"][0]))
    expected = density_coverage(np.stack(real), np.stack(fake))
    assert (fidelity["k"], fidelity["real"], fidelity["fake"]) == (2, 3, 3)
    assert fidelity["density"] == pytest.approx(expected["density"])
    assert fidelity["coverage"] == pytest.approx(expected["coverage"])
    assert "Naeem" in fidelity["about"]
    assert main(["evaluate", "--model", str(folder), "--count", "2"]) == 0
    assert "fidelity.coverage" in capsys.readouterr().out
