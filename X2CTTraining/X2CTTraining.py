"""3D Slicer module: retrain an X2CT reconstruction model on your own CT data.

The Module, parameter node, Widget and Test classes below need Slicer's Qt
layer; they stay thin. Decisions live in ``X2CTTrainingLib`` (no Qt), which
also runs headless, where it is tested.
"""

import importlib.util
import os
import sys


def _make_core_importable() -> None:
    """Find the ``x2ct`` package (installed next to this file, or at the root of a source checkout) and
    ``X2CTReconstructionLib``, whose dependency installer this module shares (Slicer puts every module's
    folder on sys.path; a source checkout has it in the sibling folder)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package, folder in (("x2ct", root), ("X2CTReconstructionLib", os.path.join(root, "X2CTReconstruction"))):
        if importlib.util.find_spec(package) is None and os.path.isfile(os.path.join(folder, package, "__init__.py")):
            sys.path.insert(0, folder)


_make_core_importable()

import pathlib  # noqa: E402
from typing import Annotated  # noqa: E402

import qt  # noqa: E402
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
from X2CTReconstructionLib import dependencies  # noqa: E402
from X2CTTrainingLib.logic import SIMULATED, TrainingLogic, formatEta  # noqa: E402

from x2ct.errors import X2CTError  # noqa: E402

#: Model size presets; must equal x2ct.models.registry.PRESETS (checked by Testing/headless_slicer). Spelled out
#: here because importing the registry needs PyTorch, which must not load when Slicer starts.
PRESETS = ["paper", "small", "tiny"]

PAPERS = """
<ul>
<li>A. Corona-Figueroa, H. P. H. Shum, C. G. Willcocks: <i>Repeat and Concatenate: 2D to 3D Image
Translation with 3D to 3D Generative Modeling</i> (neural optimal transport schedule).</li>
<li>Adwait, Avantika, Harshvardhan, Shivam: <i>3D Reconstruction of 2D Medical Images using
Unsupervised GANs</i> (building on X2CT-GAN; the projection GAN).</li>
<li>A. Corona-Figueroa, S. Bond-Taylor, N. Bhowmik, Y. F. A. Gaus, T. P. Breckon, H. P. H. Shum,
C. G. Willcocks: <i>Unaligned 2D to 3D Translation with Conditional Vector-Quantized Code Diffusion
using Transformers</i> (two-stage code diffusion).</li>
<li>Z. Zhang, Y. Ying: <i>DuoLift-GAN: Reconstructing CT from Single-view and Biplanar X-Rays with
Generative Adversarial Networks</i> (DuoLift-CNN/GAN; its X2CT-CNN/GAN retraining).</li>
<li>P. Henzler, V. Rasche, T. Ropinski, T. Ritschel: <i>Single-image Tomography: 3D Volumes from
2D Cranial X-Rays.</i></li>
</ul>
"""
#: Pause (ms) after the last change of a setting before the set-up is checked again.
STATUS_DELAY_MS = 400
#: The first item of the "Start from" box: a new network with random weights (no fine-tuning).
RANDOM_WEIGHTS = _("random weights (new network)")
CONSOLE_ONE_LINER = (
    'slicer.util.getModuleLogic("X2CTTraining").train("/data/cts", "x2ct-cnn", "small", 1000, "/runs/a")'
)


class X2CTTraining(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("X2CT Training")
        self.parent.categories = ["X2CT"]
        self.parent.dependencies = []
        self.parent.contributors = ["X2CT developers"]
        self.parent.helpText = _(
            "Train or fine-tune an X2CT reconstruction model on a folder of CT volumes (NIfTI, NRRD, MHA), a "
            "LIDC-style DICOM tree or the X2CT HDF5 files, or on the built-in simulator: choose the method, "
            "a size preset (tiny for a quick check, small, or the paper's size), the number of steps and "
            "where checkpoints and the trained model go. <b>Start from</b> a shipped or imported model to "
            "fine-tune it (its method, preset and views are taken over). Training runs in a background process "
            "with the method's published schedule; the progress bar shows the ETA and the plot the losses. "
            "<b>Cancel</b> stops it and keeps the last checkpoint; tick <b>Resume</b> to continue it. "
            "The trained model (OUTPUT/model) loads in the X2CT Reconstruction module.<br>"
            "From the Python console, one blocking call does the same and returns the summary:<br><code>"
            + CONSOLE_ONE_LINER + "</code><br>(the dataset folder may be \"simulated\").<br>"
            "<b>Research use only, not for diagnosis.</b>"
        )
        self.parent.acknowledgementText = _(
            "The training schedules follow these papers:" + PAPERS + "Built on PyTorch and MONAI."
        )


@parameterNodeWrapper
class X2CTTrainingParameterNode:
    """The panel's state, saved with the scene."""

    datasetFolder: pathlib.Path
    simulated: bool = False
    method: str = ""  # its combo box is filled when the panel opens, so it is synchronised by hand
    preset: Annotated[str, Choice(PRESETS)] = "small"
    steps: Annotated[int, WithinRange(1, 10_000_000)] = 1000
    outputFolder: pathlib.Path
    resume: bool = False
    initFrom: str = ""  # model id to fine-tune ("": random weights); its box is filled from the catalog, by hand


