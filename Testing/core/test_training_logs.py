"""What a run reports: TensorBoard scalars next to log.csv, the final summary, and start-up messages."""

import io
import json
from pathlib import Path

import pytest

from x2ct.errors import InputError
from x2ct.training import config as cfg
from x2ct.training import progress as progress_module
from x2ct.training import train

from tiny_training import Pairs, tiny


def test_tensorboard_events_hold_losses_lr_and_both_metric_conventions(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stream = io.StringIO()
    summary = train(tiny(), tmp_path, progress="json", datasets=(Pairs(3), Pairs(1)), stream=stream)
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/mse", "train/projection", "train/lr"} <= tags
    assert {"evaluate/x2ct.psnr_3d_db", "evaluate/honest.psnr_db", "evaluate/honest.ssim_3d"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    csv_rows = (tmp_path / "log.csv").read_text().splitlines()
    first_loss = float(csv_rows[1].split(",")[csv_rows[0].split(",").index("loss")])
    assert events.Scalars("train/loss")[0].value == pytest.approx(first_loss, rel=1e-6)
    assert events.Scalars("evaluate/honest.psnr_db")[-1].value == pytest.approx(
        summary["metrics"]["honest.psnr_db"], rel=1e-6)
    done = json.loads(stream.getvalue().splitlines()[-1])
    assert done["event"] == "done" and done["tensorboard"] == str(tmp_path / "tensorboard")


def test_summary_names_steps_time_speed_best_and_paths(tmp_path):
    summary = train(tiny(), tmp_path, progress="none", datasets=(Pairs(3), Pairs(1)))
    assert (summary["steps"], summary["steps_this_run"], summary["processes"]) == (2, 2, 1)
    assert summary["seconds"] > 0 and summary["steps_per_second"] == pytest.approx(2 / summary["seconds"], rel=0.05)
    assert summary["best"]["metric"] == "honest.psnr_db" and summary["best"]["step"] == 2
    for key in ("model", "checkpoints", "log", "tensorboard"):
        assert Path(summary[key]).exists(), key


def test_without_tensorboard_a_note_is_given_once_and_csv_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(progress_module, "_writer", lambda folder, purge_step=None: None)
    stream = io.StringIO()
    summary = train(tiny(), tmp_path, progress="json", datasets=(Pairs(3), Pairs(1)), stream=stream)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    notes = [e for e in events if e["event"] == "note"]
    assert len(notes) == 1 and "tensorboard is not installed" in notes[0]["text"]
    assert summary["tensorboard"] is None and not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "log.csv").read_text().count("\n") == 3


@pytest.mark.parametrize("name", ["x2ct-cnn-paper", "henzler-paper", "projection-gan-paper"])
def test_paper_config_placeholder_names_the_field_before_building(tmp_path, name):
    with pytest.raises(InputError, match=r"data\.source is still the placeholder .*put the path of the folder of "
                                         r"X2CT-GAN HDF5"):
        train(cfg.load(name), tmp_path, progress="none")


def test_missing_data_source_names_the_field(tmp_path):
    c = tiny()
    c["data"] = {"kind": "ct-folder", "source": str(tmp_path / "nowhere")}
    with pytest.raises(InputError, match=r"data\.source: .*nowhere does not exist"):
        train(c, tmp_path / "run", progress="none")


def test_a_loss_term_that_appears_mid_run_gets_a_column_and_earlier_rows_stay_readable(tmp_path):
    import csv

    log = progress_module.Progress(tmp_path, total=3, mode="none")
    log.update(1, {"loss": 1.0, "ct_vq": 1.0})
    log.update(2, {"loss": 0.5, "prior": 0.5})
    log.close()
    resumed = progress_module.Progress(tmp_path, total=3, start=2, mode="none")  # a resumed run keeps the header
    resumed.update(3, {"loss": 0.25, "prior": 0.25, "lr": 0.1})
    resumed.close()
    with open(tmp_path / progress_module.LOG, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["step", "loss", "ct_vq", "prior", "lr"], ["1", "1.0", "1.0", "", ""],
                    ["2", "0.5", "", "0.5", ""], ["3", "0.25", "", "0.25", "0.1"]]
