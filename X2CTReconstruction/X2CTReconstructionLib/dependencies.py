"""The Python packages X2CT needs inside 3D Slicer: which are missing, and installing them on first use.

Slicer bundles numpy, scipy, SimpleITK, pydicom and Pillow but not PyTorch,
MONAI and the rest, so nothing else is imported when the modules load: each
panel shows one line naming what is missing, with an Install button (both
panels use this file). Installing does what extensions such as
MONAIAuto3DSeg and TotalSegmentator do: one confirmation, PyTorch through the
PyTorch extension's ``PyTorchUtilsLogic.installTorch`` (it picks the CUDA
build that matches the driver, or the CPU build), then
``slicer.util.pip_install`` of each other package, so that progress can be
shown. pip runs with ``--no-deps``: the packages' own requirements are
numpy (bundled) and torch (installed first), and pip must never replace
Slicer's numpy or the torch build PyTorchUtils chose. A package that is
already importable is left as it is: another extension may rely on its version.

The pins come from ``Resources/requirements.txt``, a copy of pyproject.toml's
(``Testing/core/test_requirements.py`` keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import subprocess
from pathlib import Path

from x2ct.errors import X2CTError

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
PROMPT_UI = Path(__file__).resolve().parents[1] / "Resources" / "UI" / "X2CTInstallPrompt.ui"
#: Distributions imported under another name.
IMPORT_NAMES = {"pyyaml": "yaml"}
TORCH = "torch"


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One package to install: its pip name, version specifier and import name."""

    name: str
    specifier: str
    module: str

    @property
    def pip(self) -> str:
        return self.name + self.specifier


def requirements(path: Path | None = None) -> list[Requirement]:
    """The requirements that apply to this Python (environment markers evaluated), in file order."""
    from packaging.requirements import Requirement as Parsed  # bundled with Slicer (PythonQt needs it)

    found = []
    for line in (path or REQUIREMENTS_FILE).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parsed = Parsed(line)
        if parsed.marker is None or parsed.marker.evaluate():
            name = parsed.name.lower()
            found.append(Requirement(name, str(parsed.specifier), IMPORT_NAMES.get(name, name)))
    return found


def missing(path: Path | None = None) -> list[Requirement]:
    """The requirements whose package cannot be found by Python's importer here (nothing is imported)."""
    importlib.invalidate_caches()
    return [requirement for requirement in requirements(path) if not _findable(requirement.module)]


def promptText(missingRequirements: list[Requirement]) -> str:
    """The one line a panel shows while packages are missing; empty when none is."""
    if not missingRequirements:
        return ""
    names = ", ".join(requirement.name for requirement in missingRequirements)
    torch = any(requirement.name == TORCH for requirement in missingRequirements)
    size = " (PyTorch is a download of several hundred MB)" if torch else ""
    return (f"X2CT needs Python packages that are not installed yet: {names}. Press Install to add them to "
            f"Slicer's Python{size}.")


def importProblem(error: ImportError) -> str:
    """The panel line for an ImportError met while reading models or methods: the install prompt when a
    required package is missing, else what failed and how to repair it."""
    text = promptText(missing())
    if text:
        return text
    return (f"A Python package X2CT uses cannot be imported ({error}). Press Install again if it was being "
            "installed, or restart 3D Slicer; if it persists, reinstall that package from the Python console "
            "with slicer.util.pip_install.")


def confirmationText(missingRequirements: list[Requirement]) -> str:
    """What the confirmation dialog says before anything is downloaded."""
    lines = [f"  {requirement.pip}" + ("  (through the PyTorch extension)" if requirement.name == TORCH else "")
             for requirement in missingRequirements]
    return ("X2CT will download and install these Python packages into 3D Slicer:\n" + "\n".join(lines)
            + "\n\nThis can take several minutes; Slicer shows pip's output in the Python console.")