class X2CTTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node, starts and follows a run through the logic; no processing here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._packagesProblem = ""  # the install line while a package training needs is missing

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.installPrompt = dependencies.addInstallPrompt(self.layout, onInstalled=self.onDependenciesInstalled)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/X2CTTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = X2CTTrainingLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.initFromComboBox.connect("currentIndexChanged(int)", self.onInitFromChanged)
        self.ui.startButton.connect("clicked(bool)", self.onStart)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        # Polling keeps Slicer responsive: the run reports through a pipe, read here a few times a second.
        self.timer = qt.QTimer()
        self.timer.setInterval(300)
        self.timer.connect("timeout()", self.onTimer)
        # Checking the set-up looks into the dataset folder: done when typing pauses, not on every keystroke.
        self.statusTimer = qt.QTimer()
        self.statusTimer.setSingleShot(True)
        self.statusTimer.setInterval(STATUS_DELAY_MS)
        self.statusTimer.connect("timeout()", self.updateStatus)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.timer.stop()
        self.statusTimer.stop()
        if self.run is not None and not self.run.finished:
            self.run.cancel()  # never leave a training process behind when Slicer closes
        self.removeObservers()

    def enter(self) -> None:
        self.installPrompt.refresh()  # packages may have been installed since the panel was last shown
        self.fillMethods()
        self.fillModels()
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterModified)
            self.updateStatus()

    def onParameterModified(self, caller=None, event=None) -> None:
        """Check the set-up once the user pauses: a keystroke in the dataset path only restarts the timer."""
        self.statusTimer.start()

    def fillMethods(self) -> None:
        """List the methods once the panel is opened and their packages are installed (this imports PyTorch
        and MONAI, so not at Slicer start-up); a missing package becomes the install line, never a traceback."""
        self._packagesProblem = dependencies.promptText(dependencies.missing())
        if self.ui.methodComboBox.count or self._packagesProblem:
            return
        try:
            methods = self.logic.methodNames()
        except X2CTError as error:
            self.ui.statusLabel.text = str(error)
            return
        except ImportError as error:  # a package below the registry (torch present, monai missing...)
            self._packagesProblem = dependencies.importProblem(error)
            return
        wasBlocked = self.ui.methodComboBox.blockSignals(True)  # filling must not overwrite a saved choice
        self.ui.methodComboBox.addItems(methods)
        self.ui.methodComboBox.blockSignals(wasBlocked)
        self.updateStatus()

    def fillModels(self) -> None:
        """List the models to fine-tune (each time the panel opens: one may have been imported meanwhile)."""
        if self._packagesProblem:
            return
        try:
            models = self.logic.fineTunableModels()
        except X2CTError as error:  # e.g. the user models folder is a file: say so, offer random weights only
            self.ui.statusLabel.text = str(error)
            models = []
        combo = self.ui.initFromComboBox
        wasBlocked = combo.blockSignals(True)  # refilling must not overwrite the saved choice
        combo.clear()
        combo.addItems([RANDOM_WEIGHTS] + models)
        combo.blockSignals(wasBlocked)

    def settings(self) -> tuple:
        """(dataset, method, preset, steps, output folder, resume, model to fine-tune or None) as the logic takes
        them."""
        p = self._parameterNode
        dataset = SIMULATED if p.simulated else p.datasetFolder
        return dataset, p.method, p.preset, p.steps, p.outputFolder, p.resume, (p.initFrom or None)

    def onMethodChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.method = self.ui.methodComboBox.itemText(index)

    def onInitFromChanged(self, index: int) -> None:
        """A model to fine-tune also chooses the method and preset: fine-tuning keeps the model's network."""
        if self._parameterNode is None or index < 0:
            return
        modelId = self.ui.initFromComboBox.itemText(index) if index > 0 else ""
        self._parameterNode.initFrom = modelId  # each change restarts the status timer: one check follows
        if modelId:
            try:
                method, preset = self.logic.modelNetwork(modelId)
            except X2CTError:
                return  # the set-up check says what is wrong with the model
            self._parameterNode.method = method
            if preset in PRESETS:
                self._parameterNode.preset = preset

    def showMethod(self) -> None:
        """Select the parameter node's method in the combo box (the first method when none is chosen yet)."""
        combo, parameters = self.ui.methodComboBox, self._parameterNode
        if not parameters.method and combo.count:
            parameters.method = combo.itemText(0)  # re-enters updateStatus through the node's Modified event
        _selectQuietly(combo, combo.findText(parameters.method))

    def showInitFrom(self) -> None:
        """Select the parameter node's model to fine-tune (a model no longer listed keeps the node's value, and
        the set-up check says it is missing); a resumed run keeps its own config, so the box is off."""
        combo, modelId = self.ui.initFromComboBox, self._parameterNode.initFrom
        _selectQuietly(combo, combo.findText(modelId) if modelId else 0)
        combo.enabled = not self._parameterNode.resume

    def running(self) -> bool:
        return self.run is not None and not self.run.finished

    def updateStatus(self, caller=None, event=None) -> None:
        """Enable what can be done now and say what the training set-up still lacks."""
        if self._parameterNode is None:
            return
        self.showMethod()
        self.showInitFrom()
        self.ui.datasetPathLineEdit.enabled = not self._parameterNode.simulated
        self.ui.cancelButton.enabled = self.running()
        if self.running():
            self.ui.startButton.enabled = False
            return
        problems = [self._packagesProblem] if self._packagesProblem else []
        try:
            problems = problems or self.logic.settingsProblems(*self.settings())
        except X2CTError as error:
            problems = [str(error)]
        except ImportError as error:  # the registry needs a package that is missing: the install line
            self._packagesProblem = dependencies.importProblem(error)
            problems = [self._packagesProblem]
        self.ui.startButton.enabled = not problems
        last = [_("Last run: ") + self.run.statusText()] if self.run is not None else []
        self.ui.statusLabel.text = "\n".join(last + (problems or [_("Set-up is complete.")]))

    def onDependenciesInstalled(self) -> None:
        """After Install: list the methods now that their packages are there, without a restart."""
        self.fillMethods()
        self.fillModels()
        self.updateStatus()

    def onStart(self) -> None:
        dataset, method, preset, steps, output, resume, initFrom = self.settings()
        stopped = [] if resume else self.logic.stoppedRunFiles(output)
        if stopped and not slicer.util.confirmOkCancelDisplay(
                _("The output folder holds the files of a run that stopped before its first checkpoint ({names}). "
                  "Delete them and start a new run there?").format(names=", ".join(stopped)), windowTitle="X2CT"):
            self.ui.statusLabel.text = _("Not started: the stopped run's files are kept.")
            return
        try:
            self.run = self.logic.startTraining(dataset, method, preset, steps, output, resume, onDone=self.onDone,
                                                overwrite=bool(stopped), initFrom=initFrom)
        except X2CTError as error:
            self.ui.statusLabel.text = str(error)
            return
        if self.run.lossCurve is not None:
            slicer.modules.plots.logic().ShowChartInLayout(self.run.lossCurve.chartNode)
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = "%p%"
        self.ui.statusLabel.text = _("Training started in the background; the first step can take a while.")
        self.timer.start()
        self.updateStatus()

    def onCancel(self) -> None:
        """Ask the run to stop without waiting: the poll timer sees it end and calls onDone."""
        if self.running():
            self.ui.statusLabel.text = _("Cancelling...")
            self.run.cancel(wait=False)

    def onTimer(self) -> None:
        if self.run is None:
            self.timer.stop()
            return
        self.run.poll()
        if not self.run.finished:
            self.ui.progressBar.value = int(round(100 * self.run.fraction))
            self.ui.progressBar.format = "%p%" + _(", ETA ") + formatEta(self.run.eta_s)
            self.ui.statusLabel.text = self.run.statusText()

    def onDone(self, run) -> None:
        self.timer.stop()
        self.ui.progressBar.value = int(round(100 * run.fraction))
        self.ui.progressBar.format = "%p%"
        self.updateStatus()  # shows the outcome (or the error) and what the next run needs


