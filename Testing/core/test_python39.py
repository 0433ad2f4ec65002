"""3D Slicer 5.8 runs Python 3.9: the core and both modules must work there (issue 11, finding 3).

Two layers. The static checks run everywhere and cover the code that needs
torch, which has no CPU build for Python 3.9 on PyPI: no ``zip(strict=)``, no
``match``, no ``X | Y`` evaluated at run time (outside annotations, in
annotations of a file without ``from __future__ import annotations``, or in
dataclasses read by ``typing.get_type_hints``). Then, when a Python 3.9
interpreter is found, a cached 3.9 environment with pyproject's 3.9 pins
(less torch and what needs it) compiles every file, imports every module of
the core and both modules' import closures (``slicer``, ``vtk``, ``qt`` are
empty stand-ins: slicer-core has no 3.9 build), and runs the torch-free paths
a panel uses: requirements, the catalog, config type hints, file I/O.
"""

import ast
import glob
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11 (tomllib)")

ROOT = Path(__file__).resolve().parents[2]
#: The modules' files and the core; the module files use Qt flags (CamelCase `|`), so rule 3 skips them.
CORE_AND_LIBS = sorted([*ROOT.glob("x2ct/**/*.py"), *ROOT.glob("X2CT*/X2CT*Lib/*.py")])
MODULE_FILES = sorted(ROOT.glob("X2CT*/X2CT*.py"))
#: Not installable on Python 3.9 without a CUDA build of torch; checked by the static rules instead.
NEEDS_TORCH = {"torch", "monai", "geomloss"}
TYPE_NAMES = {"int", "float", "str", "bytes", "bool", "list", "dict", "tuple", "set", "frozenset", "type", "object"}


def sources():
    return [p for p in CORE_AND_LIBS + MODULE_FILES if "__pycache__" not in p.parts]


def has_future_annotations(tree: ast.Module) -> bool:
    return any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body)


def annotations(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + \
                [a for a in (node.args.vararg, node.args.kwarg) if a]
            yield from (a.annotation for a in arguments if a.annotation)
            if node.returns:
                yield node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.annotation


def has_union(node) -> bool:
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(node))


def type_like(node) -> bool:
    """An operand that is a type: None, int/str..., CamelCase names (Path, torch.Tensor) or Sequence[...]."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Subscript):
        return type_like(node.value)
    name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""
    return name in TYPE_NAMES or (name[:1].isupper() and any(c.islower() for c in name))


def test_sources_parse_as_python_3_9():
    for path in sources():
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_no_python_3_10_feature_is_evaluated_at_run_time():
    problems = []
    for path in sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(ROOT)
        in_annotation = {id(n) for a in annotations(tree) for n in ast.walk(a)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "zip" and \
                    any(k.arg == "strict" for k in node.keywords):
                problems.append(f"{where}:{node.lineno}: zip(strict=) needs Python 3.10")
            if isinstance(node, ast.Match):
                problems.append(f"{where}:{node.lineno}: match needs Python 3.10")
            if path in CORE_AND_LIBS and isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and \
                    id(node) not in in_annotation and (type_like(node.left) or type_like(node.right)):
                problems.append(f"{where}:{node.lineno}: a union of types evaluated at run time; use typing.Union")
        if not has_future_annotations(tree):
            problems += [f"{where}:{a.lineno}: an X | Y annotation without `from __future__ import annotations`"
                         for a in annotations(tree) if has_union(a)]
        if "get_type_hints" in path.read_text():  # these annotations are evaluated, strings or not
            problems += [f"{where}:{item.lineno}: X | Y in a class read by typing.get_type_hints; use Optional"
                         for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
                         for item in cls.body if isinstance(item, ast.AnnAssign) and has_union(item.annotation)]
    assert not problems, "\n".join(problems)


# --- the real interpreter -----------------------------------------------------------------------


def python39() -> str | None:
    """A Python 3.9 interpreter: python3.9 on PATH, else one installed by pyenv."""
    candidates = [shutil.which("python3.9"), *sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9")),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]
    for candidate in filter(None, candidates):
        try:
            version = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                     capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if version == "(3, 9)":
            return candidate
    return None


def pins_for_python39() -> list[str]:
    """pyproject's dependencies as pip resolves them on Python 3.9, less torch and what needs it."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    environment = {"python_version": "3.9", "python_full_version": "3.9.0"}
    chosen = [Requirement(line) for line in dependencies]
    chosen = [r for r in chosen if (r.marker is None or r.marker.evaluate(environment)) and r.name not in NEEDS_TORCH]
    return [f"{r.name}{r.specifier}" for r in chosen] + ["packaging"]


