"""Static checks of the Slicer extension: CMake lists, .ui widget names, import rules.

No Slicer needed: the files are parsed. A forgotten file in MODULE_PYTHON_SCRIPTS
(missing from the packaged extension), a widget name the code uses but the .ui
lacks, or a Qt import in the headless library fails here. When ``cmake`` is
installed the top-level CMakeLists.txt is also configured against a stand-in
Slicer package that records what each Slicer macro receives.
"""

import ast
import re
import shutil
import subprocess
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cmake_commands(path: Path, command: str) -> list[list[str]]:
    """Arguments of every ``command(...)`` call in a CMake file (comments dropped, no nesting)."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    return [match.split() for match in re.findall(rf"\b{command}\s*\(([^)]*)\)", text, flags=re.IGNORECASE)]


def module_dirs() -> list[Path]:
    return [ROOT / args[0] for args in cmake_commands(ROOT / "CMakeLists.txt", "add_subdirectory")]


def cmake_list(module: Path, variable: str, required: bool = True) -> set[str]:
    """Files of ``set(<variable> ...)`` in a module's CMakeLists.txt, ${MODULE_NAME} expanded."""
    calls = [args[1:] for args in cmake_commands(module / "CMakeLists.txt", "set") if args[0] == variable]
    if not calls and not required:
        return set()
    (values,) = calls
    return {value.replace("${MODULE_NAME}", module.name) for value in values}


def core_headless_only() -> set[Path]:
    """Core files kept out of the packaged extension (``X2CT_CORE_HEADLESS_ONLY``; a folder ends with /)."""
    (values,) = [args[1:] for args in cmake_commands(ROOT / "CMakeLists.txt", "set") if args[0] == "X2CT_CORE_HEADLESS_ONLY"]
    found = set()
    for value in values:
        found |= set((ROOT / value).rglob("*.py")) if value.endswith("/") else {ROOT / value}
    return {p for p in found if "__pycache__" not in p.parts}


def files_under(folder: Path, pattern: str) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.glob(pattern)
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}


def test_top_level_adds_every_module_and_declares_the_extension():
    with_module_file = {p.parent for p in ROOT.glob("*/CMakeLists.txt") if (p.parent / f"{p.parent.name}.py").is_file()}
    assert set(module_dirs()) == with_module_file == {ROOT / "X2CTReconstruction", ROOT / "X2CTTraining"}
    top = (ROOT / "CMakeLists.txt").read_text()
    assert cmake_commands(ROOT / "CMakeLists.txt", "project") == [["X2CT"]]
    assert ['EXTENSION_DEPENDS', '"PyTorch"'] in cmake_commands(ROOT / "CMakeLists.txt", "set")
    for needed in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in top
    assert (ROOT / "Resources/Icons/X2CT.png").is_file()


@pytest.mark.parametrize("module", ["X2CTReconstruction", "X2CTTraining"])
def test_every_python_file_and_resource_of_a_module_is_listed(module):
    folder = ROOT / module
    installed = cmake_list(folder, "MODULE_PYTHON_SCRIPTS")
    headless_only = cmake_list(folder, "MODULE_HEADLESS_ONLY_SCRIPTS", required=False)
    assert installed | headless_only == files_under(folder, "**/*.py") and not installed & headless_only
    assert cmake_list(folder, "MODULE_PYTHON_RESOURCES") == files_under(folder, "Resources/**/*")
    text = (folder / "CMakeLists.txt").read_text()
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


STAND_IN_SLICER = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/Metadata.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/Empty.cmake)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
"""
STAND_IN_MACROS = """
set(_record ${CMAKE_BINARY_DIR}/record.txt)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f IN LISTS M_SCRIPTS M_RESOURCES)
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "listed file ${f} does not exist")
    endif()
    file(APPEND ${_record} "module ${M_NAME} ${f}\\n")
  endforeach()
