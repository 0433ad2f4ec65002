"""A stock Slicer has none of torch, monai, PyYAML, geomloss, safetensors, einops, h5py: both modules must
still load, list the models, and show one install line; Install must confirm, get torch through the PyTorch
extension and pip-install the rest, then the panel reads what is now available.

The import tests run each module's whole import closure in a child Python in which those packages cannot be
imported (a ``sys.meta_path`` finder refuses them), with the real ``slicer`` package of slicer-core and
stand-ins only for Slicer's Qt layer. The install flow runs in this process with ``slicer.util``'s dialogs,
``pip_install`` and PyTorchUtils replaced by recorders that "install" small modules into a temporary folder.
"""

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

pytest.importorskip("slicer_core", reason="headless Slicer (slicer-core) is not installed")

import slicer  # noqa: E402
from X2CTReconstructionLib import dependencies  # noqa: E402

from x2ct.errors import X2CTError  # noqa: E402

pytestmark = pytest.mark.slicer

ROOT = Path(__file__).resolve().parents[2]
NOT_IN_SLICER = ("torch", "monai", "yaml", "geomloss", "safetensors", "einops", "h5py")

CHILD = textwrap.dedent('''
    import importlib, importlib.abc, json, pathlib, sys, types

    BLOCKED = set(sys.argv[1].split(","))

    class Unimportable(importlib.abc.MetaPathFinder):
        """What a stock Slicer's Python does for these packages."""
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Unimportable())
    root = pathlib.Path(sys.argv[2])
    sys.path[:0] = [str(root / "Testing" / "headless_slicer"), str(root / "X2CTReconstruction"),
                    str(root / "X2CTTraining")]
    import slicer  # the real package (slicer-core)
    from stand_ins import module, qt_layer

    class Combo:
        def __init__(self):
            self.items, self.currentIndex = [], -1
        count = property(lambda self: len(self.items))
        def addItem(self, text): self.addItems([text])
        def addItems(self, texts):
            self.items += list(texts)
            self.currentIndex = max(self.currentIndex, 0)
        def clear(self): self.items, self.currentIndex = [], -1
        def itemText(self, index): return self.items[index]
        def findText(self, text): return self.items.index(text) if text in self.items else -1
        def blockSignals(self, block): return False

    sys.modules.update(qt_layer(qt=module("qt", QTimer=object)))
    recon = importlib.import_module("X2CTReconstruction")
    training = importlib.import_module("X2CTTraining")
    from X2CTReconstructionLib import dependencies

    out = {"imported": sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)}
    bag = types.SimpleNamespace
    widget = recon.X2CTReconstructionWidget()
    widget.logic = recon.X2CTReconstructionLogic()
    widget.ui = bag(modelComboBox=Combo(), deviceComboBox=Combo())
    widget.fillChoices()
    widget._parameterNode = bag(model="back-projection", frontalXRay=None, lateralXRay=None, outputVolume=None,
                                extraViewNodes=[], extraViewAngles=[], device="auto", samples=1)
    out["reconstructProblems"] = widget.reconstructProblems()
    out["models"] = widget.ui.modelComboBox.items
    out["missingReconstruction"] = widget.logic.missingPackages()
    out["prompt"] = dependencies.promptText(dependencies.missing())

    panel = training.X2CTTrainingWidget()
    panel.logic = training.X2CTTrainingLogic()
    panel.ui = bag(methodComboBox=Combo(), initFromComboBox=Combo(), statusLabel=bag(text=""),
                   startButton=bag(enabled=True), cancelButton=bag(enabled=False),
                   datasetPathLineEdit=bag(enabled=True))
    panel._parameterNode = bag(datasetFolder=None, simulated=True, method="", preset="tiny", steps=2,
                               outputFolder=pathlib.Path(sys.argv[3]), resume=False, initFrom="")
    panel.fillMethods()
    panel.fillModels()  # as enter() does
    panel.updateStatus()
    out["startFrom"] = panel.ui.initFromComboBox.items
    out["trainingStatus"] = panel.ui.statusLabel.text
    out["startEnabled"] = panel.ui.startButton.enabled
    out["missingTraining"] = panel.logic.missingPackages()
    out["importedAfter"] = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
    print(json.dumps(out))
''')


