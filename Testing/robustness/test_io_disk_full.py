"""A real full disk: every writer on a 1 MiB tmpfs says "disk full" in one line and leaves nothing.

ITK reports some short writes only as a line on stderr (NIfTI) or not at
all (a truncated .nii read back "fine"), so each writer stages, reads the
file back, and only then renames it. Needs root and a tmpfs mount (a
container may refuse it: then these tests are skipped, saying why).
"""

import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from hostile import refused, small_ct, snapshot, tiny_model, xray_views
from x2ct import catalog
from x2ct.errors import X2CTError
from x2ct.image import Volume, XRay
from x2ct.io import write_volume, write_xray
from x2ct.render import save_png


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs, unmounted afterwards."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("tmpfs mounts are not allowed here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)  # lazy: ITK may leak a handle


def _noise_volume(side=80):
    """Random HU: incompressible, 2 MiB as float32, so no format fits on the 1 MiB disk."""
    array = np.random.default_rng(0).uniform(-1000, 1000, (side, side, side)).astype(np.float32)
    return Volume(array, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


@pytest.mark.parametrize("extension", [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"])
def test_volume_writers_say_disk_full_and_leave_nothing(full_disk, extension, capfd):
    with pytest.raises(X2CTError, match="^disk full: .* Nothing was written") as caught:
        write_volume(_noise_volume(), full_disk / f"ct{extension}")
    assert len(str(caught.value).splitlines()) == 1
    assert os.listdir(full_disk) == []
    assert capfd.readouterr().err == "", "ITK printed on stderr"


@pytest.mark.parametrize("extension", [".png", ".nrrd"])
def test_xray_and_picture_writers_say_disk_full(full_disk, extension):
    xray = XRay(np.random.default_rng(0).random((1000, 1000)).astype(np.float32), (1.0, 1.0), "frontal")
    with pytest.raises(X2CTError, match="^disk full"):
        write_xray(xray, full_disk / f"x{extension}")
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (900, 900, 3), dtype=np.uint8))
    with pytest.raises(X2CTError, match="^disk full"):
        save_png(picture, full_disk / "preview.png")
    assert os.listdir(full_disk) == []


def test_an_existing_file_survives_a_full_disk(full_disk):
    small = Volume(np.zeros((8, 8, 8), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    target = write_volume(small, full_disk / "ct.nrrd")
    kept = target.read_bytes()
    with pytest.raises(X2CTError, match="^disk full"):
        write_volume(_noise_volume(), target)
    assert target.read_bytes() == kept and os.listdir(full_disk) == ["ct.nrrd"]


def test_cli_commands_on_a_full_disk(full_disk, tmp_path, monkeypatch, capfd):
    """reconstruct, drr (with its PNG), simulate and catalog import: exit 2, one line, nothing written."""
    views = xray_views(tmp_path)
    ct = small_ct(tmp_path / "ct.nrrd")
    filler = full_disk / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 3 * 4096))  # leaves 3 pages: a lock fits, no output does
    monkeypatch.setenv(catalog.MODELS_ENV, str(full_disk / "models"))
    model = tiny_model(tmp_path / "gan")
    before = snapshot(tmp_path)
    refused(["reconstruct", "--view", f"{views['frontal']}:frontal", "--view", f"{views['lateral']}:lateral",
             "--model", model, "--out", full_disk / "ct.nii", "--device", "cpu"], capfd, full_disk, "disk full")
    refused(["drr", ct, "--out", full_disk / "drr.nrrd", "--size", "400", "--png", full_disk / "drr.png"], capfd,
            full_disk, "disk full")
    refused(["simulate", "--seed", "0", "--size", "64", "--out", full_disk / "sims"], capfd, full_disk,
            "disk full")
    refused(["catalog", "import", model], capfd, full_disk, "disk full")
    assert snapshot(tmp_path) == before