endmacro()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(C "NO_INSTALL_SUBDIR" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
                        "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f IN LISTS C_SCRIPTS)
    file(APPEND ${_record} "core ${C_TARGET_NAME} ${C_SOURCE_DIR}/${f} ${C_INSTALL_DIR}/${f}\\n")
  endforeach()
  foreach(f IN LISTS C_RESOURCES)
    file(APPEND ${_record} "resource ${C_TARGET_NAME} ${C_SOURCE_DIR}/${f} ${C_INSTALL_DIR}/${f}\\n")
  endforeach()
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""
#: Records the extension metadata the index receives, as Slicer's extension config does.
STAND_IN_METADATA = """
foreach(var EXTENSION_HOMEPAGE EXTENSION_ICONURL EXTENSION_LICENSE_FILE EXTENSION_README_FILE)
  file(APPEND ${CMAKE_BINARY_DIR}/record.txt "meta ${var} ${${var}} -\\n")
endforeach()
"""
REPOSITORY = "https://github.com/example-owner/x2ct"


def configure(tmp_path, *arguments):
    """Run cmake on the repository against the stand-in Slicer; return the completed process and build folder."""
    stand_in = tmp_path / "Slicer"
    stand_in.mkdir(exist_ok=True)
    (stand_in / "SlicerConfig.cmake").write_text(STAND_IN_SLICER)
    (stand_in / "UseSlicer.cmake").write_text(STAND_IN_MACROS)
    (stand_in / "Metadata.cmake").write_text(STAND_IN_METADATA)
    (stand_in / "Empty.cmake").write_text("")
    build = tmp_path / "build"
    result = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stand_in}", *arguments],
                            capture_output=True, text=True, timeout=120)
    return result, build


needs_cmake = pytest.mark.skipif(not all(shutil.which(tool) for tool in ("cmake", "cc", "c++")),
                                 reason="cmake or a C/C++ compiler (needed by project()) is not installed")


@needs_cmake
def test_cmake_configures_and_installs_the_core_next_to_the_modules(tmp_path):
    result, build = configure(tmp_path, f"-DX2CT_REPOSITORY_URL={REPOSITORY}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split() for line in (build / "record.txt").read_text().splitlines()]

    meta = {line[1]: " ".join(line[2:-1]) for line in lines if line[0] == "meta"}
    assert meta["EXTENSION_HOMEPAGE"] == f"{REPOSITORY}#readme"
    assert meta["EXTENSION_ICONURL"] == f"{REPOSITORY}/raw/main/Resources/Icons/X2CT.png"
    assert (ROOT / meta["EXTENSION_ICONURL"].removeprefix(f"{REPOSITORY}/raw/main/")).is_file()
    assert Path(meta["EXTENSION_LICENSE_FILE"]) == ROOT / "LICENSE"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and 'license = { text = "Apache-2.0" }' in \
        (ROOT / "pyproject.toml").read_text()
    assert Path(meta["EXTENSION_README_FILE"]) == ROOT / "README.md"

    for module in module_dirs():
        recorded = {f for kind, name, f, *_ in lines if kind == "module" and name == module.name}
        assert recorded == cmake_list(module, "MODULE_PYTHON_SCRIPTS") | cmake_list(module, "MODULE_PYTHON_RESOURCES")
    core = {(Path(source), install) for kind, _name, source, install in (line for line in lines if line[0] == "core")}
    expected = {p for p in (ROOT / "x2ct").rglob("*.py") if "__pycache__" not in p.parts} - core_headless_only()
    assert {source for source, _ in core} == expected
    assert all(install.startswith("lib/Slicer/qt-scripted-modules/x2ct/") for _, install in core)
    # x2ct.catalog finds the shipped models in Resources/Models next to the installed core
    resources = {install for kind, _name, _source, install in (line for line in lines if line[0] == "resource")}
    shipped = {f"lib/Slicer/qt-scripted-modules/{p.relative_to(ROOT).as_posix()}"
               for p in (ROOT / "Resources" / "Models").rglob("*") if p.suffix in (".json", ".safetensors", ".yaml")}
    assert shipped and shipped <= resources
    assert any(install.endswith("/training.yaml") for install in shipped)  # named by each card's provenance


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def ui_widgets(path: Path) -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ElementTree.parse(path).iter("widget")}


