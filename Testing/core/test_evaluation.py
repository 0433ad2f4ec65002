"""``x2ct evaluate --model ... --data-kind ...``: a model scored on a dataset, case by case."""

import json

import numpy as np
import pytest
import torch

from x2ct import evaluation, metrics
from x2ct.cli import main
from x2ct.errors import InputError
from x2ct.io import write_volume
from x2ct.image import Volume
from x2ct.modelfile import save_model
from x2ct.models import build


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "tiny-x2ct"
    torch.manual_seed(0)
    save_model(build("x2ct-cnn", "tiny"), folder)
    return folder


def test_cli_scores_each_case_like_the_metrics_do(tiny_model, capsys):
    assert main(["evaluate", "--model", str(tiny_model), "--count", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (case,) = result["cases"]
    assert result["model"] == "tiny-x2ct" and case["id"] == "sim-20000"  # the first held-out test seed

    # the same case, reconstructed and scored by hand
    from x2ct.inference import load

    loaded = load(tiny_model)
    item = evaluation.dataset_for(loaded.model.spec, "simulated", count=1)[0]
    with torch.no_grad():
        prediction = loaded.model.eval()(item["views"][None], item["angles"][None])[0, 0].numpy()
    expected = metrics.evaluate(prediction, item["ct"][0].numpy(), hu_range=tuple(item["hu_range"].tolist()))
    assert case["honest.psnr_db"] == pytest.approx(expected["honest"]["psnr_db"], rel=1e-5)
    assert case["x2ct.psnr_3d_db"] == pytest.approx(expected["x2ct"]["psnr_3d_db"], rel=1e-5)
    assert result["mean"]["honest.psnr_db"] == pytest.approx(case["honest.psnr_db"])


def test_mean_row_skips_undefined_values():
    rows = [{"a": 1.0, "b": float("nan")}, {"a": 3.0, "b": 4.0}, {"a": 2.0, "b": float("nan")}]
    assert evaluation.mean_row(rows) == {"a": 2.0, "b": 4.0}
    assert np.isnan(evaluation.mean_row([{"c": float("nan")}])["c"])


def test_ct_folder_cases_are_read_and_an_empty_split_is_explained(tiny_model, tmp_path, capsys):
    folder = tmp_path / "cts"
    rng = np.random.default_rng(0)
    for index in range(3):
        array = rng.uniform(-1000, 1000, (24, 24, 24)).astype(np.float32)
        write_volume(Volume(array, (8.0, 8.0, 8.0)), folder / f"case-{index}.nrrd")
    # three CTs split by hash (80/10/10): a split with cases is scored, an empty one is explained
    outcomes = {}
    for split in ("train", "validation", "test"):
        outcomes[split] = main(["evaluate", "--model", str(tiny_model), "--data-kind", "ct-folder",
                                "--data", str(folder), "--split", split, "--json"])
        captured = capsys.readouterr()
        if outcomes[split] == 0:
            assert json.loads(captured.out)["cases"]
        else:
            assert "no case in this split" in captured.err
    assert 0 in outcomes.values()


@pytest.mark.parametrize("arguments, message", [
    (["--model", "back-projection", "--pred", "a.nrrd"], "not both"),
    (["--model", "back-projection", "--data-kind", "ct-folder"], "needs a source"),
    (["--pred", "a.nrrd"], "Give --pred and --gt"),
    (["--model", "back-projection", "--count", "0"], "at least 1"),
])
def test_bad_combinations_are_explained(arguments, message, capsys):
    assert main(["evaluate", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_unknown_kind_is_refused():
    with pytest.raises(InputError, match="Unknown data kind"):
        evaluation.dataset_for(build("x2ct-cnn", "tiny").spec, "photos")