def run_without(blocked, tmp_path) -> dict:
    """Both modules imported and their panels filled in a Python where ``blocked`` cannot be imported."""
    result = subprocess.run([sys.executable, "-c", CHILD, ",".join(blocked), str(ROOT), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stock_slicer_loads_both_modules_lists_the_models_and_shows_one_install_line(tmp_path):
    shown = run_without(NOT_IN_SLICER, tmp_path)
    assert shown["imported"] == [] and shown["importedAfter"] == []
    expected = ["torch", "monai", "einops", "geomloss", "safetensors", "h5py", "pyyaml"]
    assert shown["missingReconstruction"] == shown["missingTraining"] == expected
    prompt = shown["prompt"]
    assert prompt.startswith("X2CT needs Python packages that are not installed yet: " + ", ".join(expected))
    assert "Press Install" in prompt and "\n" not in prompt
    # the catalog needs no torch: the baseline and the shipped models are listed, Reconstruct says why it waits
    assert "back-projection" in shown["models"] and "x2ct-cnn-2v" in shown["models"]
    assert shown["reconstructProblems"][0] == prompt
    assert shown["trainingStatus"] == prompt and shown["startEnabled"] is False
    assert shown["startFrom"] == []  # listed once the packages are installed


def test_torch_without_monai_is_one_install_line_not_a_broken_panel(tmp_path):
    """Finding 4: with torch present, listing the methods imports monai; the panel must say so and stay usable."""
    shown = run_without(["monai"], tmp_path)
    assert shown["missingReconstruction"] == shown["missingTraining"] == ["monai"]
    assert shown["trainingStatus"] == shown["prompt"] and "monai" in shown["prompt"]
    assert shown["startEnabled"] is False and shown["reconstructProblems"][0] == shown["prompt"]


# --- the install flow ---------------------------------------------------------------------------


class Recorder:
    """slicer.util's dialogs and pip_install, and PyTorchUtils, as a user and the network would answer."""

    def __init__(self, site: Path, confirm=True, torch_result="module", pip_fails=None):
        self.site, self.confirm, self.torch_result, self.pip_fails = site, confirm, torch_result, pip_fails
        self.calls, self.errors = [], []

    def confirmOkCancelDisplay(self, text, windowTitle=None, **kwargs):
        self.calls.append(("confirm", text))
        return self.confirm

    def errorDisplay(self, text, windowTitle=None, **kwargs):
        self.errors.append(text)

    def pip_install(self, requirements):
        self.calls.append(("pip", requirements))
        spec, no_deps = requirements  # never let pip replace Slicer's numpy or the torch PyTorchUtils chose
        assert no_deps == "--no-deps"
        name = spec.split("=")[0]
        if name == self.pip_fails:
            raise subprocess.CalledProcessError(1, ["PythonSlicer", "-m", "pip", "install", spec])
        (self.site / f"{name}.py").write_text("")

    def pytorch_utils(self):
        recorder = self

        class PyTorchUtilsLogic:
            def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                             torchvisionVersionRequirement=None):
                recorder.calls.append(("torch", askConfirmation, torchVersionRequirement))
                if recorder.torch_result is None:
                    return None  # the user declined PyTorchUtils' own confirmation
                (recorder.site / "x2ct_fake_torch.py").write_text("")
                return types.ModuleType("torch")

        return types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic)


