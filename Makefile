# ctfp: every target sets up what it needs in .venv (created on first use), so each one works on
# a fresh machine that has Python >= 3.10 and a Rust toolchain.
#   make demo    the main job on built-in synthetic data
#   make test    the whole test suite (Rust and Python), as CI runs it
#   make bench   augmentation-throughput benchmarks against OpenCV, Pillow, torchvision
#   make wheel-check   the abi3 manylinux2014 wheel, tested in a fresh virtual environment
#   make sdist-check   the sdist, built from source in a fresh virtual environment

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
OUT    ?= out/demo

.PHONY: demo test test-rust test-python lint bench wheel wheel-check sdist sdist-check clean

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
	$(PY) -m mypy

# The suite, then the docstring examples of the package run as doctests.
test-python: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules python/ctfp

bench: $(STAMP)
	$(PIP) install --quiet -e ".[test,dev,bench]"
	mkdir -p out
	$(PY) -m pytest benches/test_pipeline.py -q -p no:cacheprovider --benchmark-json=out/bench.json \
		--benchmark-min-rounds=20 --benchmark-max-time=2 --benchmark-warmup=on
	$(PY) benches/report.py out/bench.json | tee out/bench.md
	$(PY) -m pytest benches/bench_ssim.py -q -p no:cacheprovider --benchmark-json=out/bench_ssim.json
	$(PY) benches/bench_ssim.py out/bench_ssim.json

# Packaging tools only (no editable build): maturin, and zig as the linker that targets glibc 2.17
# whatever the build machine's glibc (tested with ziglang 0.17.1).
BUILD_TOOLS := $(VENV)/.build-tools
$(BUILD_TOOLS): $(PY)
	$(PIP) install --quiet "maturin>=1.7,<2" "ziglang>=0.13,<0.18"
	touch $(BUILD_TOOLS)

# One abi3 wheel (CPython >= 3.10) for manylinux2014 = glibc >= 2.17. It fails unless the wheel has
# that tag and no symbol of the extension needs a glibc newer than WHEEL_GLIBC (objdump -T).
WHEEL_GLIBC := 2.17
WHEEL_GLOB  := dist/ctfp-*-cp310-abi3-*manylinux_2_17_*.whl
# maturin runs zig as `python3 -m ziglang`, hence .venv/bin first on PATH.
wheel: $(BUILD_TOOLS)
	rm -f dist/ctfp-*.whl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m maturin build --release --locked --zig \
		--compatibility manylinux2014 --out dist
	@command -v objdump >/dev/null || { echo "objdump (binutils) is needed to check it"; exit 1; }; \
	whl=$$(ls $(WHEEL_GLOB) 2>/dev/null) || { echo "no $(WHEEL_GLOB) in dist/"; exit 1; }; \
	tmp=$$(mktemp -d) && $(PY) -m zipfile -e "$$whl" "$$tmp" && \
	so=$$(ls "$$tmp"/ctfp/_core*.so) && \
	glibc=$$(objdump -T "$$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1) && \
	needed=$$(objdump -p "$$so" | awk '/NEEDED/ {printf "%s ", $$2}') && rm -rf "$$tmp" && \
	echo "$$whl: newest glibc symbol $$glibc (at most $(WHEEL_GLIBC)); needs $$needed" && \
	test "$$(printf '%s\n' "$$glibc" $(WHEEL_GLIBC) | sort -V | tail -n1)" = $(WHEEL_GLIBC) || \
		{ echo "the wheel needs glibc $$glibc > $(WHEEL_GLIBC)"; exit 1; }

# The wheel in a fresh virtual environment, tested from a copy of tests/ (not the source tree);
# benches/ is copied beside it because some tests run a benchmark script on the CPU.
wheel-check: wheel
	rm -rf out/wheel-check && mkdir -p out/wheel-check
	$(PYTHON) -m venv out/wheel-check/venv
	out/wheel-check/venv/bin/pip install --quiet "$$(ls $(WHEEL_GLOB))[test]"
	cp -r tests benches out/wheel-check/
	cd out/wheel-check && venv/bin/python -c "import ctfp; print('ctfp', ctfp.__version__, ctfp.__file__)"
	cd out/wheel-check && venv/bin/python -m pytest -q -p no:cacheprovider tests

# The sdist: what it must hold, then `pip install` of it in a fresh virtual environment (a build
# from source with the Rust toolchain; crates compiled in SDIST_TARGET, kept between runs) and a
# smoke test. --no-cache-dir: else pip reuses the wheel it built from an earlier sdist of this version.
SDIST_TARGET ?= $(CURDIR)/out/sdist-target
SDIST_SMOKE := import os, tempfile, numpy as np, ctfp; from PIL import Image; \
	a = (np.arange(48 * 64) % 251).astype(np.uint8).reshape(48, 64); \
	p = os.path.join(tempfile.mkdtemp(), 'a.png'); Image.fromarray(a).save(p); \
	assert (ctfp.decode_png(p) == a).all(); \
	print('ctfp', ctfp.__version__, ctfp.__file__, 'decodes a Pillow PNG')
sdist: $(BUILD_TOOLS)
	rm -f dist/ctfp-*.tar.gz
	$(PY) -m maturin sdist --out dist
	@sd=$$(ls dist/ctfp-*.tar.gz) && list=$$(tar -tzf "$$sd") && \
	for f in Cargo.toml Cargo.lock pyproject.toml README.md rust/lib.rs python/ctfp/__init__.py \
			python/ctfp/_core.pyi python/ctfp/py.typed PKG-INFO; do \
		echo "$$list" | grep -q "^ctfp-[^/]*/$$f$$" || { echo "$$sd lacks $$f"; exit 1; }; done && \
	if echo "$$list" | grep -E '\.(so|pyd)$$|/__pycache__/'; then echo "$$sd holds build output"; exit 1; fi && \
	echo "$$sd: $$(echo "$$list" | grep -vc '/$$') files"

sdist-check: sdist
	rm -rf out/sdist-check && mkdir -p out/sdist-check
	$(PYTHON) -m venv out/sdist-check/venv
	out/sdist-check/venv/bin/pip install --quiet --upgrade pip
	CARGO_TARGET_DIR="$(SDIST_TARGET)" out/sdist-check/venv/bin/pip install --no-cache-dir \
		"$$(ls dist/ctfp-*.tar.gz)"
	cd out/sdist-check && venv/bin/python -c "$(SDIST_SMOKE)"

clean:
	rm -rf $(VENV) target dist out
