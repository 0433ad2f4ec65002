"""Start-up of x2ct's own processes: MONAI is not let import packages x2ct never uses.

``import monai`` imports every MONAI submodule, and each imports its optional
dependencies at once when they are installed (torchvision for its detection
backbones, transformers for one network, OpenCV, CuPy, pandas, matplotlib,
scikit-learn, SciPy's signal module...). On a PyTorch GPU image, where all
of them are installed, that was 16.2 s of the 28.7 s an ``x2ct reconstruct``
process ran (BENCHMARKS.md, section GPU); on the 2-core CPU machine, with
matplotlib, scikit-learn and SciPy installed, about 1 s of 5.

x2ct uses none of them, so its own processes (``python -m x2ct``, the
``x2ct`` command, torchrun workers and the Slicer module's spare process)
mark them absent before MONAI is imported; MONAI then treats them as not
installed, exactly as on a minimal install (its placeholder raises only if a
MONAI function that needs one is called, which no x2ct code path does: the
test suite runs every command in such processes). This is never done in a
process x2ct does not own (Slicer's own, a notebook, the test runner), where
other code may need these packages.
"""

from __future__ import annotations

import sys

#: Optional MONAI dependencies that x2ct never uses (nor do the MONAI parts it calls).
UNUSED_OPTIONAL = ("torchvision", "transformers", "cv2", "cupy", "cucim", "pandas", "matplotlib", "sklearn",
                   "skimage", "scipy.signal", "nibabel", "itk", "ignite", "mlflow", "clearml", "lmdb", "zarr", "openslide",
                   "tifffile", "imagecodecs", "onnx", "onnxruntime", "polygraphy", "tensorrt")


def skip_unused_optional_imports() -> None:
    """Make ``import NAME`` fail fast for each unused optional dependency not imported yet in this process."""
    for name in UNUSED_OPTIONAL:
        sys.modules.setdefault(name, None)
