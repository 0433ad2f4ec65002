"""The X2CT Training panel's method and start-from choices, without Slicer's Qt layer.

The method and model combo boxes are filled when the panel opens (listing
the methods imports PyTorch; models come from the catalog), so the parameter
node's ``method`` and ``initFrom`` are synchronised by hand: a choice saved
with the scene must survive the filling, and a pick in a box must reach the
node that the Start button reads.
"""

import ast
import importlib
import sys
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")
pytest.importorskip("trame_slicer.core", reason="trame-slicer is not installed")

from stand_ins import qt_layer  # noqa: E402

pytestmark = pytest.mark.slicer

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "X2CTTraining" / "X2CTTraining.py"
UI_FILE = ROOT / "X2CTTraining" / "Resources" / "UI" / "X2CTTraining.ui"


def test_every_parameter_is_bound_to_a_widget_or_synchronised_by_hand():
    tree = ast.parse(MODULE_FILE.read_text())
    (wrapper,) = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                  and node.name == "X2CTTrainingParameterNode"]
    fields = {item.target.id for item in wrapper.body if isinstance(item, ast.AnnAssign)}
    bound = {prop[0].text for prop in ElementTree.parse(UI_FILE).iter("property")
             if prop.get("name") == "SlicerParameterName"}
    assert bound | {"method", "initFrom"} == fields and not bound & {"method", "initFrom"}


class _Combo:
    """Stand-in for QComboBox: adding to an empty box selects the first item and signals it (unless blocked)."""

    def __init__(self, onChange):
        self.items, self.currentIndex, self.blocked, self.onChange = [], -1, False, onChange
        self.enabled = True

    @property
    def count(self):
        return len(self.items)

    def addItems(self, texts):
        self.items += texts
        if self.currentIndex < 0 and self.items:
            self.currentIndex = 0
            if not self.blocked:
                self.onChange(0)

    def clear(self):
        self.items, self.currentIndex = [], -1
        if not self.blocked:
            self.onChange(-1)

    def itemText(self, index):
        return self.items[index]

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def blockSignals(self, block):
        was, self.blocked = self.blocked, block
        return was

    def pick(self, text):
        """What a user's click does: select, then signal."""
        self.currentIndex = self.items.index(text)
        self.onChange(self.currentIndex)


@pytest.fixture
def training(monkeypatch, scene):
    for name, stand_in in qt_layer().items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    yield importlib.import_module("X2CTTraining")
    sys.modules.pop("X2CTTraining", None)


def make_widget(training, tmp_path, method="", initFrom=""):
    """A panel whose parameter node (as saved with a scene) holds ``method`` and ``initFrom``; its combo boxes
    still empty."""
    widget = training.X2CTTrainingWidget()
    widget.logic = training.X2CTTrainingLogic()
    bag = types.SimpleNamespace
    widget.ui = bag(methodComboBox=_Combo(widget.onMethodChanged), initFromComboBox=_Combo(widget.onInitFromChanged),
                    statusLabel=bag(text=""),
                    startButton=bag(enabled=False), cancelButton=bag(enabled=False),
                    datasetPathLineEdit=bag(enabled=True))
    widget._parameterNode = bag(datasetFolder=None, simulated=True, method=method, preset="tiny", steps=2,
                                outputFolder=tmp_path / "run", resume=False, initFrom=initFrom)
    return widget


def test_a_saved_method_survives_the_filling_of_the_box(training, tmp_path):
    widget = make_widget(training, tmp_path, method="henzler")
    widget.fillMethods()
    combo = widget.ui.methodComboBox
    assert combo.count > 1 and combo.itemText(combo.currentIndex) == "henzler"
    assert widget._parameterNode.method == "henzler" and widget.settings()[1] == "henzler"
    assert widget.ui.startButton.enabled and widget.ui.statusLabel.text == "Set-up is complete."


def test_no_saved_method_takes_the_first_and_a_pick_reaches_the_node(training, tmp_path):
    widget = make_widget(training, tmp_path)
    widget.fillMethods()
    combo = widget.ui.methodComboBox
    assert widget._parameterNode.method == combo.itemText(0) and combo.currentIndex == 0

    combo.pick("x2ct-gan")
    assert widget._parameterNode.method == "x2ct-gan" and widget.settings()[1] == "x2ct-gan"
    widget.updateStatus()
    assert combo.itemText(combo.currentIndex) == "x2ct-gan"


def test_an_unknown_saved_method_disables_start_with_the_reason(training, tmp_path):
    widget = make_widget(training, tmp_path, method="retired-method")
    widget.fillMethods()
    assert widget._parameterNode.method == "retired-method"
    assert not widget.ui.startButton.enabled
    assert "Choose a method" in widget.ui.statusLabel.text and "'retired-method'" in widget.ui.statusLabel.text


