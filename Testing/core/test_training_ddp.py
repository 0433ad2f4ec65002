"""Two gloo processes under torchrun train what one process trains, and resume.

Samples are drawn by position and their randomness (augmentation, dropout) is
keyed to that position, so splitting each batch of 2 over 2 processes (one
sample each) computes exactly what one process computes with micro-batches of
1 accumulated twice: per-step losses agree to float rounding (1e-5 relative)
and the weights after the run to 1e-5. (One process with a batch of 2 would
draw its dropout masks for both samples at once, so it differs by the masks.)
"""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from x2ct.errors import InputError
from x2ct.training import config as cfg
from x2ct.training import distributed, train

STEPS = 3


def settings(batch_size, accumulate):
    c = cfg.load("x2ct-gan-tiny").to_dict()  # critic, dropout, instance norm
    c["train"].update(steps=STEPS, batch_size=batch_size, accumulate=accumulate, ema=0.9)
    c["augment"] = {"contrast": 0.2, "rotation_deg": 10.0, "rotation_p": 0.5, "flip_p": 0.5}
    c["evaluate"].update(every=100)
    c["checkpoint"].update(every=100)
    return c


def torchrun(config_file, out, *args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "x2ct",
               "train", "--config", str(config_file), "--out", str(out), "--progress", "json", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def losses(out):
    with open(out / "log.csv") as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]


def test_two_gloo_processes_match_one_process_and_resume(tmp_path):
    two = tmp_path / "two.yaml"
    two.write_text(yaml.safe_dump(settings(batch_size=2, accumulate=1)))
    first = torchrun(two, tmp_path / "ddp", "--steps", "2")
    assert [e["event"] for e in first].count("start") == 1  # rank 0 alone reports
    assert first[0]["processes"] == 2 and first[-1]["event"] == "done" and first[-1]["steps"] == 2
    resumed = torchrun(two, tmp_path / "ddp", "--resume")
    assert resumed[0]["step"] == 2 and resumed[-1]["steps"] == STEPS

    train(settings(batch_size=1, accumulate=2), tmp_path / "one", progress="none")

    ddp, one = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert [row["step"] for row in ddp] == [1, 2, 3]  # one log, written once per step
    for a, b in zip(ddp, one):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key)
    a = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-5
    assert not list((tmp_path / "ddp").glob(".write-test*"))


def test_global_batch_is_shared_without_overlap():
    whole = distributed.plan(batch_size=2, accumulate=4, world=2)
    assert (whole.split, whole.micro_batches, whole.batch) == ("accumulate", 2, 2)
    parts = [whole.indices(rank, 2, 2, 4) for rank in range(2)]
    assert parts == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    split = distributed.plan(batch_size=4, accumulate=1, world=2)
    assert [split.indices(rank, 2, 4, 1) for rank in range(2)] == [[[0, 1]], [[2, 3]]]
    alone = distributed.plan(batch_size=3, accumulate=2, world=1)
    assert alone.indices(0, 1, 3, 2) == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(InputError, match=r"train\.batch_size \(3\) or train\.accumulate \(1\)"):
        distributed.plan(batch_size=3, accumulate=1, world=2)


def test_one_process_group_is_a_no_op():
    group = distributed.Group()
    parameter = torch.nn.Parameter(torch.ones(2))
    parameter.grad = torch.full((2,), 3.0)
    group.average_gradients([parameter], torch.device("cpu"))
    assert torch.equal(parameter.grad, torch.full((2,), 3.0))
    assert group.all_finite(False, torch.device("cpu")) is False and group.main
    assert group.average_logs({"loss": 1.5}, torch.device("cpu")) == {"loss": 1.5}
