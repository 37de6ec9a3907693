# ctfp: every target sets up what it needs in .venv (created on first use), so each one works on
# a fresh machine that has Python >= 3.10 and a Rust toolchain.
#   make demo    the main job on built-in synthetic data
#   make test    the whole test suite (Rust and Python), as CI runs it
#   make bench   augmentation-throughput benchmarks against OpenCV, Pillow, torchvision

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: demo test test-rust test-python lint bench wheel wheel-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Build the extension in release mode and install the package with its test extras.
$(STAMP): $(PY) pyproject.toml Cargo.toml Cargo.lock $(wildcard rust/*.rs)
	$(PIP) install --quiet "maturin>=1.7,<2"
	$(PIP) install --quiet -e ".[test,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m ctfp demo --out $(OUT)

test: test-rust lint test-python

test-rust:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test --quiet

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/ruff format --check python tests benches
	$(PY) -m mypy.stubtest ctfp._core

test-python: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install --quiet -e ".[test,dev,bench]"
	mkdir -p out
	$(PY) -m pytest benches/test_pipeline.py -q -p no:cacheprovider --benchmark-json=out/bench.json \
		--benchmark-min-rounds=20 --benchmark-max-time=2 --benchmark-warmup=on
	$(PY) benches/report.py out/bench.json | tee out/bench.md
	$(PY) -m pytest benches/bench_ssim.py -q -p no:cacheprovider --benchmark-json=out/bench_ssim.json
	$(PY) benches/bench_ssim.py out/bench_ssim.json

wheel: $(STAMP)
	rm -rf dist
	$(PY) -m maturin build --release --out dist

# The abi3 wheel in a fresh virtual environment, tested from a copy of tests/ (not the source tree).
wheel-check: wheel
	rm -rf out/wheel-check && mkdir -p out/wheel-check
	$(PYTHON) -m venv out/wheel-check/venv
	out/wheel-check/venv/bin/pip install --quiet "$$(ls dist/*.whl)[test]"
	cp -r tests out/wheel-check/tests
	cd out/wheel-check && venv/bin/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) target dist out
