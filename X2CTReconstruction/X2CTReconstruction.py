"""3D Slicer module: reconstruct a CT volume from one or two X-ray images.

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

from typing import Annotated  # noqa: E402

import qt  # noqa: E402
import slicer  # noqa: E402
import vtk  # noqa: E402
from slicer import vtkMRMLScalarVolumeNode  # noqa: E402
from slicer.i18n import tr as _  # noqa: E402
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper  # noqa: E402
from slicer.ScriptedLoadableModule import (  # noqa: E402
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin  # noqa: E402
from X2CTReconstructionLib.logic import ReconstructionLogic  # noqa: E402

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


class X2CTReconstruction(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and help."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("X2CT Reconstruction")
        self.parent.categories = ["X2CT"]
        self.parent.dependencies = []
        self.parent.contributors = ["X2CT developers"]
        self.parent.helpText = _(
            "Reconstruct a 3D CT volume from a frontal X-ray, optionally with a lateral one, using deep "
            "networks trained on CT data. Load the radiographs with the <b>Load file</b> buttons (DICOM "
            "CR/DX, PNG/JPEG/TIFF, NRRD/MHA): they keep their pixel spacing and orientation, and MONOCHROME1 "
            "images are inverted so bone is bright. A ground-truth CT, when you have one, is used for "
            "comparison only.<br><b>Research use only, not for diagnosis.</b>"
        )
        self.parent.acknowledgementText = _(
            "The reconstruction methods follow these papers:" + PAPERS
            + "Built on PyTorch, MONAI, SimpleITK and pydicom."
        )


@parameterNodeWrapper
class X2CTReconstructionParameterNode:
    """The panel's state, saved with the scene."""

    frontalXRay: vtkMRMLScalarVolumeNode
    lateralXRay: vtkMRMLScalarVolumeNode
    groundTruthVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"


class X2CTReconstructionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and calls the logic; no processing here."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/X2CTReconstruction.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = X2CTReconstructionLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadFrontalButton.connect("clicked(bool)", lambda: self.onLoadXRay("frontal"))
        self.ui.loadLateralButton.connect("clicked(bool)", lambda: self.onLoadXRay("lateral"))
        self.ui.loadGroundTruthButton.connect("clicked(bool)", self.onLoadGroundTruth)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
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

    def updateStatus(self, caller=None, event=None) -> None:
        """Say what is missing or wrong with the inputs."""
        parameters = self._parameterNode
        problems = self.logic.inputProblems(parameters.frontalXRay, parameters.lateralXRay,
                                            parameters.groundTruthVolume)
        if self.ui.modelComboBox.count == 0:
            problems.append(_("No trained model is installed."))
        self.ui.statusLabel.text = "\n".join(problems) or _("Inputs are ready.")

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


class X2CTReconstructionLogic(ScriptedLoadableModuleLogic, ReconstructionLogic):
    """Slicer's module logic: the parameter node, plus everything in ReconstructionLogic."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        ReconstructionLogic.__init__(self)

    def getParameterNode(self):
        return X2CTReconstructionParameterNode(super().getParameterNode())


class X2CTReconstructionTest(ScriptedLoadableModuleTest):
    """Self-test run by Slicer (Reload and Test, ctest): loads files through the logic into the scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_LoadXRayAndCT()
        self.setUp()
        self.test_InputProblems()

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