@pytest.fixture(scope="module")
def python39_env() -> Path:
    """A Python 3.9 environment with the 3.9 pins, made once and kept in the x2ct cache."""
    interpreter = python39()
    if interpreter is None:
        pytest.skip("no Python 3.9 interpreter found (python3.9 on PATH, /root/.pyenv/versions/3.9*/bin): "
                    "the run-time check for Slicer 5.8 is skipped; the static checks above still ran")
    pins = pins_for_python39()
    key = hashlib.sha256(json.dumps([interpreter, pins]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("X2CT_CACHE") or Path.home() / ".cache" / "x2ct")
    env = cache / f"python3.9-{key}"
    if not (env / "ready").is_file():
        partial = cache / f"python3.9-{key}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([interpreter, "-m", "venv", str(partial)], check=True, timeout=300)
        result = subprocess.run([str(partial / "bin" / "python"), "-m", "pip", "install", "-q",
                                 "--disable-pip-version-check", *pins], capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            pytest.skip(f"could not install the Python 3.9 pins ({' '.join(pins)}): {result.stderr.strip()[-300:]}")
        (partial / "ready").write_text("\n".join(pins) + "\n")
        shutil.rmtree(env, ignore_errors=True)
        partial.rename(env)
    return env


CHILD = r'''
import importlib, importlib.abc, importlib.machinery, json, pathlib, pkgutil, sys, tempfile, types, typing

root = pathlib.Path(sys.argv[1])
out = {"version": list(sys.version_info[:2]), "compile": [], "ok": [], "needs_torch": [], "failed": {}}
for path in sorted([*root.glob("x2ct/**/*.py"), *root.glob("X2CT*/**/*.py")]):
    try:
        compile(path.read_text(), str(path), "exec")
    except SyntaxError as error:
        out["compile"].append(f"{path}: {error}")


class StandIn(types.ModuleType):
    """slicer, vtk, qt, ctk: any name is a new empty class (slicer-core has no Python 3.9 build)."""
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = type(name, (), {"__init__": lambda self, *a, **k: None})
        setattr(self, name, made)
        return made


class StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("slicer", "vtk", "qt", "ctk"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None
    def create_module(self, spec):
        return StandIn(spec.name)
    def exec_module(self, module):
        module.__path__ = []


sys.meta_path.append(StandIns())
sys.path[:0] = [str(root), str(root / "X2CTReconstruction"), str(root / "X2CTTraining")]
NEEDS_TORCH = set(sys.argv[2].split(","))


def attempt(name):
    try:
        importlib.import_module(name)
        out["ok"].append(name)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in NEEDS_TORCH:
            out["needs_torch"].append(name)
        else:
            out["failed"][name] = repr(error)
    except Exception as error:
        out["failed"][name] = repr(error)


import x2ct
for info in pkgutil.walk_packages(x2ct.__path__, "x2ct."):
    if not info.name.endswith(".__main__"):  # running it is the command line
        attempt(info.name)
for lib in ("X2CTReconstructionLib", "X2CTTrainingLib"):
    package = importlib.import_module(lib)
    for info in pkgutil.iter_modules(package.__path__, lib + "."):
        attempt(info.name)
attempt("X2CTReconstruction")
attempt("X2CTTraining")

from X2CTReconstructionLib import dependencies
out["requirements"] = [r.pip for r in dependencies.requirements()]
from x2ct import catalog
out["catalog"] = [entry.id for entry in catalog.entries()]
import dataclasses
from x2ct.training import config
out["config_fields"] = sorted(f"{cls.__name__}.{name}" for cls in vars(config).values()
                              if dataclasses.is_dataclass(cls) and isinstance(cls, type)
                              for name in typing.get_type_hints(cls))
import numpy as np
import x2ct.io
from x2ct.image import Volume
folder = tempfile.mkdtemp()
written = x2ct.io.write_volume(Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), spacing=(1.0, 2.0, 3.0)),
                               pathlib.Path(folder) / "v.nrrd")
back = x2ct.io.read_ct(written)
out["io"] = [list(back.array.shape), [float(s) for s in back.spacing]]
print(json.dumps(out))
'''


def test_core_and_modules_import_and_run_under_python_3_9(python39_env, tmp_path):
    python = python39_env / "bin" / "python"
    result = subprocess.run([str(python), "-c", CHILD, str(ROOT), ",".join(sorted(NEEDS_TORCH))],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["version"] == [3, 9]
    assert out["compile"] == [] and out["failed"] == {}
    # both modules' whole import closure, and everything a panel does before running a model, need no torch
    assert {"X2CTReconstruction", "X2CTTraining", "X2CTReconstructionLib.dependencies", "x2ct.catalog",
            "x2ct.modelfile", "x2ct.jobs", "x2ct.io", "x2ct.training.config"} <= set(out["ok"])
    assert len(out["ok"]) > len(out["needs_torch"])
    assert {"torch==2.8.0", "monai==1.5.2", "safetensors==0.7.0", "h5py==3.14.0"} <= set(out["requirements"])
    assert "back-projection" in out["catalog"] and "x2ct-cnn-2v" in out["catalog"]
    assert "DataConfig.source" in out["config_fields"] and "TrainConfig.ema" in out["config_fields"]
    assert out["io"] == [[2, 3, 4], [1.0, 2.0, 3.0]]
