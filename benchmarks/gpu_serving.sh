#!/usr/bin/env bash
# Serving on a GPU: each exported run benched with every node asserted on the provider, then
# load-tested for the highest request rate within a p99 budget, on the serving install alone.
#
#   benchmarks/gpu_serving.sh RUNS_DIR OUT [PROVIDER]   # PROVIDER: cuda (default) or cpu (a rehearsal)
#
# Environment: VARIANTS (default fp32,fp16), SEARCH_SECONDS (default 80), BATCH_SIZES (step 1's,
# default 1,32,256), TF_BASELINE (step 1's --tf-baseline, default auto: the recorded timing where
# TensorFlow is not installed), PYTHON (default python3).
#
# RUNS_DIR: exported runs with model.fp16.onnx (as `gpu_ship.sh pack` ships them; they are copied
# to OUT/runs first, the originals stay as they were). Steps, each a fresh `rnnforge` process:
#   1. `bench --all --provider PROVIDER --variants VARIANTS`: placement strict (on CUDA a node
#      ONNX Runtime would run on the CPU stops it, exit 4), confidence intervals, provenance;
#   2. `bench load RUN --provider PROVIDER --slo-p99-ms B` per run, B = 10 ms (video: 100 ms;
#      the SLOs of docs/benchmarks/serving-cpu.md, so the two compare), the search bounded by
#      SEARCH_SECONDS (default 80) each: bench/load.json and bench/serving.json.
# OUT/summary.txt lists each step's exit status; OUT/serving.tar.xz holds every file the steps wrote
# (the runs' bench folders and the logs) for the one-file trip back. A failed step does not stop
# the next: its log says why.
set -uo pipefail

[ $# -ge 2 ] && [ $# -le 3 ] || { echo "error: usage: $0 RUNS_DIR OUT [cuda|cpu]" >&2; exit 2; }
runs=$1 out=$2 provider=${3:-cuda}
[ -d "$runs" ] || { echo "error: $runs is not a folder of exported runs" >&2; exit 2; }
[[ $provider =~ ^(cuda|cpu)$ ]] || { echo "error: PROVIDER must be cuda or cpu, got '$provider'" >&2; exit 2; }
search_s=${SEARCH_SECONDS:-80}
variants=${VARIANTS:-fp32,fp16}
batch_sizes=${BATCH_SIZES:-1,32,256}
tf_baseline=${TF_BASELINE:-auto}
python=${PYTHON:-python3}

mkdir -p "$out/logs" || exit 2
rm -rf "$out/runs" && cp -r "$runs" "$out/runs" || exit 2
summary=$out/summary.txt
: > "$summary"

step() {  # step NAME COMMAND...: runs it, logs it, records its exit status
    local name=$1 started=$SECONDS status
    shift
    echo "$ rnnforge $*" > "$out/logs/$name.log"
    echo "$ rnnforge $*"
    "$python" -m rnnforge "$@" >> "$out/logs/$name.log" 2>&1
    status=$?
    tail -n +2 "$out/logs/$name.log" | tail -n 4
    echo "$name: exit $status, $((SECONDS - started)) s" | tee -a "$summary"
}

{
    date -u +%FT%TZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv 2>&1 || true
    "$python" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.__file__, o.get_available_providers())'
    nproc
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

step bench bench --all "$out/runs" --provider "$provider" --variants "$variants" --batch-sizes "$batch_sizes" --max-seconds 2 --tf-baseline "$tf_baseline"
for run in "$out"/runs/*/; do
    name=$(basename "$run")
    slo=10
    [ "$name" = video ] && slo=100
    step "load_$name" bench load "$run" --provider "$provider" --variants "$variants" --slo-p99-ms "$slo" --time-limit "$search_s"
done

tar -C "$out" -cJf "$out/serving.tar.xz" --exclude='*.onnx' --exclude='*.npz' --exclude='*.keras' \
    machine.txt summary.txt logs runs
ls -l "$out/serving.tar.xz"
cat "$summary"
