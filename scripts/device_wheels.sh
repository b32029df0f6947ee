#!/usr/bin/env bash
# Wheels of the packages the offline GPU machine's image lacks (it has torch, numpy, scipy, pandas,
# matplotlib, seaborn, tqdm, pyyaml, requests, ...), for its Python 3.12 on x86-64, into .whl/
# (git-ignored): papermill (and nbformat, nbclient, ...), ipykernel and ipywidgets, which nrbook's
# runbook and the notebooks need. scripts/gpu_full.sh installs them with --no-deps into /tmp/site
# on the machine. Needs a package registry here, none there. `make stage` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_26_x86_64 --platform manylinux1_x86_64 --platform any \
  -d .whl papermill ipykernel ipywidgets
# already in the image: one version of a package only (two stop the install there)
for p in attrs certifi charset_normalizer click idna packaging psutil pygments python_dateutil \
         pyyaml PyYAML requests tqdm typing_extensions urllib3 jinja2 markupsafe six; do
  rm -f .whl/${p}-*.whl
done
echo "device_wheels: $(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
