"""What the X2CT Reconstruction module does to the scene, without Qt.

The module's Logic class (in ``X2CTReconstruction.py``) adds Slicer's
parameter-node plumbing on top of this class; everything else lives here so
that it runs, and is tested, headless on slicer-core. Every button of the
panel maps to one call, usable from Slicer's Python console.
"""

from __future__ import annotations

from pathlib import Path

import slicer

import x2ct.io
from x2ct.errors import InputError
from X2CTReconstructionLib import scene as scene_glue

#: File name endings stripped to name a node after its file.
_DOUBLE_SUFFIXES = (".nii.gz",)


class ReconstructionLogic:
    """Loads X-rays and CTs into the scene through x2ct's readers and checks the inputs of a reconstruction."""

    def __init__(self, scene=None):
        self._scene = scene

    @property
    def scene(self):
        """The scene given at construction, else Slicer's current scene."""
        return self._scene or slicer.mrmlScene

    def loadXRay(self, path, view=None, pixelSpacing=None, name: str | None = None):
        """Read an X-ray file (DICOM CR/DX, PNG/JPEG/TIFF, NRRD/MHA) and add it as a one-slice volume node.

        ``view`` and ``pixelSpacing`` (row, column mm) override what the
        file says; the node keeps view, distances and metadata as attributes.
        """
        xray = x2ct.io.read_xray(path, view=view, pixel_spacing=pixelSpacing)
        return scene_glue.xray_node_from_xray(xray, name or node_name(path), self.scene)

    def loadCT(self, path, name: str | None = None):
        """Read a CT (DICOM folder, NIfTI, NRRD, MHA) in HU and add it as a scalar volume node."""
        volume = x2ct.io.read_ct(path)
        return scene_glue.volume_node_from_volume(volume, name or node_name(path), self.scene)

    def inputProblems(self, frontalNode, lateralNode=None, groundTruthNode=None) -> list[str]:
        """Why these nodes cannot be reconstructed from / compared with, one line each (empty: they can).

        A frontal X-ray is required, a lateral one optional (single-view
        models exist); the ground truth, if given, must be a CT volume.
        """
        problems = []
        if frontalNode is None:
            problems.append("Select or load a frontal X-ray.")
        elif lateralNode is not None and frontalNode.GetID() == lateralNode.GetID():
            problems.append("The frontal and lateral inputs are the same node; choose two different X-rays.")
        for node, role in ((frontalNode, "Frontal"), (lateralNode, "Lateral")):
            if node is not None:
                problems.extend(_problem(lambda n=node: scene_glue.xray_from_volume_node(n), role))
        if groundTruthNode is not None:
            problems.extend(_problem(lambda: scene_glue.volume_from_volume_node(groundTruthNode, copy=False), "Ground truth"))
        return problems


def node_name(path) -> str:
    """A node name from a file or folder name, without its format suffix (chest.nii.gz -> chest)."""
    path = Path(path)
    name = path.name
    for ending in _DOUBLE_SUFFIXES:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem if path.suffix else name


def _problem(check, role: str) -> list[str]:
    try:
        check()
    except InputError as error:
        return [f"{role}: {error}"]
    return []
