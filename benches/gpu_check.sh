#!/usr/bin/env bash
# One go on a GPU machine (torch with CUDA, no network; Python >= 3.10 with numpy, scipy, pillow,
# tqdm, scikit-learn, pytest, hypothesis, onnx, onnxruntime, torchvision): install ctfp's prebuilt
# abi3 wheel from dist/, then
#   1. versions   python, torch, CUDA, cuDNN, ctfp (and where it was imported from), the GPU
#   2. tests      pytest -m gpu on a copy of tests/ in a temporary folder (the wheel, not python/)
#   3. bench      benches/bench_gpu.py --json/--md  (first-epoch study, fit vs bare step,
#                 loader wait, epoch 1 / 2, predict, ESRGAN)
#   4. ddp        benches/ddp_check.py under torchrun, 2 processes (when that file exists)
#   5. similarity benches/bench_similarity_gpu.py: sim-pixel and sim-ssim, 400 real against
#                 10,000 generated, CPU path and GPU on the same machine, FAISS's GPU support
#   6. gans       benches/train_attribution_gans.py --device cuda: the attribution benchmark's nine
#                 generators at full length (3,000 iterations) into $OUT/attribution_gans
# Each stage's output goes to $OUT/<stage>.log; a failing stage does not stop the later ones; the
# exit code is non-zero when any stage failed ($OUT/summary.txt lists them). Timeouts: tests 100 s,
# bench 300 s, ddp 75 s, similarity 180 s, gans 240 s: stages 1-4 take about 5 minutes on an
# H100/H200, 5-6 about 5 more, so with 15 minutes of device time run them as two calls:
#   STAGES=tests,bench,ddp ...   then   STAGES=similarity,gans ...
# (STAGES: a comma list of tests, bench, ddp, similarity, gans; default all; install and
# versions always run).
#
#   make wheel                       # here: dist/ctfp-<version>-cp310-abi3-manylinux_2_17_x86_64...whl
#   OUT=out/gpu bash benches/gpu_check.sh             # there, from the repository root
#   GPU_CHECK_ALLOW_CPU=1 bash benches/gpu_check.sh   # here: no wheel, the local .venv, CPU smoke
#
# GPU_CHECK_ALLOW_CPU=1 builds and installs nothing: it uses $PYTHON (default .venv/bin/python,
# else python3) with the ctfp it already imports, runs bench_gpu.py --cpu-smoke, and lets the gpu
# tests skip; a check of the script itself, not of a GPU.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ctfp-gpu-check.XXXXXX")
CPU_MODE=${GPU_CHECK_ALLOW_CPU:-0}
declare -a NAMES=() CODES=() SECONDS_TAKEN=()

STAGES=${STAGES:-all}
want() {  # want STAGE: whether $STAGES selects it
    [[ ",$STAGES," == *",all,"* || ",$STAGES," == *",$1,"* ]]
}

stage() {  # stage NAME TIMEOUT_S COMMAND...: run it, tee to $OUT/NAME.log, record its exit code
    local name=$1 limit=$2 rc=0 t0=$SECONDS
    shift 2
    echo
    echo "== $name (timeout ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || rc=${PIPESTATUS[0]}
    [ "$rc" = 124 ] && echo "!! $name: timed out after ${limit} s" | tee -a "$OUT/$name.log"
    echo "== $name: exit $rc in $((SECONDS - t0)) s"
    NAMES+=("$name")
    CODES+=("$rc")
    SECONDS_TAKEN+=("$((SECONDS - t0))")
}

# -- install ---------------------------------------------------------------------------------------
if [ "$CPU_MODE" = 1 ]; then
    if [ -z "${PYTHON:-}" ]; then
        if [ -x .venv/bin/python ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
    fi
    BENCH_FLAGS=(--cpu-smoke)
    SIM_FLAGS=(--cpu-smoke)
    GAN_FLAGS=(--quick --device cpu)
    echo "GPU_CHECK_ALLOW_CPU=1: no wheel, $PYTHON with the ctfp it imports, CPU smoke runs"
else
    PYTHON=${PYTHON:-python3}
    BENCH_FLAGS=(--budget-s 200 --esrgan-budget-s 50)
    SIM_FLAGS=()
    GAN_FLAGS=(--device cuda --iterations 3000 --budget-s 220)
    install_wheel() {
        local whl
        whl=$(ls dist/ctfp-*abi3*manylinux*x86_64*.whl 2>/dev/null | head -n1 || true)
        [ -n "$whl" ] || whl=$(ls dist/ctfp-*.whl 2>/dev/null | head -n1 || true)
        if [ -z "$whl" ]; then
            echo "no dist/ctfp-*.whl: build one first (make wheel) and bring dist/ along"
            return 1
        fi
        echo "installing $whl into $WORK/site"
        "$PYTHON" -m pip install --no-index --no-deps --target "$WORK/site" "$whl" \
            || { echo "pip failed; unpacking the wheel instead"; "$PYTHON" -m zipfile -e "$whl" "$WORK/site"; }
    }
    export -f install_wheel
    export PYTHON WORK
    stage install 120 bash -c install_wheel
    export PYTHONPATH=$WORK/site
fi
export OUT CTFP_GPU_CHECK=1

# -- versions --------------------------------------------------------------------------------------
stage versions 120 "$PYTHON" - "$CPU_MODE" <<'EOF'
import os, platform, sys
import numpy, torch
import ctfp
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn",
      torch.backends.cudnn.version() if torch.cuda.is_available() else None)
