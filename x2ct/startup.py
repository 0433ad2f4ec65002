"""Start-up of x2ct's own processes: MONAI is not let import packages x2ct never uses.

``import monai`` imports every MONAI submodule, and each imports its optional
dependencies at once when they are installed (torchvision for its detection
backbones, transformers for one network, OpenCV, CuPy, pandas, matplotlib,
scikit-learn, SciPy's signal module...). On a PyTorch GPU image, where all
of them are installed, that was 16.2 s of the 28.7 s an ``x2ct reconstruct``
process ran (BENCHMARKS.md, section GPU); on the 2-core CPU machine, with
matplotlib, scikit-learn, scikit-image and SciPy installed, about 1.8 s.

x2ct uses none of them, so its own processes (``python -m x2ct``, the
``x2ct`` command, torchrun workers and the Slicer module's spare process)
make them look not installed before MONAI is imported: importing one raises
ModuleNotFoundError, as on a minimal install, and nothing is put in
``sys.modules`` (libraries such as einops pick backends by what is there).
MONAI's placeholder for a missing package raises only if a MONAI function
that needs it is called, which no x2ct code path does. This is never done in
a process x2ct does not own (Slicer's own, a notebook, the test runner),
where other code may need these packages.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

#: Optional MONAI dependencies that x2ct never uses (nor do the MONAI parts it calls).
UNUSED_OPTIONAL = frozenset({
    "torchvision", "transformers", "cv2", "cupy", "cucim", "pandas", "matplotlib", "sklearn", "skimage",
    "scipy.signal", "nibabel", "itk", "ignite", "mlflow", "clearml", "lmdb", "zarr", "openslide", "tifffile",
    "imagecodecs", "onnx", "onnxruntime", "polygraphy", "tensorrt"})


class _NotInstalled(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the unused packages (and their sub-modules) first, and fails to load them as a missing one does."""

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in UNUSED_OPTIONAL):
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (x2ct does not use it)", name=spec.name)

    def exec_module(self, module):  # never reached: create_module raises
        raise ModuleNotFoundError(module.__name__)


def skip_unused_optional_imports() -> None:
    """Make the unused optional packages not imported yet in this process look not installed."""
    if not any(isinstance(finder, _NotInstalled) for finder in sys.meta_path):
        sys.meta_path.insert(0, _NotInstalled())