@pytest.fixture
def fake_packages(monkeypatch, tmp_path):
    """A requirements file of three absent packages (the first plays torch) and an empty folder on sys.path."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# pins\nx2ct_fake_torch==2.13.0\nx2ct_fake_monai==1.6.1; python_version >= '3.10'\n"
                            "x2ct_fake_monai==1.5.2; python_version < '3.10'\nx2ct_fake_yaml==6.0.3\n")
    monkeypatch.setattr(dependencies, "REQUIREMENTS_FILE", requirements)
    monkeypatch.setattr(dependencies, "TORCH", "x2ct_fake_torch")

    def use(recorder):
        for name in ("confirmOkCancelDisplay", "errorDisplay", "pip_install"):
            monkeypatch.setattr(slicer.util, name, getattr(recorder, name))
        monkeypatch.setitem(sys.modules, "PyTorchUtils", recorder.pytorch_utils())
        return recorder

    return types.SimpleNamespace(site=site, use=use)


def test_install_confirms_then_torch_through_pytorch_utils_then_pip_each_pin(fake_packages):
    recorder = fake_packages.use(Recorder(fake_packages.site))
    assert [r.pip for r in dependencies.missing()] == ["x2ct_fake_torch==2.13.0", "x2ct_fake_monai==1.6.1",
                                                       "x2ct_fake_yaml==6.0.3"]
    progress = []
    assert dependencies.install(onProgress=progress.append) is True
    kind, text = recorder.calls[0]
    assert kind == "confirm" and "x2ct_fake_torch==2.13.0  (through the PyTorch extension)" in text
    assert "x2ct_fake_monai==1.6.1" in text and "x2ct_fake_yaml==6.0.3" in text
    assert recorder.calls[1:] == [("torch", True, "==2.13.0"), ("pip", ["x2ct_fake_monai==1.6.1", "--no-deps"]),
                                  ("pip", ["x2ct_fake_yaml==6.0.3", "--no-deps"])]
    assert progress == ["Installing x2ct_fake_torch==2.13.0 (1 of 3)...", "Installing x2ct_fake_monai==1.6.1 (2 of 3)...",
                        "Installing x2ct_fake_yaml==6.0.3 (3 of 3)..."]
    assert dependencies.missing() == [] and dependencies.install() is True  # nothing left: no dialog again
    assert len(recorder.calls) == 4


@pytest.mark.parametrize("declined", ["our dialog", "PyTorchUtils' dialog"])
def test_declining_installs_nothing_more(fake_packages, declined):
    recorder = fake_packages.use(Recorder(fake_packages.site, confirm=declined != "our dialog",
                                          torch_result=None if declined != "our dialog" else "module"))
    assert dependencies.install() is False
    assert not [call for call in recorder.calls if call[0] == "pip"]
    assert len(dependencies.missing()) == 3


def test_without_the_pytorch_extension_install_says_where_to_get_it(fake_packages, monkeypatch):
    fake_packages.use(Recorder(fake_packages.site))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import PyTorchUtils raises ImportError
    with pytest.raises(X2CTError, match="install 'PyTorch' in View > Extensions Manager"):
        dependencies.install()


def test_prompt_shows_what_is_missing_and_survives_a_failed_install(fake_packages, monkeypatch):
    """The panel line: shown with the missing names, a pip failure is a message box, the line stays true."""
    recorder = fake_packages.use(Recorder(fake_packages.site, pip_fails="x2ct_fake_yaml"))
    bag = types.SimpleNamespace
    ui = bag(installLabel=bag(text=""), installButton=bag(enabled=True), installPromptFrame=bag(visible=False))
    shown = []  # what the line says while installing (slicer.app is Qt's: a stand-in records each repaint)
    monkeypatch.setattr(slicer, "app", bag(processEvents=lambda: shown.append(ui.installLabel.text)), raising=False)
    refreshed = []
    prompt = dependencies.InstallPrompt(ui, onInstalled=lambda: refreshed.append(True))
    assert prompt.refresh().startswith("X2CT needs Python packages that are not installed yet: x2ct_fake_torch, "
                                       "x2ct_fake_monai, x2ct_fake_yaml.")
    assert ui.installPromptFrame.visible and ui.installLabel.text == prompt.text
    prompt.onInstall()
    assert shown == [f"Installing {name} ({i} of 3)..." for i, name in enumerate(
        ["x2ct_fake_torch==2.13.0", "x2ct_fake_monai==1.6.1", "x2ct_fake_yaml==6.0.3"], start=1)]
    assert len(recorder.errors) == 1 and "pip could not install x2ct_fake_yaml==6.0.3" in recorder.errors[0]
    assert ui.installLabel.text.startswith("X2CT needs Python packages that are not installed yet: x2ct_fake_yaml.")
    assert ui.installPromptFrame.visible and ui.installButton.enabled and refreshed == [True]
    (fake_packages.site / "x2ct_fake_yaml.py").write_text("")  # installed by hand from the console
    assert prompt.refresh() == "" and not ui.installPromptFrame.visible


def test_an_import_error_below_the_requirements_names_the_module(monkeypatch, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy>=1\n")  # everything required is present...
    monkeypatch.setattr(dependencies, "REQUIREMENTS_FILE", requirements)
    text = dependencies.importProblem(ModuleNotFoundError("No module named 'x2ct_gone'", name="x2ct_gone"))
    assert "x2ct_gone" in text and "slicer.util.pip_install" in text  # ... so the line names what failed


# --- catalog refresh and Import model (finding 12) ----------------------------------------------


class _Combo:
    def __init__(self):
        self.items, self.currentIndex = [], -1

    count = property(lambda self: len(self.items))

    def addItem(self, text):
        self.items.append(text)
        self.currentIndex = max(self.currentIndex, 0)

    def addItems(self, texts):
        for text in texts:
            self.addItem(text)

    def clear(self):
        self.items, self.currentIndex = [], -1

    def itemText(self, index):
        return self.items[index]

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1

    def blockSignals(self, block):
        return False


@pytest.fixture
def reconstruction_panel(monkeypatch, tmp_path):
    """The Reconstruction widget with stand-in widgets, a user models folder and a recording install line."""
    from stand_ins import module, qt_layer

    chosen = []
    file_dialog = types.SimpleNamespace(getExistingDirectory=lambda *args: chosen.pop(0))
    for name, stand_in in qt_layer(qt=module("qt", QTimer=object, QFileDialog=file_dialog)).items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    monkeypatch.setenv("X2CT_MODELS", str(tmp_path / "models"))
    shown = []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *args, **kwargs: shown.append(text))
    monkeypatch.setitem(sys.modules, "X2CTReconstruction", None)  # whatever was there comes back at teardown
    del sys.modules["X2CTReconstruction"]
    import X2CTReconstruction

    widget = X2CTReconstruction.X2CTReconstructionWidget()
    widget.logic = X2CTReconstruction.X2CTReconstructionLogic()
    bag = types.SimpleNamespace
    widget.ui = bag(modelComboBox=_Combo(), deviceComboBox=_Combo(), statusLabel=bag(text=""))
    widget.installPrompt = bag(refreshed=0)
    widget.installPrompt.refresh = lambda: setattr(widget.installPrompt, "refreshed", widget.installPrompt.refreshed + 1)
    widget.initializeParameterNode = lambda: None  # the parameter node needs Slicer's Qt layer
    widget.fillChoices()
    return types.SimpleNamespace(widget=widget, chosen=chosen, shown=shown, models=tmp_path / "models")


def test_entering_the_panel_reads_the_catalog_again(reconstruction_panel):
    import shutil

    widget = reconstruction_panel.widget
    assert "my-model" not in widget.ui.modelComboBox.items
    shutil.copytree(ROOT / "Resources" / "Models" / "x2ct-cnn-2v", reconstruction_panel.models / "my-model")
    widget.enter()  # e.g. imported from the Python console while the panel was hidden
    assert "my-model" in widget.ui.modelComboBox.items and widget.installPrompt.refreshed == 1


def test_import_model_without_its_packages_is_a_message_not_an_exception(reconstruction_panel, monkeypatch,
                                                                         tmp_path):
    widget = reconstruction_panel.widget

    def needs_safetensors(folder, modelId=None):
        raise ModuleNotFoundError("No module named 'safetensors'", name="safetensors")

    monkeypatch.setattr(widget.logic, "importModel", needs_safetensors)
    reconstruction_panel.chosen.append(str(tmp_path))
    widget.onImportModel()
    (message,) = reconstruction_panel.shown
    assert message.startswith("Model not imported: ") and "safetensors" in message
    assert widget.ui.statusLabel.text == message


def test_training_panel_lists_the_methods_right_after_install(monkeypatch, tmp_path):
    """No restart: once Install has added the packages, the methods appear and Start can be enabled."""
    from stand_ins import qt_layer

    for name, stand_in in qt_layer().items():
        monkeypatch.setitem(sys.modules, name, stand_in)
    monkeypatch.setitem(sys.modules, "X2CTTraining", None)  # whatever was there comes back at teardown
    del sys.modules["X2CTTraining"]
    import X2CTTraining

    absent = [dependencies.Requirement("monai", "==1.6.1", "monai")]
    monkeypatch.setattr(dependencies, "missing", lambda path=None: list(absent))
    panel = X2CTTraining.X2CTTrainingWidget()
    panel.logic = X2CTTraining.X2CTTrainingLogic()
    bag = types.SimpleNamespace
    combo, models = _Combo(), _Combo()
    panel.ui = bag(methodComboBox=combo, initFromComboBox=models, statusLabel=bag(text=""),
                   startButton=bag(enabled=True), cancelButton=bag(enabled=False),
                   datasetPathLineEdit=bag(enabled=True))
    panel._parameterNode = bag(datasetFolder=None, simulated=True, method="", preset="tiny", steps=2,
                               outputFolder=tmp_path / "run", resume=False, initFrom="")
    panel.fillMethods()
    panel.updateStatus()
    assert combo.count == 0 and panel.ui.startButton.enabled is False and "monai" in panel.ui.statusLabel.text
    absent.clear()  # what Install did
    panel.onDependenciesInstalled()
    assert "x2ct-cnn" in combo.items and panel._parameterNode.method == combo.items[0]
    assert models.items[0] == X2CTTraining.RANDOM_WEIGHTS and "x2ct-cnn-2v" in models.items
    assert "monai" not in panel.ui.statusLabel.text
