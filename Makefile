# The book's commands. The README's two: `make book` and `make test`.
#
#   make setup        .venv (unless a virtualenv/conda env is active) + PyTorch (CPU wheels without an NVIDIA GPU) + pip install -e '.[book,dev]'
#   make data         link MNIST and CIFAR-10 from an offline copy when present (SHARED_DATA=DIR; data/README.md)
#   make test         unit tests + papermill smoke run of every notebook
#   make test-browser the built book's pages and static sliders, then chapter 5 (smoke) in JupyterLab, in headless Chromium
#   make test-sweep   chapter 5 (smoke) swept over 2 ε × 2 seeds on a local Dask cluster (nrbook.sweep)
#   make sweep        a papermill sweep on Dask: make sweep NB=05 ARGS="-p eps 4/255 8/255 -p seed 0 1 2" OUT=sweeps/eps
#   make book         execute stale notebooks (cpu profile, full on a CUDA GPU) + build _build/html
#   make run          re-run notebooks: make run PROFILE=cpu NB=04 [FORCE=1], then rebuild the book
#   make full         make run PROFILE=full (a GPU; the numbers the book publishes)
#   make stage        CIFAR-10 in parts sized to fit a call + MNIST into data/gpu/, wheels into .whl/, for an offline GPU machine (NB=04: only what chapter 04 reads)
#   make budget       each chapter's estimated seconds on one GPU at the full profile (nrbook.budget; --check: against the cpu runs)
#   make gpu-dry-run  one loan's path (scripts/gpu_full.sh) here on the CPU at smoke sizes: staging, run, packing (NB=05)
#   make html         only rebuild the HTML from the executed notebooks in book/
#   make check        which executed notebooks are missing, stale or fresh
#   make bench        nrlib vs reference timings on this device -> data/results/bench/ (BENCH_ARGS="--profile smoke")
#   make clean-book   remove _build (never the executed notebooks in book/)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PROFILE ?= cpu
NB ?=
FORCE ?=
SHARED_DATA ?= ../shared/data
DATASETS := MNIST cifar-10-batches-py
PIP_FLAGS ?=
BENCH_ARGS ?=
TEST_JOBS ?= logical

# Use the active virtualenv or conda env if there is one (not conda's `base`, which many
# shells activate by default), else the project's .venv.
ifneq ($(VIRTUAL_ENV),)
  ENV_DIR := $(VIRTUAL_ENV)
else ifneq ($(filter-out base,$(if $(CONDA_PREFIX),$(or $(CONDA_DEFAULT_ENV),env))),)
  ENV_DIR := $(CONDA_PREFIX)
else
  ENV_DIR := .venv
  OWN_VENV := 1
endif
VENV_BIN := $(ENV_DIR)/bin/
PY := $(VENV_BIN)python
STAMP := $(ENV_DIR)/.nrbook-installed

.PHONY: help setup data test test-browser test-sweep sweep book run full stage budget gpu-dry-run html check bench clean-book

help:
	@sed -n 's/^#   //p' Makefile

setup: $(STAMP)

# Re-installs only when pyproject.toml changes (or the env is new).
$(STAMP): pyproject.toml
ifdef OWN_VENV
	@test -x $(PY) || { echo "creating .venv with $$(python3 --version)"; python3 -m venv .venv; }
endif
	@bash scripts/install_torch.sh $(PY) $(PIP_FLAGS)
	$(PY) -m pip install $(PIP_FLAGS) -e '.[book,dev]'
	@$(PY) -c 'import torch; print("torch:", torch.__version__, "(CUDA " + torch.version.cuda + ")" if torch.version.cuda else "(CPU build)")'
	@touch $@

data:
	@mkdir -p data
	@for d in $(DATASETS); do \
	  case "$(SHARED_DATA)" in /*) target="$(SHARED_DATA)/$$d" ;; *) target="../$(SHARED_DATA)/$$d" ;; esac; \
	  if [ -e "data/$$d" ] || [ -L "data/$$d" ]; then :; \
	  elif [ -e "$(SHARED_DATA)/$$d" ]; then ln -s "$$target" "data/$$d" && echo "linked data/$$d -> $$target"; \
	  elif [ -z "$(DATA_QUIET)" ]; then echo "data/$$d: not found here nor in $(SHARED_DATA); nrlib will try torchvision's download (or set NRLIB_DATA; see data/README.md)"; fi; \
	done

# One pytest-xdist worker per core (TEST_JOBS=0: a single process); the notebook smoke runs
# go first, one per free worker (tests/conftest.py).
test: setup data
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder --durations=15

# The system's Chromium (apt: chromium, chromium-driver): the static book (tests/test_browser.py),
# then JupyterLab (tests/test_jupyterlab.py)
test-browser: setup data
	$(PY) -m pytest -q -m browser tests/test_browser.py
	$(PY) -m pytest -q -rP -m jupyterlab tests/test_jupyterlab.py

# A papermill sweep of one chapter on Dask (nrbook.sweep), at PROFILE (default cpu)
sweep: setup data
	@test -n "$(NB)" -a -n "$(OUT)" || { echo 'make sweep NB=05 ARGS="-p eps 4/255 8/255 -p seed 0 1 2" OUT=sweeps/eps [PROFILE=cpu]'; exit 2; }
	$(PY) -m nrbook.sweep $(NB) $(ARGS) --profile $(PROFILE) --out $(OUT)

# A real chapter's sweep on a local Dask cluster: chapter 5 at smoke, 2 ε × 2 seeds on 2 workers
# (nrbook.sweep; tests/test_sweep.py, marked `sweep`; a few minutes)
test-sweep: setup data
	$(PY) -m pytest -q -rA -m sweep tests/test_sweep.py

# (the runbook names a missing dataset only when a chapter is about to run)
book: setup
	@$(MAKE) --no-print-directory data DATA_QUIET=1
	$(PY) -m nrbook.runbook --profile auto --only-stale
	$(MAKE) --no-print-directory html

run: setup data
	$(PY) -m nrbook.runbook --profile $(PROFILE) $(if $(NB),--notebooks $(NB)) $(if $(FORCE),--force)
	$(MAKE) --no-print-directory html

full:
	$(MAKE) --no-print-directory run PROFILE=full

# The parts and the carry list of each device call: see scripts/stage.py and scripts/gpu_full.sh.
# data/MNIST is usually a link, which travels only as a link: copy the real files (cp -L).
stage: setup data
	@mkdir -p data/gpu/MNIST/raw
	cp -L data/MNIST/raw/*.gz data/gpu/MNIST/raw/
	PY=$(PY) bash scripts/device_wheels.sh
	$(PY) scripts/stage.py pack $(if $(NB),--notebooks $(NB))

budget: setup
	$(PY) -m nrbook.budget --profile full $(if $(NB),--notebooks $(NB))

gpu-dry-run: setup data
	PY=$(abspath $(PY)) bash scripts/gpu_dry_run.sh $(or $(NB),05)

html: setup
	$(PY) -m nrbook.runbook --results-only
	$(VENV_BIN)jupyter-book build --warningiserror --keep-going .
	@echo "open _build/html/index.html"

check: setup
	@$(PY) -m nrbook.runbook --check

bench: setup data
	$(PY) -m nrbook.bench $(BENCH_ARGS)

clean-book:
	rm -rf _build
