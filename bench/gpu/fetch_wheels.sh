#!/usr/bin/env bash
# Download, here (online), the wheels bench/gpu_check.sh installs on the offline GPU machine.
#
# That machine has Python 3.12 with a CUDA build of torch, transformers, accelerate, safetensors, numpy, scipy,
# scikit-image, imageio and pytest, but not diffusers, trimesh or PyAV. This fetches those and what they need
# beyond the machine's packages, for CPython 3.12 on x86_64 Linux, without dependencies (the list is explicit).
# diffusers comes twice: the version pinned here, and an older one that pip falls back to when the machine's
# huggingface-hub is older than 0.42's requirement (>= 1.32).
#
#   bench/gpu/fetch_wheels.sh [DEST]      # DEST defaults to .whl/ (ignored by git); keep it under 60 MB
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST="${1:-.whl}"
PIP="${PIP:-.venv/bin/pip}"
MAX_MB=60
PACKAGES=(
  diffusers==0.42.1 diffusers==0.35.2
  trimesh==5.2.0 av==18.1.0 xatlas==0.0.11 fast-simplification==0.2.0
  importlib_metadata==10.2.0 zipp==4.1.2
  requests==2.32.5 urllib3==2.5.0 idna==3.10 certifi==2025.8.3 charset-normalizer==3.4.3
  tqdm==4.70.1
)
mkdir -p "$DEST"
for pkg in "${PACKAGES[@]}"; do
  "$PIP" download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any -d "$DEST" "$pkg"
done
size_mb=$(du -sm "$DEST" | cut -f1)
ls -1 "$DEST"
echo "$DEST: ${size_mb} MB in $(ls -1 "$DEST" | wc -l) wheels"
if (( size_mb > MAX_MB )); then
  echo "error: $DEST is ${size_mb} MB, over the ${MAX_MB} MB budget" >&2
  exit 1
fi
