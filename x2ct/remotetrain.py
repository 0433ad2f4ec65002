"""Train shipped models side by side on a lent GPU machine that has neither the sample data nor SimpleITK.

Such a machine (``scripts/gpu-train``) receives the repository and a few MB
beside it, so the simulator's templates (the two real CTs and their organ
maps on each model's work cube) travel as one ``.npz`` instead of the 45 MB
of sample data, and the results come back as parts of at most 15 MiB::

    python -m x2ct.remotetrain prepare FOLDER ID...        # here: templates of the IDs' grids
    python3 -m x2ct.remotetrain run FOLDER OUT SECONDS ID... # there: trains the IDs at once, packs into OUT
    python -m x2ct.remotetrain unpack OUT                   # here: -> output/ship/<ID>, then shipping export

``run`` first makes every training case's views once, in all CPU cores (the
training process would make them one by one in its first epoch), then
starts one ``shipping.train`` process per model. A run still going when
``SECONDS`` have passed is stopped; its best validation checkpoint so far
is what comes back (the trainer writes checkpoints atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from x2ct.data import simulate
from x2ct.data.protocol import Grid, get_protocol

TEMPLATES = "templates.npz"
#: Largest part handed back (the lent machine returns files of at most 16 MiB).
PART_BYTES = 15 * 2**20
#: CPU threads of each training process (the machine's other cores make views and augment).
TRAIN_THREADS = 4
#: What comes back of a run folder besides its best checkpoint's weights: the pointers and the logs.
RUN_FILES = ("config.yaml", "best.json", "latest.json", "log.csv", "progress.jsonl", "ship-train.json")


def _grid_keys(model_ids) -> set:
    from x2ct import shipping

    keys = set()
    for model_id in model_ids:
        config, spec = shipping.config_and_spec(model_id)
        protocol = get_protocol(config.data.protocol, spec.volume_size)
        keys |= {(protocol.size, protocol.spacing_mm, protocol.crop_mm, patient) for patient in simulate.PATIENTS}
    return keys


def save_templates(path: Path, model_ids) -> list:
    """The simulator templates the ``model_ids`` train on, in one ``.npz`` (arrays) with a JSON index."""
    arrays, index = {}, []
    for number, key in enumerate(sorted(_grid_keys(model_ids))):
        template = simulate.load_template(*key)
        fields = dataclasses.asdict(template)
        grid = fields.pop("grid")
        entry = {"key": list(key), "grid": [grid["n"], grid["spacing"], list(grid["origin"])], "scalars": {}}
        for name, value in fields.items():
            if isinstance(value, np.ndarray):
                arrays[f"{number}.{name}"] = value
            else:
                entry["scalars"][name] = value
        index.append(entry)
    arrays["index"] = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as stream:
        np.savez_compressed(stream, **arrays)
    os.replace(part, path)
    return [entry["key"] for entry in index]


def use_templates(path: Path) -> None:
    """Make ``simulate.load_template`` answer from ``path`` (written by ``save_templates``), not the sample data."""
    stored = np.load(path, allow_pickle=False)
    templates = {}
    for number, entry in enumerate(json.loads(stored["index"].tobytes())):
        n, spacing, origin = entry["grid"]
        scalars = dict(entry["scalars"])
        for name in ("lung_labels", "blood_labels"):
            scalars[name] = tuple(scalars[name])
        arrays = {name.split(".", 1)[1]: stored[name] for name in stored.files if name.startswith(f"{number}.")}
        for array in arrays.values():
            array.setflags(write=False)
        templates[tuple(entry["key"])] = simulate.Template(grid=Grid(n, spacing, tuple(origin)), **arrays, **scalars)

    def from_file(size, spacing_mm, crop_mm, patient):
        key = (size, spacing_mm, crop_mm, patient)
        if key not in templates:
            raise KeyError(f"No template for {key} in {path}; prepare it for this model here first.")
        return templates[key]

    simulate._template = from_file


#: The datasets whose views ``make_views``'s processes make (inherited through fork, not pickled).
_DATASETS: list = []


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # a forked child must not use the parent's thread pool (it hangs)


def _views_of(task) -> None:
    number, index = task
    _DATASETS[number][index]  # fills the on-disk view cache


def make_views(model_ids, processes: int) -> float:
    """Every training and validation case's views of ``model_ids``, made once in ``processes`` processes."""
    from x2ct import shipping

    began = time.monotonic()
    for model_id in model_ids:
        _DATASETS.extend(shipping.training_sets(*shipping.config_and_spec(model_id)))
    tasks = [(number, index) for number, dataset in enumerate(_DATASETS) for index in range(len(dataset))]
    with multiprocessing.get_context("fork").Pool(processes, initializer=_one_thread) as pool:
        pool.map(_views_of, tasks, chunksize=4)
    _DATASETS.clear()
    return time.monotonic() - began


