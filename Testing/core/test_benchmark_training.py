"""The training benchmark section's machinery on the tiny preset (timings are measured, never asserted)."""

import torch

from x2ct.benchmarks import training as bench
from x2ct.models import build, count_parameters


def test_benchmark_config_keeps_the_published_schedule_at_batch_1_on_simulated_data():
    c = bench.benchmark_config("repeat-concat", "small")
    assert (c.preset, c.data.kind, c.train.batch_size, c.train.accumulate) == ("small", "simulated", 1, 1)
    assert (c.train.optimizer, c.train.generator_steps_per_critic_step, c.train.ema) == ("adamw", 10, 0.995)
    assert set(bench.trainable()) >= {"x2ct-cnn", "repeat-concat", "code-diffusion", "projection-gan", "henzler"}


def test_quick_section_measures_one_method_in_a_child_and_states_the_goal():
    text = bench.run(quick=True)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| method | parameters (critic) | CPU tiny: steps/s")
    parameters = f"{count_parameters(build('x2ct-cnn', 'tiny')) / 1e6:.2f} M"
    cells = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert cells[:2] == ["x2ct-cnn", parameters]
    assert float(cells[2]) > 0 and float(cells[3]) > 0 and float(cells[4]) > 0.05  # steps/s, s/step, GB
    assert cells[6] == "no GPU"
    assert "5001-step schedule in under 2.8 h on one H100" in text and "0.496 steps/s" in text


def test_failures_and_time_outs_are_reported_not_raised():
    assert bench.measure_in_child("no-such-model", "tiny", time_limit=120)["error"].startswith("InputError: No config")
    assert bench.measure_in_child("x2ct-cnn", "tiny", time_limit=0.01)["error"] == "over the 0.01 s time limit"
    text = bench.render([{"name": "x", "cpu": {"error": "out of memory"}, "cuda": None}], "small", 3, False)
    assert "| x |  | out of memory |" in text


def test_a_profiled_step_is_written_by_operator_and_by_input_shapes(tmp_path):
    table = tmp_path / "x2ct-cnn.txt"
    result = bench.measure("x2ct-cnn", "tiny", steps=1, warm_up=1, threads=torch.get_num_threads(), profile=str(table))
    text = table.read_text(encoding="utf-8")
    assert result["seconds_per_step"] > 0
    assert text.startswith("x2ct-cnn tiny: 1 profiled training step(s)")
    assert "aten::convolution_backward" in text and "Input Shapes" in text
    assert not list(tmp_path.glob("*.partial"))
