#!/usr/bin/env bash
# Run the book's `full` profile on an offline GPU machine and put what must come back in $OUT.
# The machine has PyTorch but no network and no `pip install` of this repository: the repository is
# copied there, and this script puts its root on PYTHONPATH so that `nrlib` and `nrbook` import from
# the copy (the notebooks' kernels inherit it; nrbook.runbook adds it too).
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
#            command: python3 scripts/stage.py check --folder data/gpu || true
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
#
# Time: a device call is killed at 600 s, and then nothing that is still only in the working tree
# comes back. So every step runs under what is left of BUDGET_S (default 570 s from the start of this
# script; `timeout`, SIGINT, then SIGKILL 15 s later), a step that finds too little time left is
# skipped, and the packing at the end always runs. A notebook cut off by the budget is not written
# to book/ (the runbook writes atomically); its partly executed copy comes back as
# _build__failed__<name>.ipynb, showing where the time went. The notebooks that finished come back
# as usual. To go on, call again while the machine is warm with the chapters still missing, e.g.
# `bash scripts/gpu_full.sh --notebooks 05`: the zoo checkpoints under data/checkpoints/ are still
# there, so nothing is trained twice. (Without --notebooks every chapter runs again: each call's
# book/ holds the committed copies, not those of the last call.)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
PY="${PY:-python3}"
PROFILE="${PROFILE:-full}"      # the dry run here (make gpu-dry-run) sets PROFILE=smoke: same path, tiny sizes
BUDGET_S="${BUDGET_S:-570}"
T0=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
# within_budget LABEL CMD...: run CMD under the time that is left, logging its exit status and
# seconds; returns CMD's status, 124 when cut off or skipped
within_budget() {
  local label=$1 l
  shift
  l=$(left)
  if [ "$l" -lt 20 ]; then
    echo "gpu_full: $label: skipped, ${l} s of the ${BUDGET_S} s budget left" | tee -a "$OUT/full.log"
    return 124
  fi
  local r=0 t=$(date +%s)
  PYTHONUNBUFFERED=1 timeout -k 15 -s INT "$l" "$@" 2>&1 | tee -a "$OUT/full.log" || r=${PIPESTATUS[0]}
  if [ "$r" -eq 124 ] || [ "$r" -eq 137 ]; then
    echo "gpu_full: $label: cut off by the ${BUDGET_S} s budget" | tee -a "$OUT/full.log"
  fi
  echo "gpu_full: $label exited $r after $(( $(date +%s) - t )) s" | tee -a "$OUT/full.log"
  return "$r"
}

# (a) imports: the repository root (nrlib, nrbook) and the wheels of missing pure-Python packages
# (papermill, ...) if carried
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# (b) data: CIFAR-10 from its parts when they were staged (fails naming any missing part; an MNIST
# chapter stages none: `make stage NB=04`), MNIST copied into place
if [ -f data/gpu/cifar10.manifest.json ]; then
  $PY scripts/stage.py unpack --folder data/gpu
fi
if [ -d data/gpu/MNIST/raw ]; then
  mkdir -p data/MNIST/raw
  cp -L data/gpu/MNIST/raw/* data/MNIST/raw/
fi

# (c) where we are
$PY -c 'import torch, platform; print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU", "| torch", torch.__version__, "| python", platform.python_version())' | tee "$OUT/full.log"

# (d) the full profile; the runbook prints each notebook's seconds, each step is timed here
marker=$(mktemp)
rc=0
case " $* " in
  *" --notebooks "*) ;;
  *) echo "gpu_full: no --notebooks: every chapter runs; one loan holds about one chapter's full profile (python -m nrbook.budget)" | tee -a "$OUT/full.log" ;;
esac
within_budget runbook $PY -m nrbook.runbook --profile "$PROFILE" "$@" || rc=$?

# optional extras, each timed: ZOO="resnet50 vgg16 ..." trains (or loads) those zoo models at the
# full profile (data/results/zoo/full.json); BENCH=1 runs the benchmarks (data/results/bench/)
if [ -n "${ZOO:-}" ]; then
  within_budget "zoo ($ZOO)" $PY -m nrlib.train --recipe cifar --profile "$PROFILE" --archs $ZOO || rc=1
fi
if [ -n "${BENCH:-}" ]; then
  within_budget bench $PY -m nrbook.bench --profile "$PROFILE" || rc=1
fi

# (e) what must come back, flat: finished notebooks, results, and a notebook cut off part-way
files=()
while IFS= read -r f; do files+=("$f"); done < <(
  # only what this run wrote (the committed files are already at home)
  find book -maxdepth 1 -name '*.ipynb' -newer "$marker" | sort
  find data/results -mindepth 2 -maxdepth 2 -name "$PROFILE.json" -newer "$marker" | sort   # zoo's too
  if [ -d data/results/bench ]; then find data/results/bench -name '*.json' -newer "$marker" | sort; fi
  if [ -d _build/failed ]; then find _build/failed -maxdepth 1 -name '*.ipynb' -newer "$marker" | sort; fi
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