def run(folder: Path, out: Path, seconds: float, model_ids) -> dict:
    """Train ``model_ids`` at once on this machine for at most ``seconds``; pack the results into ``out``."""
    import torch

    began = time.monotonic()
    use_templates(folder / TEMPLATES)
    report = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "cpus": os.cpu_count(), "views_seconds": make_views(model_ids, os.cpu_count() or 2)}
    runs = folder / "runs"
    children = {}
    for model_id in model_ids:
        (runs / model_id).mkdir(parents=True, exist_ok=True)
        log = open(runs / model_id / "progress.jsonl", "w")
        command = [sys.executable, "-m", "x2ct.remotetrain", "one", str(folder), model_id, str(runs / model_id)]
        env = {**os.environ, "OMP_NUM_THREADS": str(TRAIN_THREADS), "PYTHONUNBUFFERED": "1"}
        children[model_id] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env),
                              time.monotonic(), log)
    deadline = began + seconds
    for model_id, (child, started, log) in children.items():
        try:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait()
        log.close()
        report[model_id] = {"returncode": child.returncode, "seconds": round(time.monotonic() - started, 1),
                            "stopped_at_deadline": child.returncode not in (0, 1, 2)}
        _record(runs / model_id, model_id, report[model_id]["seconds"], report["device"])
        report[model_id]["parts"] = pack(runs / model_id, out, model_id)
    (out / "remote-train.json").write_text(json.dumps(report, indent=2))
    return report


def _record(run_folder: Path, model_id: str, seconds: float, device: str) -> None:
    from x2ct import shipping

    record = run_folder / shipping.TRAIN_RECORD
    # A run stopped at the deadline wrote none.
    settings = (json.loads(record.read_text()) if record.is_file() else
                {"seconds": seconds, "threads": TRAIN_THREADS, "summary": None})
    settings["hardware"] = f"{device} (lent machine, {TRAIN_THREADS} CPU threads per training process, "\
                           "other models training beside it)"
    settings["command"] = f"scripts/gpu-train prepare {model_id}, run, unpack (x2ct.remotetrain)"
    record.write_text(json.dumps(settings, indent=2, default=str))


def pack(run_folder: Path, out: Path, model_id: str) -> list:
    """The run's pointers, logs and its best checkpoint's weights (export's choice), as ``out/<id>.tar.N`` parts."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in RUN_FILES:
            if (run_folder / name).is_file():
                archive.add(run_folder / name, arcname=name)
        pointer = next((run_folder / name for name in ("best.json", "latest.json") if (run_folder / name).is_file()),
                       None)
        if pointer is not None:
            checkpoint = json.loads(pointer.read_text())["folder"]
            for name in ("model.json", "model.safetensors"):
                archive.add(run_folder / checkpoint / name, arcname=f"{checkpoint}/{name}")
    data, parts = buffer.getvalue(), []
    for number, start in enumerate(range(0, len(data), PART_BYTES)):
        part = out / f"{model_id}.tar.{number}"
        part.write_bytes(data[start:start + PART_BYTES])
        parts.append(part.name)
    return parts


def unpack(folder: Path, runs: Path) -> list:
    """``folder``'s ``<id>.tar.N`` parts into ``runs/<id>`` (a run folder ``shipping export`` reads)."""
    unpacked = []
    for first in sorted(folder.glob("*.tar.0")):
        model_id = first.name[:-len(".tar.0")]
        parts = sorted(folder.glob(f"{model_id}.tar.*"), key=lambda p: int(p.suffix[1:]))
        data = b"".join(part.read_bytes() for part in parts)
        target = runs / model_id
        if target.exists():
            raise FileExistsError(f"{target} exists; move it away first.")
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            unsafe = [m.name for m in members if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute()
                      or ".." in Path(m.name).parts]
            if unsafe:
                raise ValueError(f"{first} holds entries outside a run folder: {unsafe[:3]}")
            archive.extractall(target, members=members)
        unpacked.append(model_id)
    return unpacked


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x2ct.remotetrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    prepare = sub.add_parser("prepare")
    prepare.add_argument("folder", type=Path)
    prepare.add_argument("model_ids", nargs="+")
    running = sub.add_parser("run")
    running.add_argument("folder", type=Path)
    running.add_argument("out", type=Path)
    running.add_argument("seconds", type=float)
    running.add_argument("model_ids", nargs="+")
    one = sub.add_parser("one")
    one.add_argument("folder", type=Path)
    one.add_argument("model_id")
    one.add_argument("out", type=Path)
    back = sub.add_parser("unpack")
    back.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.action == "prepare":
        args.folder.mkdir(parents=True, exist_ok=True)
        print(json.dumps(save_templates(args.folder / TEMPLATES, args.model_ids)))
    elif args.action == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args.folder, args.out, args.seconds, args.model_ids), indent=2))
    elif args.action == "one":  # a child of run: shipping.train reads its thread count from OMP_NUM_THREADS
        from x2ct import shipping

        use_templates(args.folder / TEMPLATES)
        shipping.train(args.model_id, args.out)
    else:
        from x2ct import shipping

        print(json.dumps(unpack(args.folder, shipping.RUNS)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
