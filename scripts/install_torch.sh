#!/usr/bin/env bash
# `make setup`, before the project's own install: PyTorch for this machine, saying which build.
#   - already importable: kept as it is;
#   - an NVIDIA driver present: nothing here, the project's install brings the default (CUDA) build;
#   - otherwise PyTorch's CPU wheels (a few hundred MB instead of several GB), tried once with a
#     short timeout and no retries, ignoring pip's config files (their indexes would serve the
#     default build); when that index cannot be reached, the default build, as with a GPU.
# Usage: scripts/install_torch.sh PYTHON [pip flags...]
set -u
PY=$1; shift
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
build() { "$PY" -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda if torch.version.cuda else "CPU")'; }
if "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  echo "torch: $(build) already installed"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 || [ -e /proc/driver/nvidia/version ]; then
  echo "torch: an NVIDIA driver is present; the project's install brings PyTorch's default (CUDA) build"
  exit 0
fi
echo "torch: no NVIDIA GPU found; trying PyTorch's CPU wheels from $CPU_INDEX"
if PIP_CONFIG_FILE=/dev/null "$PY" -m pip install "$@" --timeout 5 --retries 0 --index-url "$CPU_INDEX" \
     torch torchvision; then
  echo "torch: installed $(build) from $CPU_INDEX"
else
  echo "torch: $CPU_INDEX could not be reached; the project's install brings PyTorch's default build"
fi
exit 0
