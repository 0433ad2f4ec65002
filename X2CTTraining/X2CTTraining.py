"""3D Slicer module: retrain an X2CT reconstruction model on your own CT data.

The Module, parameter node, Widget and Test classes below need Slicer's Qt
layer; they stay thin. Decisions live in ``X2CTTrainingLib`` (no Qt), which
also runs headless, where it is tested.
"""

import importlib.util
import os
import sys


def _make_core_importable() -> None:
    """Find the ``x2ct`` package: installed next to this file, or at the root of a source checkout."""
    if importlib.util.find_spec("x2ct") is not None:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "x2ct", "__init__.py")):
        sys.path.insert(0, root)


_make_core_importable()

import pathlib  # noqa: E402
from typing import Annotated  # noqa: E402

import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402
from X2CTTrainingLib.logic import TrainingLogic  # noqa: E402

from x2ct.errors import X2CTError  # noqa: E402

#: Model size presets; must equal x2ct.models.registry.PRESETS (checked by Testing/slicer). Spelled out
#: here because importing the registry needs PyTorch, which must not load when Slicer starts.
PRESETS = ["paper", "small", "tiny"]


class X2CTTraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("X2CT Training")
        self.parent.categories = ["X2CT"]
        self.parent.dependencies = []
        self.parent.contributors = ["X2CT developers"]
        self.parent.helpText = _(
            "Train or fine-tune an X2CT reconstruction model on a folder of CT volumes: choose the method, "
            "a size preset (tiny for a quick check, small, or the paper's size), the number of steps and "
            "where checkpoints and the trained model go. The panel checks the set-up before anything runs."
            "<br><b>Research use only, not for diagnosis.</b>"
        )
        self.parent.acknowledgementText = _(
            "The methods follow the papers listed in the X2CT Reconstruction module. "
            "Built on PyTorch and MONAI."
        )


@parameterNodeWrapper
class X2CTTrainingParameterNode:
    """The panel's state, saved with the scene."""

    datasetFolder: pathlib.Path
    preset: Annotated[str, Choice(PRESETS)] = "small"
    steps: Annotated[int, WithinRange(1, 10_000_000)] = 1000
    outputFolder: pathlib.Path


class X2CTTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and shows what the set-up still lacks."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/X2CTTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = X2CTTrainingLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.updateStatus)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.fillMethods()
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateStatus)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateStatus)
            self.updateStatus()

    def fillMethods(self) -> None:
        """List the methods once the panel is opened (this imports PyTorch, so not at Slicer start-up)."""
        if self.ui.methodComboBox.count:
            return
        try:
            self.ui.methodComboBox.addItems(self.logic.methodNames())
        except X2CTError as error:
            self.ui.statusLabel.text = str(error)

    def updateStatus(self, caller=None, event=None) -> None:
        """Say what the training set-up still lacks."""
        if self._parameterNode is None:
            return
        parameters = self._parameterNode
        try:
            problems = self.logic.settingsProblems(
                parameters.datasetFolder, self.ui.methodComboBox.currentText, parameters.preset,
                parameters.steps, parameters.outputFolder)
        except X2CTError as error:
            problems = [str(error)]
        self.ui.statusLabel.text = "\n".join(problems) or _("Set-up is complete.")


class X2CTTrainingLogic(ScriptedLoadableModuleLogic, TrainingLogic):
    """Slicer's module logic: the parameter node, plus everything in TrainingLogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        TrainingLogic.__init__(self)

    def getParameterNode(self):
        return X2CTTrainingParameterNode(super().getParameterNode())


class X2CTTrainingTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer (Reload and Test, ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SettingsProblems()

    def test_SettingsProblems(self):
        logic = X2CTTrainingLogic()
        methods = logic.methodNames()
        self.assertTrue(methods)
        self.assertEqual(list(logic.presetNames()), PRESETS)
        dataset = pathlib.Path(slicer.util.tempDirectory())
        (dataset / "case-000.nii.gz").write_bytes(b"")
        output = dataset.parent / (dataset.name + "-model")
        self.assertEqual(logic.settingsProblems(dataset, methods[0], "tiny", 10, output), [])
        problems = logic.settingsProblems("", "no-such-method", "huge", 0, dataset)
        self.assertEqual(len(problems), 4)
        self.delayDisplay("Training set-up checks passed")
