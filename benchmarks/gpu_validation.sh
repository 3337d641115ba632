#!/usr/bin/env bash
# The prepared GPU check of issue 24, one command for a device machine (10 minutes a command):
# the CUDA test set (`pytest -m cuda`: the tests whose meaning changes on a GPU), then
# benchmarks/gpu_session.py (fast-path gaps on the paper's networks, paper_cost.py's rates,
# pre-training throughput, the side-by-side with the authors' code) in what time is left.
#
#   bash benchmarks/gpu_validation.sh            # from the repository root, on the GPU machine
#
# Writes under $OUT (the device tool's folder; ./gpu_validation_out elsewhere), at most 8 files:
# cuda_tests.txt and cuda_tests.xml (pytest's report and JUnit XML), gpu_session.log and the
# JSON files gpu_session.py writes (gpu_session.json, rates.json, throughput.json,
# side_by_side_cifar10.json, side_by_side_tiny.json). Exit status: pytest's.
#
# Environment: BUDGET_S (default 540) seconds for the whole script, TESTS_S (default 240) for
# the tests; PYTHON (default python3). The device machine has no internet: diffusers (for the
# VAE latent test) comes as a wheel in benchmarks/wheels/ and the authors' checkouts under
# benchmarks/authors/ (both ignored by git; benchmarks/README.md says how to get them), carried
# with the device tool's `carry: ["benchmarks/wheels", "benchmarks/authors"]`.
set -u
cd "$(dirname "$0")/.."
out="${OUT:-gpu_validation_out}"
budget="${BUDGET_S:-540}"
tests_s="${TESTS_S:-240}"
python="${PYTHON:-python3}"
mkdir -p "$out"
start=$(date +%s)

path="$PWD"
for wheel in benchmarks/wheels/*.whl; do
    [ -e "$wheel" ] && path="$path:$PWD/$wheel"
done
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'

# Only the files with CUDA tests: other test modules need packages (snakemake) a device lacks.
echo "== pytest -m cuda (at most ${tests_s} s)"
timeout "$tests_s" "$python" -m pytest -m cuda -q -rA -p no:cacheprovider \
    --junitxml "$out/cuda_tests.xml" \
    tests/test_fast_path.py tests/test_sampling.py tests/test_features.py tests/test_probing.py \
    tests/test_fid.py tests/test_dit.py tests/test_training.py >"$out/cuda_tests.txt" 2>&1
status=$?
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|(passed|failed|skipped|error).* in [0-9.]+s" \
    "$out/cuda_tests.txt"
[ "$status" -eq 124 ] && echo "pytest stopped after ${tests_s} s"
echo "== pytest exit status $status after $(($(date +%s) - start)) s"

left=$((budget - ($(date +%s) - start)))
session=(benchmarks/gpu_session.py --out "$out" --budget-s $((left - 90)))
[ -d benchmarks/authors/ddae ] && session+=(--ddae-repo benchmarks/authors/ddae)
[ -d benchmarks/authors/edm ] && session+=(--edm-repo benchmarks/authors/edm)
echo "== ${session[*]} (at most ${left} s)"
timeout "$left" "$python" "${session[@]}" 2>&1 | tee "$out/gpu_session.log" | tail -80
echo "== done after $(($(date +%s) - start)) s"
exit "$status"
