"""Training on a lent GPU machine: the simulator's templates travel as one file, results come back in parts."""

import json

import numpy as np
import pytest

from x2ct import remotetrain
from x2ct.data import simulate
from x2ct.data.protocol import X2CT


@pytest.mark.sampledata
def test_templates_from_the_file_make_the_same_pseudo_patients(tmp_path, monkeypatch):
    protocol = X2CT.with_size(64)  # henzler-1v's grid
    expected = simulate.pseudo_patient(3, protocol)  # patient 2 (chest-ct-2)
    first = simulate.pseudo_patient(4, protocol)
    keys = remotetrain.save_templates(tmp_path / remotetrain.TEMPLATES, ["henzler-1v"])
    assert sorted(key[3] for key in keys) == sorted(simulate.PATIENTS)

    monkeypatch.setattr(simulate, "_template", simulate._template)  # restored after the test
    monkeypatch.setattr(simulate, "_first_patient", lambda protocol: pytest.fail("read the sample data"))
    remotetrain.use_templates(tmp_path / remotetrain.TEMPLATES)
    for seed, made in ((3, expected), (4, first)):
        again = simulate.pseudo_patient(seed, protocol)
        np.testing.assert_array_equal(again.ct.array, made.ct.array)
        np.testing.assert_array_equal(again.labels.array, made.labels.array)
        assert again.ct.origin == made.ct.origin and again.ct.spacing == made.ct.spacing
    with pytest.raises(KeyError, match="No template"):
        simulate.load_template(32)


def _run_folder(path, weights: bytes):
    (path / "checkpoints" / "step-0000004").mkdir(parents=True)
    (path / "checkpoints" / "step-0000006").mkdir(parents=True)
    (path / "config.yaml").write_text("method: henzler\n")
    (path / "best.json").write_text(json.dumps({"step": 4, "folder": "checkpoints/step-0000004"}))
    (path / "latest.json").write_text(json.dumps({"step": 6, "folder": "checkpoints/step-0000006"}))
    (path / "progress.jsonl").write_text('{"event": "done"}\n')
    for step in ("step-0000004", "step-0000006"):
        (path / "checkpoints" / step / "model.json").write_text("{}")
        (path / "checkpoints" / step / "model.safetensors").write_bytes(weights)
        (path / "checkpoints" / step / "state.safetensors").write_bytes(b"optimiser state")


def test_pack_splits_the_best_checkpoint_and_unpack_rebuilds_the_run(tmp_path, monkeypatch):
    weights = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()  # does not compress
    _run_folder(tmp_path / "run", weights)
    monkeypatch.setattr(remotetrain, "PART_BYTES", 20_000)
    (tmp_path / "out").mkdir()
    parts = remotetrain.pack(tmp_path / "run", tmp_path / "out", "henzler-1v")
    assert parts == [f"henzler-1v.tar.{n}" for n in range(len(parts))] and len(parts) >= 3
    assert all((tmp_path / "out" / part).stat().st_size <= 20_000 for part in parts)

    assert remotetrain.unpack(tmp_path / "out", tmp_path / "ship") == ["henzler-1v"]
    run = tmp_path / "ship" / "henzler-1v"
    assert (run / "checkpoints" / "step-0000004" / "model.safetensors").read_bytes() == weights
    assert not (run / "checkpoints" / "step-0000006").exists()  # only export's choice travels
    assert not (run / "checkpoints" / "step-0000004" / "state.safetensors").exists()
    assert json.loads((run / "best.json").read_text())["step"] == 4
    with pytest.raises(FileExistsError, match="move it away"):
        remotetrain.unpack(tmp_path / "out", tmp_path / "ship")


def test_a_run_stopped_at_the_deadline_gets_a_record_with_its_hardware(tmp_path):
    from x2ct import shipping

    remotetrain._record(tmp_path, "henzler-1v", 412.5, "NVIDIA H200")
    record = json.loads((tmp_path / shipping.TRAIN_RECORD).read_text())
    assert record["seconds"] == 412.5 and record["summary"] is None
    assert record["hardware"].startswith("NVIDIA H200") and "gpu-train" in record["command"]
    assert shipping.training_seconds(tmp_path) == 412.5


def test_unpack_refuses_entries_outside_the_run_folder(tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        entry = tarfile.TarInfo("../escaped.txt")
        entry.size = 2
        archive.addfile(entry, io.BytesIO(b"hi"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "henzler-1v.tar.0").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="outside a run folder"):
        remotetrain.unpack(tmp_path / "out", tmp_path / "ship")
    assert not (tmp_path / "escaped.txt").exists()
