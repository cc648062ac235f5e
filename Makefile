# make book: create .venv, install, build the book into _build/html.   make test: run every check.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# MNIST: $VAELIB_DATA if set, else ../shared/data beside this clone when it exists, else ./data.
VAELIB_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),$(abspath data))
export VAELIB_DATA

.PHONY: install book test benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

book: install
	set -o pipefail; $(BIN)/jupyter-book build . --builder html -W -n --keep-going 2>&1 | tee _build_book.log

test: install
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider chapters

benchmark: install
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf _build _build_book.log