def _selectQuietly(combo, index: int) -> None:
    """Show item ``index`` (nothing when it is -1) without the box's signal: the parameter node already holds it."""
    if index >= 0 and index != combo.currentIndex:
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = index
        combo.blockSignals(wasBlocked)


class X2CTTrainingLogic(ScriptedLoadableModuleLogic, TrainingLogic):
    """Slicer's module logic: the parameter node, plus everything in TrainingLogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        TrainingLogic.__init__(self)

    def getParameterNode(self):
        return X2CTTrainingParameterNode(super().getParameterNode())

    def missingPackages(self) -> list[str]:
        """Python packages X2CT needs that are not installed here (pip names); the panel's Install adds them."""
        return [requirement.name for requirement in dependencies.missing()]


class X2CTTrainingTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer (Reload and Test, ctest)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SettingsProblems()
        self.setUp()
        self.test_TrainTinyOnSimulatedData()

    def test_SettingsProblems(self):
        logic = X2CTTrainingLogic()
        methods = logic.methodNames()
        self.assertTrue(methods)
        self.assertEqual(list(logic.presetNames()), PRESETS)
        dataset = pathlib.Path(slicer.util.tempDirectory())
        (dataset / "case-000.nii.gz").write_bytes(b"")
        output = dataset.parent / (dataset.name + "-model")
        self.assertEqual(logic.settingsProblems(dataset, methods[0], "tiny", 10, output), [])
        self.assertEqual(logic.dataKind(dataset), "ct-folder")
        problems = logic.settingsProblems("", "no-such-method", "huge", 0, dataset)
        self.assertEqual(len(problems), 4)
        self.assertEqual(len(logic.settingsProblems(SIMULATED, methods[0], "tiny", 10, output, resume=True)), 1)
        models = logic.fineTunableModels()
        self.assertTrue(models)
        method, preset = logic.modelNetwork(models[0])
        self.assertEqual(logic.settingsProblems(SIMULATED, method, preset, 10, output, initFrom=models[0]), [])
        self.delayDisplay("Training set-up checks passed")

    def test_TrainTinyOnSimulatedData(self):
        """Two steps of x2ct-cnn (tiny) on simulated data, in the background process, through the logic."""
        logic = X2CTTrainingLogic()
        output = pathlib.Path(slicer.util.tempDirectory()) / "run"
        progress = []
        run = logic.startTraining(SIMULATED, "x2ct-cnn", "tiny", 2, output,
                                  onProgress=lambda r: progress.append(r.step))
        summary = run.wait(timeout=300)
        self.assertEqual(summary["steps"], 2)
        self.assertTrue((pathlib.Path(summary["model"]) / "model.safetensors").is_file())
        self.assertIn("honest.psnr_db", summary["metrics"])
        self.assertEqual(progress[-1], 2)
        self.assertTrue(logic.resumableRun(output))
        rows = run.lossCurve.rows()
        self.assertEqual([row["step"] for row in rows], [1.0, 2.0])
        self.assertIn("loss", rows[0])
        self.assertEqual(run.lossCurve.chartNode.GetNumberOfPlotSeriesNodes(), len(rows[0]) - 1)
        self.delayDisplay("Two training steps ran in the background")
