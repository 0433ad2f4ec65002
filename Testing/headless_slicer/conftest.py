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
def scene(slicer_app, offscreen_views):
    """A scene emptied before and after the test, its views as they were when the session made them.

    The offscreen views are made first, whatever the test order: made after a test has added the
    compare layout's slice views, trame-slicer's Red view found no slice node to render.
    """
    _reset(slicer_app.scene, offscreen_views.pristine)
    yield slicer_app.scene
    _reset(slicer_app.scene, offscreen_views.pristine)


#: View state that survives ``Clear`` (these nodes are singletons): links, orientations, field of view, slabs.
VIEW_CLASSES = ("vtkMRMLSliceNode", "vtkMRMLSliceCompositeNode", "vtkMRMLViewNode")


def _snapshot(scene) -> dict:
    """A copy of every view node, by ID, to restore the views from after each test."""
    copies = {}
    for class_name in VIEW_CLASSES:
        for index in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(index, class_name)
            copy = node.CreateNodeInstance()
            copy.Copy(node)
            copies[node.GetID()] = copy
    return copies


def _reset(scene, pristine: dict) -> None:
    """Clear the scene and put the session's views back as they were: the compare layout links the
    slice views and an imported scene brings its own slice geometry, and both survive ``Clear``, so
    one test would otherwise change what the next test's views show."""
    scene.Clear(0)
    for node_id, copy in pristine.items():
        node = scene.GetNodeByID(node_id)
        if node is not None:
            node.Copy(copy)


@pytest.fixture(scope="session")
def offscreen_views(slicer_app):
    """Red/Yellow/Green slice views, a 3D view and the MIP 3D view of the session's scene, rendered offscreen."""
    from X2CTReconstructionLib import render
    from X2CTReconstructionLib.outputs import MIP_VIEW

    views = render.OffscreenViews(slicer_app, size=(256, 256))
    # Made before any test: showOutputs would otherwise make a MIP view node that no offscreen view draws.
    views.add_threed_view(MIP_VIEW)
    views.pristine = _snapshot(slicer_app.scene)
    return views


#: Side (voxels) and spacing (mm) of the phantom below.
PHANTOM_SIZE, PHANTOM_SPACING = 48, 4.0


def chest_phantom():
    """Canonical 48^3 phantom (4 mm): body, two lungs, a spine, and a bright marker rod left-anterior.

    The rod (2000 HU) makes left/right and anterior/posterior mistakes visible.
    """
    import numpy as np

    from x2ct.image import CANONICAL_DIRECTION, Volume

    size = PHANTOM_SIZE
    axis0, axis1, axis2 = np.mgrid[:size, :size, :size].astype(np.float32)  # S->I, A->P, R->L
    hu = np.full((size,) * 3, -1000.0, np.float32)
    hu[((axis0 - 24) / 22) ** 2 + ((axis1 - 24) / 16) ** 2 + ((axis2 - 24) / 20) ** 2 < 1] = 0.0
    for centre in (14, 34):
        hu[((axis0 - 20) / 12) ** 2 + ((axis1 - 22) / 9) ** 2 + ((axis2 - centre) / 7) ** 2 < 1] = -850.0
    hu[((axis1 - 34) ** 2 + (axis2 - 24) ** 2 < 4) & (axis0 > 4) & (axis0 < 44)] = 700.0
    hu[((axis1 - 12) ** 2 + (axis2 - 34) ** 2 < 9) & (axis0 > 10) & (axis0 < 38)] = 2000.0
    origin = CANONICAL_DIRECTION @ np.full(3, -(size - 1) / 2.0 * PHANTOM_SPACING)
    return Volume(hu, (PHANTOM_SPACING,) * 3, tuple(origin), CANONICAL_DIRECTION.copy())


@pytest.fixture
def phantom():
    """A fresh ``chest_phantom()`` Volume (tests may change its array)."""
    return chest_phantom()


@pytest.fixture
def phantom_xrays(scene, phantom):
    """Frontal and lateral DRRs of the phantom as X-ray nodes ("phantom frontal", "phantom lateral")."""
    from X2CTReconstructionLib import scene as glue

    from x2ct.physics import drr

    return (glue.xray_node_from_xray(drr(phantom, "frontal"), "phantom frontal", scene),
            glue.xray_node_from_xray(drr(phantom, "lateral"), "phantom lateral", scene))


@pytest.fixture
def node_counts():
    """A function giving the number of nodes of each class in a scene (to check a repeated call adds nothing)."""
    def counts(scene) -> dict[str, int]:
        found = {}
        for index in range(scene.GetNumberOfNodes()):
            name = scene.GetNthNode(index).GetClassName()
            found[name] = found.get(name, 0) + 1
        return found

    return counts
