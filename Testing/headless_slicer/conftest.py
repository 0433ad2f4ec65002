"""Headless Slicer harness: one Slicer application per session, a clean scene per test.

The application is slicer-core's MRML scene and module logics (no Qt), built by
``X2CTReconstructionLib.render.create_app`` and set as ``slicer.mrmlScene``
like in 3D Slicer. Tests that need it are skipped, with the reason, only when
the headless Slicer libraries are not installed.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE_DIRS = [ROOT / "X2CTReconstruction", ROOT / "X2CTTraining"]

# Slicer puts each scripted module's folder on sys.path; do the same so that
# `import X2CTReconstructionLib` works as it does inside Slicer.
for folder in MODULE_DIRS:
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def _headless_slicer_missing() -> str | None:
    """Why the headless Slicer libraries cannot be used, or None when they can."""
    try:
        import slicer_core  # noqa: F401  (the PyPI package "slicer" is something else)
        import trame_slicer.core  # noqa: F401
    except ImportError as error:
        return (f"headless Slicer libraries are not installed ({error}); "
                "install them with: pip install 'trame-slicer[standalone]==2.0.0'")
    return None


@pytest.fixture(scope="session")
def slicer_app():
    """The session's headless Slicer application (its scene is ``slicer.mrmlScene``)."""
    reason = _headless_slicer_missing()
    if reason:
        pytest.skip(reason)
    from X2CTReconstructionLib import render

    return render.create_app()


@pytest.fixture
def scene(slicer_app):
    """A scene emptied before and after the test (singleton nodes such as views stay)."""
    slicer_app.scene.Clear(0)
    yield slicer_app.scene
    slicer_app.scene.Clear(0)


@pytest.fixture(scope="session")
def offscreen_views(slicer_app):
    """Red/Yellow/Green slice views and a 3D view of the session's scene, rendered offscreen on demand."""
    from X2CTReconstructionLib import render

    return render.OffscreenViews(slicer_app, size=(256, 256))
