"""The model benchmark section's machinery on tiny presets (timings are measured, never asserted)."""

import torch

from x2ct.benchmarks import models as bench
from x2ct.models import build, count_parameters


def test_measure_resizes_like_a_user_and_restores_threads():
    threads = torch.get_num_threads()
    spec = build("x2ct-gan", "tiny").spec
    result = bench.measure("x2ct-gan", "tiny", view_size=2 * spec.view_size, volume_size=24, threads=1, repeats=2)
    assert torch.get_num_threads() == threads
    assert result["native_output"] == [spec.volume_size] * 3  # the model's own size, before the resize to 24^3
    assert (result["views"], result["view_size"], result["given_view_size"]) == (2, spec.view_size, 2 * spec.view_size)
    assert result["parameters"] == count_parameters(build("x2ct-gan", "tiny"))
    assert (result["repeats"], result["timed"]) == (2, 2)
    assert 0 < result["seconds"] <= result["seconds_total"]
    assert result["peak_rss_bytes"] > 50e6  # python + torch at least


def test_a_budget_cuts_timed_passes_down_to_the_warm_up():
    result = bench.measure("henzler", "tiny", view_size=16, volume_size=16, repeats=50, budget=1e-6)
    assert result["timed"] == 0 and result["seconds"] > 0
    table = bench.render([{"name": "henzler", "preset": "tiny", "results": {"cpu": result}}], ["cpu"], 50,
                         bench.TIME_LIMIT)
    assert "(warm-up only)" in table


def test_view_count_prefers_two_else_the_nearest_accepted():
    assert bench.pick_views((1, 2)) == 2
    assert bench.pick_views((1,)) == 1
    assert bench.pick_views((4, 8)) == 4


def test_same_network_under_two_names_is_recognised():
    def fingerprint(name, preset):
        return bench.architecture(bench.blueprint(name, preset))

    assert fingerprint("x2ct-cnn", "tiny") == fingerprint("x2ct-gan", "tiny")
    assert fingerprint("x2ct-gan", "tiny") != fingerprint("x2ct-gan", "small")
    assert fingerprint("x2ct-gan", "tiny") != fingerprint("henzler", "tiny")
    assert bench.blueprint("no-such-model", "tiny") is None


def test_sampling_models_state_their_step_count():
    text = bench.run(quick=True, names=["code-diffusion"], presets=("tiny",))
    steps = bench.blueprint("code-diffusion", "tiny").sample_steps
    assert f"code-diffusion tiny: its default sampling, {steps} steps" in text


def test_section_runs_children_shares_networks_and_reports_failures():
    model = build("x2ct-cnn", "tiny")
    size, parameters = model.spec.view_size, f"{count_parameters(model) / 1e6:.2f} M"
    text = bench.run(quick=True, names=["x2ct-cnn", "x2ct-gan", "no-such-model"], presets=("tiny",))
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | preset | parameters | views | native output")
    assert rows[1].startswith(f"| x2ct-cnn | tiny | {parameters} | 2 × {size}² (from 128²) | "
                              f"{model.spec.volume_size}³ |")
    assert rows[2].startswith(f"| x2ct-gan (= x2ct-cnn) | tiny | {parameters} |")
    assert rows[3].startswith("| no-such-model | tiny |") and "Unknown model" in rows[3]
    assert "python -m x2ct.benchmarks.models --one NAME PRESET --json" in text


def test_a_child_over_its_time_limit_is_reported():
    result = bench.measure_in_child("x2ct-gan", "tiny", time_limit=0.01)
    assert result["error"] == "over the 0.01 s time limit"


def _result(seconds, gigabytes, preset="small"):
    return {"name": "m", "preset": preset, "parameters": 1e6, "views": 2, "view_counts": [2], "view_size": 128,
            "given_view_size": 128, "native_output": [64, 64, 64], "repeats": 3, "timed": 3,
            "seconds": seconds, "seconds_total": seconds + 0.1, "peak_rss_bytes": gigabytes * 1e9}


def test_goal_column_checks_time_to_128_and_memory_for_small_only():
    rows = [{"name": "fast", "preset": "small", "results": {"cpu": _result(1.0, 1.0)}},
            {"name": "slow", "preset": "small", "results": {"cpu": _result(4.95, 5.0)}},
            {"name": "big", "preset": "paper", "results": {"cpu": _result(60.0, 9.0, "paper")}},
            {"name": "broken", "preset": "small", "results": {"cpu": {"error": "out of memory"}}}]
    text = bench.render(rows, ["cpu"], 3, bench.TIME_LIMIT)
    lines = {line.split(" | ")[0][2:]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["fast"].endswith("| 1.00 | 1.10 | 1.00 | yes |")
    assert lines["slow"].endswith("| no: CPU time, memory |")  # 4.95 s forward but 5.05 s to 128^3
    assert lines["big"].endswith("| 60.00 | 60.10 | 9.00 | – |")
    assert "out of memory" in lines["broken"] and lines["broken"].endswith("| no (failed) |")
