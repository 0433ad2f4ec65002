"""Stand-ins for the four parts of Slicer's Qt layer that slicer-core lacks.

``qt``, ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and
``slicer.ScriptedLoadableModule`` are replaced (with ``monkeypatch.setitem``
on ``sys.modules``) while a test imports a module file, so that the module's
own Logic, Widget methods and self-test run against the real headless scene.
"""

import types


def module(name: str, **attributes) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__dict__.update(attributes)
    return made


class PlainLogic:
    """ScriptedLoadableModuleLogic without its parameter node."""

    def __init__(self, parent=None):
        super().__init__()


class PlainWidget:
    """ScriptedLoadableModuleWidget without its Qt panel."""

    def __init__(self, parent=None):
        self.parent = parent


def qt_layer(qt=None, logic=PlainLogic, widget=PlainWidget, test=None) -> dict[str, types.ModuleType]:
    """``sys.modules`` entries for the Qt layer; the parameter node wrapper leaves a class as it is."""
    return {
        "qt": qt or module("qt"),
        "slicer.i18n": module("slicer.i18n", tr=lambda text: text),
        "slicer.parameterNodeWrapper": module(
            "slicer.parameterNodeWrapper", Choice=lambda choices: tuple(choices),
            WithinRange=lambda low, high: (low, high), parameterNodeWrapper=lambda cls: (lambda node: node)),
        "slicer.ScriptedLoadableModule": module(
            "slicer.ScriptedLoadableModule", ScriptedLoadableModule=type("Module", (), {}),
            ScriptedLoadableModuleWidget=widget, ScriptedLoadableModuleLogic=logic,
            ScriptedLoadableModuleTest=test or type("Test", (), {})),
    }
