# Sourced by scripts/gpu-benchmark and scripts/gpu-train: the Python packages a stock PyTorch GPU image lacks,
# downloaded here as wheels (--no-deps: torch, numpy, scipy... are the machine's own) and installed there.

# download_gpu_wheels DIR PACKAGE==VERSION...   (here, with the project's .venv)
download_gpu_wheels() {
  local dir=$1
  shift
  mkdir -p "$dir"
  ./.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
    --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$dir" "$@"
}

# use_gpu_wheels PYTHON DIR   (there: installs DIR's wheels into a temporary folder put on PYTHONPATH)
use_gpu_wheels() {
  local python=$1 dir=$2 site
  compgen -G "$dir/*.whl" >/dev/null || return 0
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$dir"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
}