def install(onProgress=None, confirm: bool = True) -> bool:
    """Install every missing package; True when all are then importable, False when the user declined.

    ``onProgress(text)`` is called before each package. A failed step raises
    X2CTError with one line saying what to do (pip's own output is in the
    Python console); what was installed before it stays installed.
    """
    import slicer

    todo = missing()
    if not todo:
        return True
    if confirm and not slicer.util.confirmOkCancelDisplay(confirmationText(todo), windowTitle="X2CT"):
        return False
    for index, requirement in enumerate(sorted(todo, key=lambda r: r.name != TORCH), start=1):
        if onProgress is not None:
            onProgress(f"Installing {requirement.pip} ({index} of {len(todo)})...")
        if requirement.name == TORCH:
            if not _install_torch(requirement):
                return False
            continue
        try:
            slicer.util.pip_install([requirement.pip, "--no-deps"])
        except (subprocess.CalledProcessError, RuntimeError, OSError) as error:
            raise X2CTError(f"pip could not install {requirement.pip} ({error}). Check the network connection "
                            "and pip's output in the Python console, then press Install again.") from None
    left = missing()
    if left:
        raise X2CTError(f"{', '.join(r.name for r in left)} still cannot be found after installing; restart "
                        "3D Slicer and open the module again.")
    logging.info("X2CT: installed %s", ", ".join(requirement.pip for requirement in todo))
    return True


class InstallPrompt:
    """The panel's install line: a label naming the missing packages and an Install button.

    ``ui`` holds ``installPromptFrame``, ``installLabel`` and ``installButton``
    (``X2CTInstallPrompt.ui``, added by ``addInstallPrompt``). ``onInstalled()``
    lets the panel re-read what the new packages make available.
    """

    def __init__(self, ui, onInstalled=None) -> None:
        self.ui = ui
        self.onInstalled = onInstalled
        self.text = ""

    def refresh(self) -> str:
        """Show or hide the line for what is missing now; return the line ("" when nothing is missing)."""
        self.text = promptText(missing())
        self.ui.installLabel.text = self.text
        self.ui.installButton.enabled = True
        self.ui.installPromptFrame.visible = bool(self.text)
        return self.text

    def onInstall(self) -> None:
        """Install after confirmation, showing progress on the line; a failure is shown, never raised."""
        import slicer

        self.ui.installButton.enabled = False
        try:
            install(onProgress=self.showProgress)
        except X2CTError as error:
            slicer.util.errorDisplay(str(error), windowTitle="X2CT")
        except Exception as error:  # noqa: BLE001  (PyTorchUtils and pip raise many kinds; the panel must survive)
            logging.exception("X2CT: installing Python packages failed")
            slicer.util.errorDisplay(f"Installing the Python packages failed: {error}", windowTitle="X2CT")
        self.refresh()
        if self.onInstalled is not None:
            self.onInstalled()

    def showProgress(self, text: str) -> None:
        import slicer

        self.ui.installLabel.text = text
        slicer.app.processEvents()


def addInstallPrompt(layout, onInstalled=None) -> InstallPrompt:
    """Load the install line into a panel's layout (Slicer's GUI), wired and refreshed."""
    import slicer

    widget = slicer.util.loadUI(str(PROMPT_UI))
    layout.addWidget(widget)
    prompt = InstallPrompt(slicer.util.childWidgetVariables(widget), onInstalled)
    prompt.ui.installButton.connect("clicked(bool)", lambda checked=False: prompt.onInstall())
    prompt.refresh()
    return prompt


def _install_torch(requirement: Requirement) -> bool:
    """PyTorch through the PyTorch extension (it asks for confirmation); False when the user declined."""
    try:
        import PyTorchUtils
    except ImportError:
        raise X2CTError("PyTorch is installed through the PyTorch extension, which is missing: install "
                        "'PyTorch' in View > Extensions Manager, restart 3D Slicer, then press Install "
                        "again.") from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                          torchVersionRequirement=requirement.specifier)
    return torch is not None


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked package counts as missing
        return False
