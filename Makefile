# SpeechTune developer entry points. `make setup` once, then `make demo` / `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
KUBECONFIG ?= $(CURDIR)/.cluster/kubeconfig
# OpenMP wait policy: PASSIVE only when the machine is oversubscribed (load > cores), the
# same decision `speechtune` makes (trainers/src/speechtune/runtime/openmp.py); pytest's
# in-process training inherits it. An OMP_WAIT_POLICY you set yourself wins.
OMP_CHOICE := $(shell $(PY) -m speechtune.runtime.openmp 2>/dev/null)
ifneq ($(OMP_CHOICE),)
export OMP_WAIT_POLICY ?= $(OMP_CHOICE)
endif

.PHONY: setup lock demo tiny-mms-base test test-unit e2e bench gpu-check cluster-up cluster-down operator chart-lint images lint

setup:  ## .venv = exactly uv.lock (both projects, all extras, dev tools) + Debian packages when missing
	@hack/setup.sh

UV = $(HOME)/.cache/speechtune/uv-$(shell sed -n 's/^uv==\([0-9.]*\).*/\1/p' hack/requirements-uv.txt)/bin/uv
lock:  ## re-resolve uv.lock on purpose (after editing a pyproject.toml), then `make setup`
	@test -x $(UV) || hack/setup.sh
	UV_PYTHON_DOWNLOADS=never $(UV) lock --python python3.11

demo: setup  ## the main job, locally, on synthetic ATC speech
	$(VENV)/bin/speechtune demo --workdir .demo

RUNS ?= .demo/runs
tiny-mms-base: setup  ## the pretrained base of examples/tiny-mms.yaml into $(RUNS)/models/tiny-mms-base (built once, cached)
	$(PY) tests/pretrained/mms.py $(RUNS)/models/tiny-mms-base

test: setup  ## everything CI runs: unit, trainer, operator and e2e tiers on the local control plane
	$(PY) -m pytest tests

test-unit: setup  ## the fast tier only (no control plane, no training)
	$(PY) -m pytest tests -m "not cluster and not training"

e2e: setup  ## operator, chart and Prometheus tests on the real local control plane
	$(PY) -m pytest tests -m cluster

bench: setup  ## side-by-side measurements, printed as tables
	$(PY) tests/bench/run.py

BACKEND ?= pytorchjob
cluster-up: setup  ## local control plane; admin kubeconfig at .cluster/kubeconfig; BACKEND=trainjob adds JobSet + Kubeflow Trainer v2
	$(PY) hack/cluster/controlplane.py up --backend $(BACKEND)

gpu-check: setup  ## on a GPU machine only (never part of make test): every engine ~50 bf16 steps, DDP with 2+ GPUs
	$(PY) hack/gpu_check.py

cluster-down:
	$(PY) hack/cluster/controlplane.py down

operator: setup  ## run the operator out of cluster against $$KUBECONFIG (default .cluster/kubeconfig)
	KUBECONFIG=$(KUBECONFIG) $(VENV)/bin/speechtune-operator

chart-lint: setup
	bins="$$($(PY) hack/cluster/controlplane.py tools)" && PATH="$$bins:$$PATH" helm lint charts/speechtune

images:  ## needs a Docker engine (none on the dev machines)
	hack/build-images.sh

lint: setup
	$(VENV)/bin/lint-imports --config .importlinter
	$(VENV)/bin/mypy operator/src trainers/src/speechtune
