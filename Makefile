# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The machine's pip config adds a local find-links with a CPU-only torch that cannot import
# torchvision; the constraints pin registry builds, so that wheel is never chosen.
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install browser demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# fastdtw's compiled extension: the PyPI sdist needs Cython at build time and no isolation,
	# otherwise pip silently installs the pure-Python build (50-300x slower).
	$(PIP) install -q -c constraints.txt cython
	$(PIP) install -q -c constraints.txt --no-build-isolation --no-binary fastdtw --no-cache-dir fastdtw
	$(BIN)/python -c "import sys; from stages.dtw import fastdtw_build; sys.exit(fastdtw_build() != 'compiled')" \
		|| (echo "fastdtw: only the pure-Python build is installed" && exit 1)
	# clip-benchmark's recall is the independent reference the recall test checks against; its
	# declared dependencies (pycocoevalcap, webdataset, scikit-learn) are not needed for that.
	$(PIP) install -q -c constraints.txt --no-deps clip-benchmark
	touch $(STAMP)

# The report test opens report/index.html in headless Chromium, the review page tests drive it
# through chromium-driver and selenium (Debian packages; no browser download). Installed when
# missing and we are root (CI, fresh machines); otherwise those tests skip and say why.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium / chromium-driver not installed: the report and review browser tests will skip"; }
	@command -v systemd-analyze >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq systemd >/dev/null \
		|| echo "systemd-analyze not installed: the unit-file test will skip"; }

demo: install
	$(BIN)/xmodal sample --out out/sample --n 200 --faults 0.1 --seed 0 --dataset-faults 0.2 --eval-set 40
	$(BIN)/xmodal run configs/demo.yaml

# Lint (ruff and mypy) first, so CI's `make test` fails on a type error as on a test failure.
test: install browser lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python -m benchmarks

# mypy's files and settings are in pyproject.toml ([tool.mypy]).
lint: install
	$(BIN)/ruff check access pipeline stages schemas tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf out .pytest_cache
