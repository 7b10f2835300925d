# `make book` and `make test` are all a reader needs; each creates .venv the first time.
#   make book          execute every chapter at quick scale, build the HTML into _build/html
#   make book FULL=1   the same at full scale
#   make test          pytest: the library, every chapter at quick scale, the book in headless Chromium
#   make bench         the benchmarks of bench/ (ratios, not seconds)
#   make assignments   the nbgrader course in _build/course (source/ -> release/), and plain
#                      solution-free chapters in _build/assignments/
#   make grade SUBMISSIONS=dir   autograde dir/<student>/<chapter>.ipynb with nbgrader, write
#                      feedback and _build/course/grades.csv
#   make style         ruff: lint and format check (pyproject.toml [tool.ruff]); make format fixes
#   make reproduce     a section's full-scale experiments (SECTION=sec41 SCALE=cpu|paper DEVICE=auto|cpu|cuda), into book/results/
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Offline data: ../shared/data when it is there and INFLUENCE_DATA is not set (influence/data.py).
ifeq ($(origin INFLUENCE_DATA), undefined)
  ifneq ($(wildcard ../shared/data),)
    export INFLUENCE_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: venv book test bench assignments grade reproduce style format clean

venv: $(INSTALLED)

# pip takes torch and torchvision from this machine's local wheels (the ranges in pyproject.toml admit them).
# The grep drops pip's one-line notice per package about local index folders this machine lacks.
$(INSTALLED): pyproject.toml
	@echo "Installing into $(VENV) (torch is large: a few minutes the first time)"
	python3 -m venv $(VENV)
	set -o pipefail; $(PYTHON) -m pip install --quiet --disable-pip-version-check --progress-bar off -e '.[dev]' 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	@touch $@

book: $(INSTALLED)
	$(PYTHON) -m tools.chapters $(if $(filter 1 true yes,$(FULL)),--full)
	$(PYTHON) -m tools.build_book

test: $(INSTALLED)
	$(PYTHON) -m pytest

bench: $(INSTALLED)
	$(PYTHON) bench/run.py

# For classroom use: solution-free copies of the chapters in _build/assignments/, and the
# nbgrader course in _build/course/ (tools/classroom.py; offline, no JupyterHub).
assignments: $(INSTALLED)
	$(PYTHON) tools/make_assignments.py
	$(PYTHON) -m tools.classroom assignments

# Autograde a folder of submissions, SUBMISSIONS/<student>/<chapter>.ipynb: grades.csv and feedback
grade: $(INSTALLED)
	@test -n "$(SUBMISSIONS)" || { echo "make grade needs SUBMISSIONS=dir, a folder of <student>/<chapter>.ipynb" >&2; exit 2; }
	$(PYTHON) -m tools.classroom grade "$(SUBMISSIONS)"

# A section's full-scale run, written to book/results/: make reproduce SECTION=sec41 [SCALE=paper] [DEVICE=cuda]
SECTION ?= sec41
SCALE ?= cpu
DEVICE ?= auto
reproduce: $(INSTALLED)
	$(PYTHON) -m tools.reproduce $(SECTION) --scale $(SCALE) --device $(DEVICE)

STYLED := influence experiments tests tools bench book

style: $(INSTALLED)
	$(PYTHON) -m ruff check $(STYLED)
	$(PYTHON) -m ruff format --check $(STYLED)

# The CIFAR-10 images bench/gpu.py takes to a GPU machine (carry .gpu-data): one npz under 40 MiB
gpu-data: $(INSTALLED)
	$(PYTHON) bench/gpu.py --prepare

format: $(INSTALLED)
	$(PYTHON) -m ruff format $(STYLED)
	$(PYTHON) -m ruff check --fix $(STYLED)

clean:
	rm -rf _build
