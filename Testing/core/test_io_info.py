"""``x2ct info``: geometry as text or JSON; expected errors are one line, exit status 2."""

import json

import numpy as np

from x2ct.cli import main
from x2ct.image import Volume, XRay
from x2ct.io import write_volume, write_xray

FLIPPED = np.diag([1.0, -1.0, 1.0])  # i -> L, j -> A, k -> S, like the sample chest CT


def test_ct_text_and_json(tmp_path, capsys):
    path = write_volume(Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5, (0.5, 0.7, 2.0),
                               (-10.0, 20.0, 30.0), FLIPPED), tmp_path / "ct.nrrd")
    assert main(["info", str(path)]) == 0
    text = capsys.readouterr().out
    for line in ("kind: CT volume", "size_ijk: 4 x 3 x 2", "spacing_mm: 0.5 x 0.7 x 2",
                 "origin_lps_mm: (-10, 20, 30)", "orientation: LAS", "direction: 1 0 0; 0 -1 0; 0 0 1"):
        assert line in text
    assert main(["info", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["size_ijk"] == [4, 3, 2] and report["orientation"] == "LAS"
    assert report["values"] == {"min": -5.0, "max": 18.0, "dtype": "float32"}


def test_xray_json_and_forced_xray_reading(tmp_path, capsys):
    path = write_xray(XRay(np.ones((3, 5)), (0.2, 0.3), "lateral", sad=1000.0, sid=1500.0), tmp_path / "drr.mha")
    assert main(["info", "--json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "X-ray" and report["size_rows_cols"] == [3, 5]
    assert report["pixel_spacing_mm"] == [0.2, 0.3]
    assert (report["view"], report["view_angle_deg"], report["sad_mm"], report["sid_mm"]) == \
        ("lateral", 90.0, 1000.0, 1500.0)
    one_slice = write_volume(Volume(np.ones((1, 3, 5), np.float32)), tmp_path / "slice.nrrd")
    assert main(["info", "--xray", str(one_slice)]) == 0
    assert "kind: X-ray" in capsys.readouterr().out


def test_expected_errors_are_one_line_without_traceback(tmp_path, capsys):
    (tmp_path / "noise.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    volume = write_volume(Volume(np.ones((3, 3, 3), np.float32)), tmp_path / "ct.nrrd")
    for argv in (["info", str(tmp_path / "missing.nrrd")], ["info", str(tmp_path / "noise.nii.gz")],
                 ["info", "--xray", str(volume)]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("x2ct info: error: ") and captured.err.count("\n") == 1
        assert "Traceback" not in captured.err
