"""The module files import, and their Slicer self-tests pass, on the headless scene.

``X2CTReconstruction.py`` and ``X2CTTraining.py`` import Slicer's Qt layer
(``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``,
``slicer.i18n``), which slicer-core lacks. Minimal stand-ins replace exactly
those four for the duration of a test, so that the module files' own code (the
Logic classes and the ScriptedLoadableModuleTest bodies that Slicer runs)
executes against the real MRML scene. The Widgets are not exercised here
(see test_slicer_widget.py). The reconstruction self-test runs a tiny model
end to end in a background process, as it does inside Slicer.
"""

import importlib
import os
import sys
import tempfile
import types
import unittest

import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import slicer  # noqa: E402
from stand_ins import qt_layer  # noqa: E402

pytestmark = pytest.mark.slicer


class _Logic:
    """Stand-in for ScriptedLoadableModuleLogic: module name and a plain parameter node."""

    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag(self.moduleName)
        return node


class _Test(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        print(message)


@pytest.fixture
def module_files(monkeypatch, slicer_app, scene, tmp_path):
    """Import both module files with stand-ins for Slicer's Qt layer; forget them afterwards.

    ``slicer.app`` stands in only with what the logic asks of it: the
    application logic (for volume rendering), here the headless app's.
    """
    for name, module in qt_layer(logic=_Logic, test=_Test).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer.util, "tempDirectory", lambda: tempfile.mkdtemp(dir=tmp_path))
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(applicationLogic=lambda: slicer_app.app_logic),
                        raising=False)
    modules = {name: importlib.import_module(name) for name in ("X2CTReconstruction", "X2CTTraining")}
    yield modules
    for name in modules:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("name", ["X2CTReconstruction", "X2CTTraining"])
def test_module_self_test_passes(module_files, name):
    module = module_files[name]
    logic = getattr(module, f"{name}Logic")()
    assert logic.moduleName == name
    test = getattr(module, f"{name}Test")("runTest")
    models_folder = os.environ.get("X2CT_MODELS")
    test.runTest()
    assert os.environ.get("X2CT_MODELS") == models_folder  # the self-test restores the user models folder
    if name == "X2CTReconstruction":  # its last step leaves the tiny model's CT in the scene
        made = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                if node.GetAttribute("X2CT.Model") == test.TINY_MODEL]
        assert len(made) == 1
