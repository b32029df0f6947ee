#!/usr/bin/env bash
# Run the book's `full` profile on a lent GPU machine (shared/GPU.md) and put what must come back in $OUT.
#
# CIFAR-10 (~186 MB) cannot travel with one device call (64 MiB at most), so it goes in parts, in
# four calls made back to back (the machine is given back 30 s after a call; ignored files already
# on it are kept only while it stays warm, and only those a later `carry` does not name):
#
#   here:    make stage        # data/gpu/: cifar10.manifest.json, cifar10.part{1..4}of4.bin, MNIST/raw;
#                              # .whl/: wheels of papermill, ipykernel, ipywidgets and what they need
#                              # that the GPU image lacks (scripts/device_wheels.sh)
#            (it prints the exact `carry` list of each call, with its size)
#   calls 1-3: carry [data/gpu/cifar10.manifest.json, data/gpu/cifar10.part<k>of4.bin]
#            (call 3 also data/gpu/MNIST)
#            command: python3 -m nrlib.stage check --folder data/gpu || true
#   call 4:  carry [data/gpu/cifar10.manifest.json, data/gpu/cifar10.part4of4.bin, .whl]
#            command: bash scripts/gpu_full.sh [runbook args, e.g. --notebooks 05]
#            (prefix BENCH=1 and/or ZOO="resnet50 vgg16" to also benchmark / train those models)
#
# The wheels go with the last (smallest) part and MNIST with another, so no call nears 64 MiB.
# Only parts carried in the same warm session survive: if the machine was given back in between,
# step (b) fails naming the missing parts, which must be sent again.
#
# What comes back: at most 8 files of at most 16 MiB each, no more than 2 folders down, names of
# letters, digits, '.', '_' and '-' only. So the log, the executed notebooks that changed and the
# results JSON are copied into $OUT flat ('/' becomes '__', e.g. data__results__04_x__full.json);
# if there are more than 7 of them besides the log, they go into one full-results.tar.gz instead.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
PY=python3

# (a) wheels of missing pure-Python packages (papermill, ...), if carried
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# (b) data: CIFAR-10 from its parts (fails naming any missing part), MNIST copied into place
$PY -m nrlib.stage unpack --folder data/gpu
if [ -d data/gpu/MNIST/raw ]; then
  mkdir -p data/MNIST/raw
  cp -L data/gpu/MNIST/raw/* data/MNIST/raw/
fi

# (c) where we are
$PY -c 'import torch, platform; print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU", "| torch", torch.__version__, "| python", platform.python_version())' | tee "$OUT/full.log"

# (d) the full profile; the runbook prints each notebook's seconds, the whole run is timed here
marker=$(mktemp)
start=$(date +%s)
set +e
PYTHONUNBUFFERED=1 $PY -m nrlib.runbook --profile full "$@" 2>&1 | tee -a "$OUT/full.log"
rc=${PIPESTATUS[0]}
set -e
echo "gpu_full: runbook exited $rc after $(( $(date +%s) - start )) s" | tee -a "$OUT/full.log"

# optional extras, each timed: ZOO="resnet50 vgg16 ..." trains (or loads) those zoo models at the
# full profile (data/results/zoo/full.json); BENCH=1 runs the benchmarks (data/results/bench/)
if [ -n "${ZOO:-}" ]; then
  t=$(date +%s)
  PYTHONUNBUFFERED=1 $PY -m nrlib.train --recipe cifar --profile full --archs $ZOO 2>&1 | tee -a "$OUT/full.log" || rc=1
  echo "gpu_full: zoo ($ZOO) took $(( $(date +%s) - t )) s" | tee -a "$OUT/full.log"
fi
if [ -n "${BENCH:-}" ]; then
  t=$(date +%s)
  PYTHONUNBUFFERED=1 $PY -m nrlib.bench --profile full 2>&1 | tee -a "$OUT/full.log" || rc=1
  echo "gpu_full: bench took $(( $(date +%s) - t )) s" | tee -a "$OUT/full.log"
fi

# (e) what must come back, flat
files=()
while IFS= read -r f; do files+=("$f"); done < <(
  find book -maxdepth 1 -name '*.ipynb' -newer "$marker" | sort
  compgen -G 'data/results/*/full.json' | sort || true   # includes data/results/zoo/full.json
  compgen -G 'data/results/bench/*.json' | sort || true
)
rm -f "$marker"
if [ "${#files[@]}" -le 7 ]; then
  for f in "${files[@]}"; do cp "$f" "$OUT/${f//\//__}"; done
else
  tar -czf "$OUT/full-results.tar.gz" "${files[@]}"
  echo "gpu_full: ${#files[@]} files: packed into full-results.tar.gz (at most 8 files come back)" | tee -a "$OUT/full.log"
fi
echo "gpu_full: back in \$OUT: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$OUT/full.log"
exit "$rc"