def parameter_fields(module_file: Path) -> set[str]:
    """Fields of the module's @parameterNodeWrapper class."""
    for node in ast.walk(parse(module_file)):
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            return {item.target.id for item in node.body if isinstance(item, ast.AnnAssign)}
    raise AssertionError(f"{module_file.name} has no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", ["X2CTReconstruction", "X2CTTraining"])
def test_ui_has_every_widget_the_code_uses_and_binds_real_parameters(module):
    module_file = ROOT / module / f"{module}.py"
    widgets = ui_widgets(ROOT / module / "Resources/UI" / f"{module}.ui")
    used = {node.attr for node in ast.walk(parse(module_file))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert used, "the widget uses no .ui names? the parser missed them"
    assert used <= set(widgets), f"not in the .ui: {sorted(used - set(widgets))}"
    assert widgets[module].get("class") == "qMRMLWidget"  # setMRMLScene is called on the top widget

    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    fields = parameter_fields(module_file)
    assert set(bound.values()) <= fields, f"bound to missing parameters: {set(bound.values()) - fields}"
    assert len(set(bound.values())) == len(bound), "two widgets bound to one parameter"


def test_training_presets_match_the_model_registry():
    from x2ct.models import registry

    (presets,) = [node.value for node in parse(ROOT / "X2CTTraining/X2CTTraining.py").body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PRESETS"]
    assert tuple(ast.literal_eval(presets)) == tuple(registry.PRESETS)


def imported_modules(path: Path, top_level_only: bool = False) -> set[str]:
    names = set()
    tree = parse(path)
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_libraries_import_headless_and_the_core_never_imports_slicer():
    gui_only = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}
    for lib in sorted(ROOT.glob("X2CT*/X2CT*Lib/*.py")):
        imported = imported_modules(lib)
        assert not imported & gui_only, f"{lib.relative_to(ROOT)} imports {imported & gui_only}"
    for path in sorted((ROOT / "x2ct").rglob("*.py")):
        roots = {name.split(".")[0] for name in imported_modules(path)}
        assert not roots & {"slicer", "qt", "ctk"}, f"core file {path.relative_to(ROOT)} imports Slicer"
        # The headless glue may be called by a core command (the demo), but only from inside a function.
        top = {name.split(".")[0] for name in imported_modules(path, top_level_only=True)}
        glue = {r for r in top if r == "trame_slicer" or r.startswith("X2CT")}
        assert not glue, f"core file {path.relative_to(ROOT)} imports {glue} at import time"


@needs_cmake
@pytest.mark.parametrize("url", ["", "github.com/owner/x2ct", "https://github.com/owner/x2ct/"])
def test_cmake_refuses_a_package_without_a_valid_repository_url(tmp_path, url):
    """An empty homepage or an icon URL of "/raw/main/..." must never reach the extension index."""
    result, _build = configure(tmp_path, f"-DX2CT_REPOSITORY_URL={url}")
    assert result.returncode != 0
    assert "Set X2CT_REPOSITORY_URL to the public https URL" in result.stderr


def test_nothing_installed_imports_headless_only_code():
    """Benchmarks, the demo and model shipping stay out of Slicer: no installed file may import them."""
    headless = core_headless_only()
    assert {p.relative_to(ROOT).as_posix() for p in headless} >= {"x2ct/demo.py", "x2ct/shipping.py",
                                                                   "x2ct/commands/benchmark.py"}
    headless_modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in headless}
    headless_modules |= {name.removesuffix(".__init__") for name in headless_modules}
    installed = [p for p in (ROOT / "x2ct").rglob("*.py") if "__pycache__" not in p.parts and p not in headless]
    for module in module_dirs():
        scripts = cmake_list(module, "MODULE_PYTHON_SCRIPTS")
        installed += [module / script for script in scripts]
        for script in cmake_list(module, "MODULE_HEADLESS_ONLY_SCRIPTS", required=False):
            headless_modules.add(".".join(Path(script).with_suffix("").parts))
    for path in installed:
        names = set()
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        assert not names & headless_modules, f"{path.relative_to(ROOT)} imports {sorted(names & headless_modules)}"
