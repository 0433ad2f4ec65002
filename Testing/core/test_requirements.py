"""The packages Slicer installs on first use are pyproject.toml's pins, written once.

``X2CTReconstruction/Resources/requirements.txt`` ships with the extension
(pyproject.toml does not); it must hold exactly pyproject's dependencies that
3D Slicer does not bundle, with the same versions and markers, so a pin
changed in one place and not the other fails here.
"""

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11 (tomllib)")

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "X2CTReconstruction" / "Resources" / "requirements.txt"
#: What 3D Slicer 5.8 and 5.10 bundle (SuperBuild python-* projects): never reinstalled into Slicer.
BUNDLED_WITH_SLICER = {"numpy", "scipy", "simpleitk", "pydicom", "pillow"}


def pyproject_dependencies() -> list[Requirement]:
    return [Requirement(line) for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def shipped_requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_requirements_file_is_pyproject_less_what_slicer_bundles():
    expected = sorted(str(r) for r in pyproject_dependencies() if r.name.lower() not in BUNDLED_WITH_SLICER)
    assert sorted(str(r) for r in shipped_requirements()) == expected
    assert {r.name.lower() for r in pyproject_dependencies()} >= BUNDLED_WITH_SLICER  # the split is by real names


def test_every_python_that_slicer_ships_gets_one_exact_pin_of_each_package():
    """Slicer 5.8 has Python 3.9, 5.10 has 3.12: each package resolves to exactly one pinned version on both."""
    names = {r.name.lower() for r in shipped_requirements()}
    assert {"torch", "monai", "pyyaml", "safetensors", "geomloss", "einops", "h5py"} <= names
    for python in ("3.9", "3.12"):
        environment = {"python_version": python, "python_full_version": f"{python}.0"}
        chosen = [r for r in shipped_requirements() if r.marker is None or r.marker.evaluate(environment)]
        assert sorted(r.name.lower() for r in chosen) == sorted(names), python
        assert all(str(r.specifier).startswith("==") for r in chosen), python


def test_requires_python_covers_slicer_5_8():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.9"
