#!/usr/bin/env bash
# Ships the GPU proof's inputs to a machine reached only through small uploads (no network there):
# the onnxruntime-gpu wheel and the exported runs, in one xz archive cut into parts.
#
#   benchmarks/gpu_ship.sh pack RUNS_DIR [PART_MB]  # here: .gpu/ship.part-00, -01, ... and .gpu/ship.sha256
#   benchmarks/gpu_ship.sh append PART              # there, one upload per part, in order: onto /tmp/ship.tar.xz
#   benchmarks/gpu_ship.sh unpack SHA256            # there: checks the archive, unpacks /tmp/ship/{site,runs}
#
# then there: PYTHONPATH=/tmp/ship/site:. python benchmarks/gpu_bench.py /tmp/ship/runs --out OUT
# (GPU_SHIP_DIR moves /tmp elsewhere.)
#
# The wheel is unpacked and recompressed (xz: 255 -> ~205 MB for onnxruntime-gpu 1.31.1, one
# upload fewer); unpacking it into site/ is what `pip install --no-deps --target` does for it.
# `unpack` links the machine's own `nvidia` pip packages (CUDA, cuDNN) beside it, where
# onnxruntime.preload_dlls() looks for them.
set -euo pipefail

ORT_WHEEL=onnxruntime-gpu==1.31.1
SHIP_DIR=${GPU_SHIP_DIR:-/tmp}
ARCHIVE=$SHIP_DIR/ship.tar.xz

pack() {
    local runs=$1 part_mb=${2:-60} stage=.gpu/stage
    [ -d "$runs" ] || { echo "error: $runs is not a folder of exported runs" >&2; exit 2; }
    compgen -G "$runs/*/model.onnx" > /dev/null || { echo "error: $runs holds no exported run" >&2; exit 2; }
    for model in "$runs"/*/model.onnx; do
        [ -f "${model%.onnx}.fp16.onnx" ] || { echo "error: $(dirname "$model") has no model.fp16.onnx:" \
            "run 'rnnforge export onnx $(dirname "$model") --fp16' first" >&2; exit 2; }
    done
    rm -rf "$stage" .gpu/ship.part-* && mkdir -p "$stage/site" "$stage/runs"
    "${PIP:-pip}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 "$ORT_WHEEL" flatbuffers -d .gpu/wheels
    for wheel in .gpu/wheels/*.whl; do unzip -q -o "$wheel" -d "$stage/site"; done
    tar -C "$runs" --exclude=checkpoints --exclude=tensorboard --exclude=trt_cache -cf - . | tar -C "$stage/runs" -xf -
    tar -C "$stage" -cf - site runs | xz -T0 -6 > .gpu/ship.tar.xz
    split -b "${part_mb}M" -d .gpu/ship.tar.xz .gpu/ship.part-
    sha256sum .gpu/ship.tar.xz | cut -d' ' -f1 > .gpu/ship.sha256
    rm -rf "$stage" .gpu/ship.tar.xz
    ls -l .gpu/ship.part-*
    echo "sha256 $(cat .gpu/ship.sha256)"
}

unpack() {
    local want=$1 got nvidia
    got=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "error: $ARCHIVE sha256 $got, expected $want: a part is missing or doubled" >&2; exit 2; }
    rm -rf "$SHIP_DIR/ship" && mkdir -p "$SHIP_DIR/ship" && tar -C "$SHIP_DIR/ship" -xJf "$ARCHIVE"
    nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    if [ -n "$nvidia" ]; then ln -sfn "$nvidia" "$SHIP_DIR/ship/site/nvidia"; fi
    echo "unpacked $SHIP_DIR/ship: site: $(ls "$SHIP_DIR/ship/site" | tr '\n' ' ')"
    echo "runs: $(ls "$SHIP_DIR/ship/runs" | tr '\n' ' '); nvidia libraries: ${nvidia:-none found}"
}

case ${1:-} in
    pack) pack "${@:2}" ;;
    append) cat "$2" >> "$ARCHIVE" && ls -l "$ARCHIVE" ;;
    unpack) unpack "$2" ;;
    *) echo "usage: $0 pack RUNS_DIR [PART_MB] | append PART | unpack SHA256" >&2; exit 2 ;;
esac
