# mtl-companion: build and test the executable book.
#
#   make book   execute stale notebooks (nbval) and build book/_build/html
#   make test   unit tests, then every notebook (nbval), then a -W book build
#
# Notebook sources are jupytext MyST files notebooks/**/*.md. Each is
#   1. converted to build/notebooks/<rel>.ipynb         (jupytext, unexecuted)
#   2. executed by nbval; tests/nbval_export.py writes the executed copy to
#      book/chapters/<rel>.ipynb only if every cell passed
#   3. rendered by Jupyter Book with execute_notebooks: "off".
# So a notebook is executed once, and the book shows exactly what was tested.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON       ?= python3
VENV         ?= .venv
BIN          := $(VENV)/bin
STAMP        := $(VENV)/.installed
CELL_TIMEOUT ?= 1800

NB_SRC   := $(sort $(shell find notebooks -name '*.md' ! -name 'README.md' ! -path '*/.ipynb_checkpoints/*' 2>/dev/null))
NB_REL   := $(NB_SRC:notebooks/%.md=%)
NB_STAGE := $(NB_REL:%=build/notebooks/%.ipynb)
NB_OUT   := $(NB_REL:%=book/chapters/%.ipynb)
PY_SRC   := $(shell find mtl_src -name '*.py' ! -path '*/__pycache__/*' 2>/dev/null)
EXPORTER := tests/nbval_export.py

# Generated data, parsed QM9 and single-task baselines are cached per checkout (a clean clone starts
# from nothing, so CI always exercises the build path); set MTL_COMPANION_DATA to share a cache.
export MTL_COMPANION_DATA ?= $(CURDIR)/build/data

# nbval executes, nbval_export (tests/ on PYTHONPATH) publishes to book/chapters.
NBVAL = PYTHONPATH=tests$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m pytest \
	-p nbval_export --nbval-lax --nbval-current-env \
	--nbval-cell-timeout=$(CELL_TIMEOUT) \
	--nbexport-root=build/notebooks --nbexport-dest=book/chapters

# Delete generated notebooks whose source is gone (else Sphinx sees an orphan page).
define prune_orphans
	@{ find book/chapters build/notebooks -name '*.ipynb' 2>/dev/null || true; } | while read -r f; do \
	  case " $(NB_OUT) $(NB_STAGE) " in *" $$f "*) ;; *) echo "removing orphan $$f"; rm -f "$$f";; esac; \
	done
endef

.PHONY: help venv book test clean distclean run smoke-paper

help:
	@echo "targets:"
	@echo "  make venv    create .venv and pip install -e '.[book,test]' (no-op when up to date)"
	@echo "  make book    execute stale notebooks, build the book -> book/_build/html/index.html"
	@echo "  make test    unit tests, nbval over every notebook, book build with warnings as errors"
	@echo "  make run NB=notebooks/<paper>/<nb>.md ARGS='-p name value ...'"
	@echo "               run one notebook with papermill parameters (python -m mtl_src.run)"
	@echo "  make smoke-paper  the MultiMNIST chapter in the paper profile on a tiny prepared fixture"
	@echo "               (CPU, 1 method, 1 seed, 1 epoch: checks the full-scale path end to end, ~1 min)"
	@echo "  make clean   remove build outputs (keeps .venv);  make distclean  also removes .venv"
	@echo "variables: CELL_TIMEOUT=$(CELL_TIMEOUT) (seconds per notebook cell), PYTHON=$(PYTHON)"

# ---------------------------------------------------------------- venv
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[book,test]'
	touch $@

# ---------------------------------------------------------------- notebooks
build/notebooks/%.ipynb: notebooks/%.md | $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/jupytext --to ipynb --set-kernel python3 -o - $< > $@.tmp
	mv $@.tmp $@

# Stale = its source or any mtl_src module (or the exporter) changed.
book/chapters/%.ipynb: build/notebooks/%.ipynb $(PY_SRC) $(EXPORTER) | $(STAMP)
	$(NBVAL) $<

# The claims ledger collects the ledgers the other chapters save when executed: it runs after them.
CLAIMS := book/chapters/summary/claims.ipynb
$(CLAIMS): $(filter-out $(CLAIMS),$(NB_OUT))

# ---------------------------------------------------------------- book
book: $(NB_OUT) | $(STAMP)
	$(prune_orphans)
	$(BIN)/jupyter-book build book
	@echo "open book/_build/html/index.html"

# ---------------------------------------------------------------- test
test: $(NB_STAGE) | $(STAMP)
	$(BIN)/python -m pytest tests
	@test -n "$(NB_STAGE)" || { echo "make test: no notebooks/**/*.md found"; exit 1; }
	$(NBVAL) $(NB_STAGE)
	$(prune_orphans)
	$(BIN)/jupyter-book build book --all -W -n --keep-going

# ---------------------------------------------------------------- run
run: | $(STAMP)
	@test -n "$(NB)" || { echo "usage: make run NB=notebooks/<paper>/<nb>.md ARGS='-p name value'"; exit 2; }
	$(BIN)/python -m mtl_src.run $(NB) $(ARGS)

# ---------------------------------------------------------------- smoke run of the paper profile
smoke-paper: | $(STAMP)
	$(BIN)/python -m pytest tests/test_run.py -k paper_profile_smoke -q

# ---------------------------------------------------------------- clean
clean:
	rm -rf build book/_build book/chapters .pytest_cache .hypothesis
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv *.egg-info