def test_picking_a_model_to_fine_tune_takes_its_network_and_reaches_start(training, tmp_path, monkeypatch):
    widget = make_widget(training, tmp_path, method="x2ct-gan")
    widget.fillMethods()
    widget.fillModels()
    box = widget.ui.initFromComboBox
    assert box.items[0] == training.RANDOM_WEIGHTS and "henzler-1v" in box.items
    assert "back-projection" not in box.items  # a built-in has no weights to start from
    assert box.currentIndex == 0 and widget._parameterNode.initFrom == ""

    box.pick("henzler-1v")
    node = widget._parameterNode
    assert (node.initFrom, node.method, node.preset) == ("henzler-1v", "henzler", "small")
    widget.updateStatus()
    assert widget.ui.methodComboBox.itemText(widget.ui.methodComboBox.currentIndex) == "henzler"
    assert widget.ui.startButton.enabled, widget.ui.statusLabel.text
    started = []
    monkeypatch.setattr(widget.logic, "startTraining", lambda *args, **kwargs: started.append((args, kwargs))
                        or _fake_run())
    widget.timer = types.SimpleNamespace(start=lambda: None)
    widget.ui.progressBar = types.SimpleNamespace(value=None, format="")
    widget.onStart()
    ((args, kwargs),) = started
    assert args[1:3] == ("henzler", "small") and kwargs["initFrom"] == "henzler-1v"

    box.pick(training.RANDOM_WEIGHTS)
    assert node.initFrom == "" and widget.settings()[6] is None


def test_a_saved_model_that_is_gone_disables_start_and_resume_turns_the_box_off(training, tmp_path):
    widget = make_widget(training, tmp_path, method="henzler", initFrom="deleted-model")
    widget.fillMethods()
    widget.fillModels()
    assert widget._parameterNode.initFrom == "deleted-model"  # refilling the box kept the saved choice
    assert not widget.ui.startButton.enabled
    assert "'deleted-model' is neither a model folder nor a usable model id" in widget.ui.statusLabel.text
    assert widget.ui.initFromComboBox.enabled

    widget._parameterNode.resume = True
    widget.updateStatus()
    assert not widget.ui.initFromComboBox.enabled
    assert "deleted-model" not in widget.ui.statusLabel.text  # a resumed run keeps its own config


class _SingleShot:
    def __init__(self):
        self.starts = 0

    def start(self):
        self.starts += 1


def test_typing_a_dataset_path_only_restarts_the_check_timer(training, tmp_path, monkeypatch):
    """A keystroke in the path field modifies the parameter node: the set-up (which looks into the dataset
    folder) is checked when the timer fires after the typing pauses, never on the keystroke itself."""
    widget = make_widget(training, tmp_path)
    widget.statusTimer = _SingleShot()
    monkeypatch.setattr(widget.logic, "settingsProblems", lambda *args: pytest.fail("checked on a keystroke"))
    for _ in range(3):
        widget.onParameterModified()
    assert widget.statusTimer.starts == 3
    source = MODULE_FILE.read_text()
    assert 'self.statusTimer.connect("timeout()", self.updateStatus)' in source
    assert "self.statusTimer.setSingleShot(True)" in source


def test_cancel_asks_the_run_to_stop_without_waiting(training, tmp_path):
    widget = make_widget(training, tmp_path)
    calls = []
    widget.run = types.SimpleNamespace(finished=False, cancel=lambda wait=True: calls.append(wait))
    widget.onCancel()
    assert calls == [False] and widget.ui.statusLabel.text == "Cancelling..."


@pytest.mark.parametrize("answer", [True, False])
def test_start_over_a_stopped_run_asks_before_deleting_its_files(training, tmp_path, monkeypatch, answer):
    widget = make_widget(training, tmp_path, method="x2ct-cnn")
    asked, started = [], []
    monkeypatch.setattr(widget.logic, "stoppedRunFiles", lambda folder: ["log.csv", "tensorboard"])
    monkeypatch.setattr(widget.logic, "startTraining",
                        lambda *args, **kwargs: started.append(kwargs["overwrite"]) or _fake_run())
    monkeypatch.setattr(training.slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kwargs: asked.append(text) or answer)
    widget.timer = types.SimpleNamespace(start=lambda: None)
    widget.ui.progressBar = types.SimpleNamespace(value=None, format="")
    widget.onStart()
    assert len(asked) == 1 and "stopped before its first checkpoint (log.csv, tensorboard)" in asked[0]
    assert started == ([True] if answer else [])
    if not answer:
        assert widget.ui.statusLabel.text == "Not started: the stopped run's files are kept."


def _fake_run():
    return types.SimpleNamespace(lossCurve=None, finished=False)
