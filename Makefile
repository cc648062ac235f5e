# make book: create .venv, install, build the book into _build/html.
# make test: build the book, then run every check (unit, chapters, browser).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The data root: $VAELIB_DATA if set, else ../shared/data beside this clone when it exists, else ./data
# (where `make data` downloads MNIST and Fashion-MNIST).
VAELIB_DATA ?= $(if $(wildcard ../shared/data/MNIST),$(abspath ../shared/data),$(abspath data))
export VAELIB_DATA

# The book's JavaScript, served from _build/html so that the book works offline (npm registry only).
VENDOR := book/web/vendor
NPM_PACKAGES := mathjax@3.2.2

.PHONY: install data book test benchmark benchmark-avx2 clean vendor web-data system-packages fonts

# The browser tests drive Debian's headless Chromium (no browser download: there is no internet), and
# the data tests read Debian's Fashion-MNIST. Installed here when missing and possible (root, apt-get).
SYSTEM_PACKAGES := chromium chromium-driver dataset-fashion-mnist

# The glyph dataset of chapter 13 (vaelib/fonts.py): Debian's font packages (about 51 MB to download, 132 MB
# installed; every font's source and licence are in the README), rendered into $(VAELIB_FONTS). Not part
# of `make book` yet.
VAELIB_FONTS ?= $(abspath data/Fonts)
export VAELIB_FONTS
FONT_PACKAGES ?=  # empty: the list in vaelib/fonts.py (DEBIAN_PACKAGES)


install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

vendor: .npm-vendor/.copied

.npm-vendor/.copied:
	npm install --prefix .npm-vendor --no-save --no-audit --no-fund --ignore-scripts $(NPM_PACKAGES)
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)
	cp -r .npm-vendor/node_modules/mathjax/es5 $(VENDOR)/mathjax
	touch $@

# The explorers' data from the checkpoints: an index (models.js) and weights/, one file per model, loaded on demand.
web-data: book/web/explorer/models.js

book/web/explorer/models.js: $(VENV)/.installed $(wildcard checkpoints/*.json) vaelib/web.py | data  # the map needs MNIST
	$(BIN)/python -m vaelib export-web --overwrite $@

# The datasets, before any chapter runs: read from $VAELIB_DATA (Fashion-MNIST also from Debian's folder),
# else fetched and checked (from $VAELIB_MIRROR's server when set). Fashion-MNIST that cannot be fetched
# comes from Debian's dataset-fashion-mnist where apt-get can install it (root); else one line says how.
data: $(VENV)/.installed
	@$(BIN)/python -m vaelib download --dataset mnist
	@error=$$(mktemp); if ! $(BIN)/python -m vaelib download --dataset fashion-mnist 2> $$error; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "Fashion-MNIST could not be fetched: installing Debian's dataset-fashion-mnist"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist > /dev/null; } \
	      || { cat $$error >&2; rm -f $$error; exit 1; }; \
	    $(BIN)/python -m vaelib download --dataset fashion-mnist || { rm -f $$error; exit 1; }; \
	  else cat $$error >&2; rm -f $$error; exit 1; fi; \
	fi; rm -f $$error

book: install vendor data web-data
	# --all: a page whose notebook did not change still shows what the changed library draws now.
	# A failed notebook's traceback lands in _build/html/reports/: clear an earlier build's, so none ships stale.
	rm -rf _build/html/reports
	set -o pipefail; $(BIN)/jupyter-book build . --all --builder html -W -n --keep-going 2>&1 | tee _build_book.log

system-packages:
	@if command -v chromium > /dev/null && command -v chromedriver > /dev/null \
	    && [ -d /usr/share/datasets/fashion-mnist ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  echo "installing Debian packages for the tests: $(SYSTEM_PACKAGES)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) > /dev/null; } \
	    || { echo "make test: apt-get could not install $(SYSTEM_PACKAGES); install them, then run make test again" >&2; exit 1; }; \
	else \
	  echo "make test needs Debian's $(SYSTEM_PACKAGES): run 'sudo apt-get install $(SYSTEM_PACKAGES)', then make test again" >&2; \
	  exit 1; \
	fi

# The fonts: installed where missing and possible (root, apt-get), else one line says how; then rendered and cached.
fonts: $(VENV)/.installed
	@packages="$(FONT_PACKAGES)"; [ -n "$$packages" ] || packages=$$($(BIN)/python -m vaelib.fonts --packages) || exit 1; \
	missing=$$(dpkg-query -W -f='$${Package} $${Status}\n' $$packages 2>&1 | grep -v ' installed$$' | cut -d' ' -f1); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    echo "installing Debian's font packages: $$(echo $$missing | wc -w) missing"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$packages > /dev/null; } \
	      || { echo "make fonts: apt-get could not install the font packages; run 'apt-get install $$packages'" >&2; exit 1; }; \
	  else \
	    echo "make fonts needs Debian's font packages: run 'sudo apt-get install $$packages', then make fonts again" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(BIN)/python -m vaelib.fonts

test: system-packages install book
	$(BIN)/python -m pytest --durations=15
	$(BIN)/python -m pytest --nbval-lax --nbval-cell-timeout=900 -p no:cacheprovider chapters

benchmark: install
	$(BIN)/python benchmarks/train_speed.py --variants

# The same, with PyTorch's, oneDNN's and MKL's kernels restricted to AVX2: a CPU without AVX-512 (most laptops).
benchmark-avx2: install
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	  $(BIN)/python benchmarks/train_speed.py --skip-loops

clean:
	rm -rf _build _build_book.log book/web/explorer/models.js book/web/explorer/weights