print("numpy", numpy.__version__)
print("ctfp", ctfp.__version__, ctfp.__file__)
print("cpu cores", os.cpu_count())
if torch.cuda.is_available():
    for k in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(k)
        print(f"gpu {k}: {torch.cuda.get_device_name(k)}, {p.total_memory / 2**30:.0f} GiB, "
              f"sm_{p.major}{p.minor}")
    import subprocess
    subprocess.run(["nvidia-smi", "-L"], check=False)
elif sys.argv[1] != "1":
    sys.exit("torch sees no CUDA device (GPU_CHECK_ALLOW_CPU=1 allows that)")
else:
    print("no CUDA device (allowed: GPU_CHECK_ALLOW_CPU=1)")
if "PYTHONPATH" in os.environ and not ctfp.__file__.startswith(os.environ["PYTHONPATH"]):
    sys.exit(f"ctfp imported from {ctfp.__file__}, not the installed wheel")
EOF

# -- tests -----------------------------------------------------------------------------------------
cp -r tests "$WORK/tests"
find "$WORK/tests" -name __pycache__ -prune -exec rm -rf {} +
cat > "$WORK/pytest.ini" <<'EOF'
[pytest]
markers =
    slow: longer-running tests
    gpu: needs a CUDA device (skipped elsewhere)
addopts = -ra
EOF
# only the files that hold gpu tests: an unrelated module that cannot be collected here (a
# missing optional package) must not fail the stage
mapfile -t GPU_TEST_FILES < <(cd "$WORK" && grep -l 'pytest.mark.gpu' tests/test_*.py)
echo "gpu tests in: ${GPU_TEST_FILES[*]}"
if want tests; then
    stage tests 100 bash -c 'cd "$1" && shift && "$0" -m pytest -q -m gpu -p no:cacheprovider "$@"' \
        "$PYTHON" "$WORK" "${GPU_TEST_FILES[@]}"
fi

# -- bench -----------------------------------------------------------------------------------------
if want bench; then
    stage bench 300 "$PYTHON" benches/bench_gpu.py --json "$OUT/bench_gpu.json" \
        --md "$OUT/bench_gpu.md" --workdir "$WORK" "${BENCH_FLAGS[@]}"
fi

# -- two-process DDP -------------------------------------------------------------------------------
if ! want ddp; then
    :
elif [ -f benches/ddp_check.py ]; then
    stage ddp 75 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 \
        benches/ddp_check.py
else
    echo "benches/ddp_check.py not found: no DDP stage" | tee "$OUT/ddp.log"
fi

# -- similarity on the GPU against the CPU path ---------------------------------------------------
if want similarity; then
    stage similarity 180 "$PYTHON" benches/bench_similarity_gpu.py \
        --json "$OUT/bench_similarity_gpu.json" --md "$OUT/bench_similarity_gpu.md" "${SIM_FLAGS[@]}"
fi

# -- the attribution benchmark's generators at full length ------------------------------------------
if want gans; then
    stage gans 240 "$PYTHON" benches/train_attribution_gans.py --out "$OUT/attribution_gans" \
        "${GAN_FLAGS[@]}"
fi

# -- summary ---------------------------------------------------------------------------------------
failed=0
{
    echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), cpu mode: $CPU_MODE, out: $OUT"
    for i in "${!NAMES[@]}"; do
        status=ok
        [ "${CODES[$i]}" = 0 ] || { status="FAILED (exit ${CODES[$i]})"; failed=1; }
        printf '%-9s %-20s %4s s\n' "${NAMES[$i]}" "$status" "${SECONDS_TAKEN[$i]}"
    done
} | tee "$OUT/summary.txt"
for i in "${!CODES[@]}"; do [ "${CODES[$i]}" = 0 ] || failed=1; done
[ -f "$OUT/bench_gpu.md" ] && { echo; cat "$OUT/bench_gpu.md"; }
[ -f "$OUT/bench_similarity_gpu.md" ] && { echo; cat "$OUT/bench_similarity_gpu.md"; }
rm -rf "$WORK"
exit "$failed"
