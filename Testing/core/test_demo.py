"""x2ct demo without Slicer: inputs written and read back, volumes, figures and metrics that match x2ct.metrics."""

import json
from pathlib import Path

import numpy as np
import pytest

from x2ct import demo, inference, io, metrics
from x2ct.models import build


def _loaded(name: str, card: dict | None = None) -> inference.LoadedModel:
    return inference.LoadedModel(name, build(name, "tiny"), card or {"name": name})


def test_plan_gives_each_model_its_views_and_fusion_only_where_the_method_has_it():
    models = [_loaded("henzler", {"name": "henzler", "views_required": ["frontal"]}), _loaded("x2ct-cnn")]
    runs = {run.name: run for run in demo.plan(models)}
    assert set(runs) == {"chest-ct-henzler", "chest-ct-henzler-fusion", "chest-ct-x2ct-cnn"}
    assert runs["chest-ct-henzler"].views == ("frontal",) and not runs["chest-ct-henzler"].fusion
    assert runs["chest-ct-henzler-fusion"].fusion
    assert runs["chest-ct-x2ct-cnn"].views == ("frontal", "lateral")


def test_radiograph_uses_the_one_view_model_else_back_projection_with_a_note():
    skipped = []
    henzler = _loaded("henzler", {"name": "henzler", "views_required": ["frontal"]})
    runs = demo.plan_radiograph([henzler, _loaded("x2ct-cnn")], skipped)
    assert [r.name for r in runs] == ["chest-xray-henzler", "chest-xray-henzler-fusion"] and not skipped
    baseline = inference.load("back-projection")
    runs = demo.plan_radiograph([_loaded("x2ct-cnn"), baseline], skipped)
    assert [r.model.id for r in runs] == ["back-projection"]
    assert "back-projection" in skipped[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    lines = []
    summary = demo.run(out, log=lines.append, models=["back-projection"], radiograph=True)
    return out, summary, lines


def test_demo_writes_inputs_volumes_figures_and_summary(demo_run):
    out, summary, lines = demo_run
    assert summary["runs"] == ["chest-ct-back-projection", "chest-xray-back-projection"]
    for key in ("ground-truth", "drr-frontal", "drr-lateral", "chest-ct-back-projection",
                "chest-ct-back-projection-vs-ground-truth", "chest-xray-back-projection-preview",
                "chest-xray-back-projection-anaglyph", "chest-xray-back-projection-lateral-predicted",
                "metrics-json", "metrics-md", "summary"):
        assert Path(summary["outputs"][key]).is_file(), key
    truth = io.read_ct(summary["outputs"]["ground-truth"])
    assert truth.shape == (128, 128, 128) and np.allclose(truth.spacing, 2.5)
    frontal = io.read_xray(summary["outputs"]["drr-frontal"])
    lateral = io.read_xray(summary["outputs"]["drr-lateral"])
    assert (frontal.view, lateral.view) == ("frontal", "lateral")
    assert frontal.shape == (320, 320) and frontal.sad and frontal.sid
    assert not np.allclose(frontal.image, lateral.image)
    assert any(str(out.resolve()) in line for line in lines)  # the summary says where the outputs are


def test_metrics_match_x2ct_metrics_on_the_written_files(demo_run):
    out, summary, _ = demo_run
    payload = json.loads((out / "metrics.json").read_text())
    record = {r["name"]: r for r in payload["runs"]}["chest-ct-back-projection"]
    assert record["views"] == ["frontal", "lateral"] and record["seconds"] > 0
    prediction = io.read_ct(record["volume"])
    truth = io.read_ct(summary["outputs"]["ground-truth"])
    expected = metrics.evaluate_volumes(prediction, truth)
    assert record["metrics"]["honest"]["psnr_db"] == pytest.approx(expected["honest"]["psnr_db"], abs=1e-4)
    assert record["metrics"]["x2ct"]["psnr_3d_db"] == pytest.approx(expected["x2ct"]["psnr_3d_db"], abs=1e-4)
    assert 0.0 <= record["metrics"]["lung_dice"]["label"] <= 1.0
    assert -1.0 <= record["reprojection"]["ncc"] <= 1.0 and len(record["reprojection"]["ncc_by_view"]) == 2
    xray_record = {r["name"]: r for r in payload["runs"]}["chest-xray-back-projection"]
    assert "metrics" not in xray_record and any("pixel spacing unknown" in n for n in xray_record["notes"])
    table = (out / "metrics.md").read_text()
    assert "chest-ct-back-projection" in table and f"{record['metrics']['honest']['psnr_db']:.2f}" in table
