"""The quality benchmark section: goal checks on made-up scores, and a quick run end to end."""

import math
from types import SimpleNamespace

from x2ct.benchmarks import quality


def _run(label, views, learned=True, fusion=False, name="x"):
    loaded = SimpleNamespace(card={"name": name})
    return quality.Run(label, loaded, tuple(["frontal", "lateral"][:views]), fusion, learned)


def _result(scores: list) -> dict:
    """A measure()-shaped result with one pseudo-patient from (Run, honest PSNR, NCC) triples."""
    rows = {}
    for run, psnr, ncc in scores:
        keys = dict.fromkeys(["honest_ssim", "mae_hu", "x2ct_psnr_3d", "x2ct_psnr_2d", "x2ct_ssim", "rc_psnr",
                              "rc_ssim", "dice", "dice_label", "seconds"], 0.5)
        rows[run.label] = {"sim-20000": {**keys, "honest_psnr": psnr, "ncc": ncc}}
    return {"rows": rows, "cases": ["sim-20000"], "runs": [run for run, _, _ in scores]}


def test_goals_are_checked_against_the_best_baseline():
    runs = [
        (_run("bp 1 view", 1, learned=False), 9.0, 0.9),
        (_run("back-projection (built-in), 2 views", 2, learned=False), 10.0, 0.9),
        (_run("mean-ct, 2 views", 2, learned=False), 18.0, 0.8),
        (_run("good, 2 views", 2), 21.0, 0.95),
        (_run("good, 2 views + fusion", 2, fusion=True), 20.8, 0.995),
        (_run("weak, 1 view", 1), 19.0, 0.9),
        (_run("weak, 1 view + fusion", 1, fusion=True), 17.0, 0.999),
    ]
    result = _result(runs)
    lines = quality.goals(result, quality.summarise(result))
    text = "\n".join(lines)
    assert "18.00 dB honest PSNR (mean-ct, 2 views)" in lines[0]
    assert "good, 2 views: 21.00 dB, +3.00 dB against the best baseline: goal (>= +2 dB) met" in text
    assert "weak, 1 view: 19.00 dB, +1.00 dB against the best baseline: goal (>= +2 dB) NOT met" in text
    assert "Two views beat one" in text and "good, 2 views 21.00 dB against best one-view model weak" in text
    assert "Fusion, good, 2 views: re-projection NCC 0.9500 -> 0.9950, PSNR change -0.20 dB" in text
    assert text.count("NOT met") == 2  # weak vs baselines; weak's fusion loses 2 dB


def test_one_network_given_one_and_two_views_is_compared_with_itself():
    runs = [
        (_run("mean-ct, 2 views", 2, learned=False), 18.0, 0.8),
        (_run("cnn-2v, 2 views", 2, name="cnn"), 20.0, 0.95),
        (_run("cnn-1v, 1 view", 1, name="cnn"), 20.5, 0.95),
        (_run("other-1v, 1 view", 1, name="other"), 19.0, 0.9),
    ]
    result = _result(runs)
    text = "\n".join(quality.goals(result, quality.summarise(result)))
    assert ("Two views beat one, same network (cnn): cnn-2v, 2 views 20.00 dB against cnn-1v, 1 view 20.50 dB "
            "(-0.50 dB): NOT met.") in text
    assert "same network (other)" not in text  # shipped with one view only


def test_summary_keeps_the_real_case_apart():
    run = _run("m, 2 views", 2)
    result = _result([(run, 20.0, 0.9)])
    result["rows"]["m, 2 views"]["chest-ct (real)"] = {**result["rows"]["m, 2 views"]["sim-20000"],
                                                       "honest_psnr": 25.0}
    summary = quality.summarise(result)["m, 2 views"]
    assert summary["mean"]["honest_psnr"] == 20.0 and summary["real"]["honest_psnr"] == 25.0
    assert math.isclose(summary["psnr_sd"], 0.0)


def test_quick_run_scores_baselines_and_a_shipped_model(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "cache_folder", lambda: tmp_path)
    text = quality.run(quick=True)
    assert len(list(tmp_path.glob("*.json"))) == 6  # 4 baseline runs + the model with and without fusion
    assert quality.run(quick=True).split("\n", 1)[1] == text.split("\n", 1)[1]  # the kept scores
    assert "### Goals (issue 7)" in text and "Published numbers beside ours" in text
    for label in ("back-projection (built-in), 1 view", "back-projection (fitted), 2 views", "mean-ct"):
        assert f"| {label}" in text
    assert "dB honest PSNR" in text and "n/a | n/a | n/a" not in text


def test_density_and_coverage_come_from_the_scores_embeddings():
    run = _run("m, 2 views", 2, name="code-diffusion")
    result = _result([(run, 20.0, 0.9)])
    cases = {f"sim-{20000 + i}": {**result["rows"]["m, 2 views"]["sim-20000"], "embedding": [float(i), 0.0],
                                  "embedding_truth": [float(i), 0.5]} for i in range(4)}
    result["rows"]["m, 2 views"], result["cases"] = cases, list(cases)
    fidelity = quality.summarise(result)["m, 2 views"]["fidelity"]
    # reals (i, 0.5), fakes (i, 0), k = 3: radii 3, 2, 2, 3; each real's ball holds 3 of the 4 fakes (the one
    # 3 columns away is at sqrt(9.25) > 3, the one 2 away from the middle reals at sqrt(4.25) > 2): 12 / (3 * 4)
    assert (fidelity["k"], fidelity["density"], fidelity["coverage"]) == (3, 1.0, 1.0)
    rows = "\n".join(quality.table(quality.summarise(result), "mean"))
    assert "density / coverage |" in rows and "| 1.00 / 1.00 |" in rows
    assert "1.42 / 0.97 (seed 002 Table 2) | 1.00 / 1.00 |" in "\n".join(quality.published(result, quality.summarise(result)))


def test_kept_scores_are_keyed_by_the_simulator_that_made_the_case(monkeypatch):
    """A pseudo-patient's seed names another CT when the simulator's patients change: its kept scores must not
    be reused then."""
    import dataclasses
    from types import SimpleNamespace

    run = SimpleNamespace(loaded=SimpleNamespace(identity="model sha256 0"), views=("frontal",), fusion=False)
    both = quality.cache_key(run, "sim-20001")
    one = dataclasses.replace(quality.simulate.DEFAULT_SETTINGS, patients=("chest-ct",))
    monkeypatch.setattr(quality.simulate, "DEFAULT_SETTINGS", one)
    assert quality.cache_key(run, "sim-20001") != both
