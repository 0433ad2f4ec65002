"""``x2ct reconstruct``: JSON progress, outputs, no silent overwrite, and one-line errors for bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from x2ct import catalog
from x2ct.cli import main
from x2ct.commands.reconstruct import parse_view, std_path
from x2ct.errors import InputError
from x2ct.image import Volume, XRay
from x2ct.io import read_ct, write_volume, write_xray
from x2ct.modelfile import save_model
from x2ct.models import build


@pytest.fixture(autouse=True)
def _no_user_models(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.MODELS_ENV, str(tmp_path / "no-models"))


@pytest.fixture
def views(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("frontal", "lateral"):
        paths[name] = write_xray(XRay(rng.random((40, 40)).astype(np.float32), (2.0, 2.0), name),
                                 tmp_path / f"{name}.nrrd")
    return paths


@pytest.fixture
def gan_folder(tmp_path):
    folder = tmp_path / "gan"
    save_model(build("x2ct-gan", "tiny"), folder)
    return folder


def _fails(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_json_progress_outputs_and_no_overwrite(views, gan_folder, tmp_path, capsys):
    out = tmp_path / "ct.nrrd"
    argv = ["reconstruct", "--view", f"{views['lateral']}:lateral", "--view", str(views["frontal"]),
            "--model", str(gan_folder), "--out", str(out), "--device", "cpu", "--progress", "json",
            "--mip-png", str(tmp_path / "preview")]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    progress = [line["progress"] for line in lines[:-1]]
    assert progress[0] == 0.0 and progress[-1] == 1.0 and all("stage" in line for line in lines[:-1])
    assert lines[-1]["done"] is True and lines[-1]["output"] == str(out) and lines[-1]["device"] == "cpu"
    ct = read_ct(out)
    assert ct.shape == (16, 16, 16) and np.allclose(ct.spacing, 20.0)
    assert Image.open(tmp_path / "preview.png").mode == "RGB"
    _fails(argv, capsys, "exists; pass --overwrite")
    assert main(argv + ["--overwrite"]) == 0


def test_samples_write_the_std_volume(views, tmp_path, capsys):
    folder = tmp_path / "cd"
    save_model(build("code-diffusion", "tiny"), folder)
    out = tmp_path / "ct.nii.gz"
    assert main(["reconstruct", "--view", f"{views['frontal']}:frontal", "--view", f"{views['lateral']}:90",
                 "--model", str(folder), "--out", str(out), "--samples", "2", "--device", "cpu"]) == 0
    assert std_path(out).name == "ct-std.nii.gz" and read_ct(std_path(out)).shape == (16, 16, 16)


def test_parse_view(tmp_path):
    assert parse_view("a/b.dcm:lateral") == (parse_view("a/b.dcm")[0], "lateral")
    assert parse_view("b.png:45")[1] == 45.0
    assert parse_view("b.png")[1] is None
    assert str(parse_view("C:/x/b.png")[0]) == "C:/x/b.png"
    film = tmp_path / "film.png"
    film.write_bytes(b"")
    with pytest.raises(InputError, match="'sideways' is not a view; give frontal, lateral"):
        parse_view(f"{film}:sideways")
    assert parse_view(f"{tmp_path}/other.png:sideways")[1] is None  # no such file: reading it says so


def test_ct_given_as_xray(views, tmp_path, capsys):
    ct = write_volume(Volume(np.zeros((8, 8, 8), np.float32)), tmp_path / "ct.nrrd")
    _fails(["reconstruct", "--view", str(ct), "--model", "back-projection", "--out", str(tmp_path / "o.nrrd")],
           capsys, "is a CT volume")


def test_a_folder_given_as_a_view(tmp_path, capsys):
    """Not 'no DICOM CT slices found': the user gave a view, so the message is about the X-ray."""
    (tmp_path / "films").mkdir()
    _fails(["reconstruct", "--view", str(tmp_path / "films"), "--model", "back-projection", "--out",
            str(tmp_path / "o.nrrd")], capsys, "is a folder; an X-ray is a single file")


def test_colour_png(tmp_path, capsys):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    _fails(["reconstruct", "--view", str(tmp_path / "colour.png"), "--model", "back-projection", "--out",
            str(tmp_path / "o.nrrd")], capsys, "colour image")


def test_one_pixel_image(tmp_path, capsys):
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp_path / "dot.png")
    _fails(["reconstruct", "--view", str(tmp_path / "dot.png"), "--model", "back-projection", "--out",
            str(tmp_path / "o.nrrd")], capsys, "too small")


def test_unreadable_file(tmp_path, capsys):
    (tmp_path / "junk.png").write_bytes(b"not a picture at all")
    assert main(["reconstruct", "--view", str(tmp_path / "junk.png"), "--model", "back-projection", "--out",
                 str(tmp_path / "o.nrrd")]) == 2
    assert "junk.png" in capsys.readouterr().err
    _fails(["reconstruct", "--view", str(tmp_path / "missing.png"), "--model", "back-projection", "--out",
            str(tmp_path / "o.nrrd")], capsys, "does not exist")


def test_missing_lateral_for_two_view_model(views, gan_folder, tmp_path, capsys):
    _fails(["reconstruct", "--view", str(views["frontal"]), "--model", str(gan_folder), "--out",
            str(tmp_path / "o.nrrd")], capsys, "lateral")


def test_unknown_model_id(views, tmp_path, capsys):
    _fails(["reconstruct", "--view", str(views["frontal"]), "--model", "no-such-model", "--out",
            str(tmp_path / "o.nrrd")], capsys, "Unknown model id 'no-such-model'")


def test_bad_output_extension(views, tmp_path, capsys):
    _fails(["reconstruct", "--view", str(views["frontal"]), "--model", "back-projection", "--out",
            str(tmp_path / "o.txt")], capsys, "unknown extension")


def test_outputs_are_written_all_or_none(views, gan_folder, tmp_path, capsys, monkeypatch):
    import errno

    from x2ct import render

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(render, "save_png", full_disk)  # the preview fails after the CT was staged
    out, preview = tmp_path / "ct.nrrd", tmp_path / "preview"
    _fails(["reconstruct", "--view", str(views["frontal"]), "--view", str(views["lateral"]), "--model",
            str(gan_folder), "--out", str(out), "--device", "cpu", "--mip-png", str(preview)], capsys,
           f"could not write {preview}.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frontal.nrrd", "gan", "lateral.nrrd"]


def test_seed_draws_one_sample_and_is_checked(views, tmp_path, capsys):
    folder = tmp_path / "cd"
    save_model(build("code-diffusion", "tiny"), folder)
    argv = ["reconstruct", "--view", f"{views['frontal']}:frontal", "--view", f"{views['lateral']}:90",
            "--model", str(folder), "--device", "cpu"]
    volumes = {}
    for name, seed in (("own", []), ("zero", ["--seed", "0"]), ("five", ["--seed", "5"])):
        assert main(argv + ["--out", str(tmp_path / f"{name}.nrrd")] + seed) == 0
        volumes[name] = read_ct(tmp_path / f"{name}.nrrd").array
    np.testing.assert_array_equal(volumes["own"], volumes["zero"])  # the model's own seed is 0
    assert not np.array_equal(volumes["zero"], volumes["five"])
    _fails(argv + ["--out", str(tmp_path / "big.nrrd"), "--seed", str(2**64)], capsys, "seed must be a whole number")
    _fails(argv + ["--out", str(tmp_path / "many.nrrd"), "--samples", "33"], capsys, "from 1 to 32")
    assert not (tmp_path / "big.nrrd").exists() and not (tmp_path / "many.nrrd").exists()


def test_extreme_values_and_upper_case_extensions_are_refused(views, gan_folder, tmp_path, capsys):
    huge = write_xray(XRay(np.linspace(-3e38, 3e38, 1600, dtype=np.float32).reshape(40, 40), (2.0, 2.0)),
                      tmp_path / "huge.nrrd")
    _fails(["reconstruct", "--view", str(huge), "--view", str(views["lateral"]), "--model", str(gan_folder),
            "--out", str(tmp_path / "ct.nrrd"), "--device", "cpu"], capsys, "far beyond any radiograph's")
    _fails(["reconstruct", "--view", str(views["frontal"]), "--view", str(views["lateral"]), "--model",
            str(gan_folder), "--out", str(tmp_path / "ct.MHA")], capsys, "write its extension in lower case (ct.mha)")
    (tmp_path / "ct.raw.gz").write_bytes(b"someone's data")
    _fails(["reconstruct", "--view", str(views["frontal"]), "--view", str(views["lateral"]), "--model",
            str(gan_folder), "--out", str(tmp_path / "ct.nhdr")], capsys, "ct.raw.gz exists")
    assert (tmp_path / "ct.raw.gz").read_bytes() == b"someone's data"


def test_a_cancel_by_signal_exits_with_its_number_and_a_closed_pipe_quietly(monkeypatch, capsys):
    import signal
    import subprocess
    import sys

    from x2ct import cli
    from x2ct.commands import info

    def cancelled(args):
        raise cli.Cancelled(signal.SIGTERM)

    monkeypatch.setattr(info, "run", cancelled)
    assert main(["info", "anything"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "x2ct info: cancelled"
    piped = subprocess.run(["bash", "-c", f"set -o pipefail; '{sys.executable}' -m x2ct catalog list | head -c 1"],
                           capture_output=True, text=True, timeout=120)
    assert piped.stderr == "" and piped.returncode in (0, 128 + 13)
