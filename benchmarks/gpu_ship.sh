#!/usr/bin/env bash
# Ships the GPU proof's inputs to a machine reached only through small uploads (no network there):
# the onnxruntime-gpu wheel (with flatbuffers, and jsonschema with its dependencies) and the
# exported runs, in one xz archive cut into parts.
#
#   benchmarks/gpu_ship.sh pack RUNS_DIR [PART_MB]  # here: .gpu/ship.part-00, -01, ... and .gpu/ship.sha256
#   benchmarks/gpu_ship.sh append PART              # there, one upload per part, in order: onto /tmp/ship.tar.xz
#   benchmarks/gpu_ship.sh unpack SHA256            # there: checks the archive, unpacks /tmp/ship/{site,runs}
#
# then there: PYTHONPATH=/tmp/ship/site:. python benchmarks/gpu_bench.py /tmp/ship/runs --out OUT
# (GPU_SHIP_DIR moves /tmp elsewhere.) Arguments are checked first; a mistake is one line, `error: ...`,
# exit 2. `pack` makes the new parts beside the old ones and replaces them only once complete; `unpack`
# replaces /tmp/ship only once the new one is unpacked.
#
# The runs travel without checkpoints/, tensorboard/ and model.keras: serving reads none of them.
# The wheel is unpacked and recompressed (xz: 255 -> ~205 MB for onnxruntime-gpu 1.31.1, one
# upload fewer); unpacking it into site/ is what `pip install --no-deps --target` does for it.
# `unpack` links the machine's own `nvidia` pip packages (CUDA, cuDNN) beside it, where
# onnxruntime.preload_dlls() looks for them.
set -euo pipefail

ORT_WHEEL=onnxruntime-gpu==1.31.1
# Besides it: ORT's flatbuffers, and jsonschema with what it needs (bench checks every run-dir file
# against its JSON Schema, rnnforge/core/run_files.py), which a bare GPU box may lack.
WITH="flatbuffers jsonschema jsonschema-specifications referencing rpds-py attrs typing-extensions"
SHIP_DIR=${GPU_SHIP_DIR:-/tmp}
ARCHIVE=$SHIP_DIR/ship.tar.xz
PACK_DIR=.gpu/new

die() {
    echo "error: $*" >&2
    exit 2
}

usage() {
    die "usage: $0 pack RUNS_DIR [PART_MB] | append PART | unpack SHA256"
}

pack() {
    [ $# -ge 1 ] && [ $# -le 2 ] || die "pack takes RUNS_DIR [PART_MB], got $# argument(s)"
    local runs=$1 part_mb=${2:-60} new=$PACK_DIR
    local stage=$new/stage
    [[ $part_mb =~ ^[1-9][0-9]{0,5}$ ]] || die "PART_MB must be a whole number of MB, 1 to 999999, got '$part_mb'"
    [ -d "$runs" ] || die "$runs is not a folder of exported runs"
    compgen -G "$runs/*/model.onnx" > /dev/null || die "$runs holds no exported run"
    for model in "$runs"/*/model.onnx; do
        [ -f "${model%.onnx}.fp16.onnx" ] || die "$(dirname "$model") has no model.fp16.onnx:" \
            "run 'rnnforge export onnx $(dirname "$model") --fp16' first"
    done
    # The new parts are made in .gpu/new and replace the old ones only once complete: a failing
    # download or a full disk leaves the previous set as it was.
    rm -rf "$new" && mkdir -p "$stage/site" "$stage/runs" || die "cannot create $new"
    trap 'rm -rf "$PACK_DIR"' EXIT  # gone whether pack succeeds or not
    # $WITH unquoted on purpose: several package names
    "${PIP:-pip}" download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 "$ORT_WHEEL" $WITH -d .gpu/wheels \
        > "$new/pip.log" 2>&1 \
        || die "the download of $ORT_WHEEL and $WITH failed, the previous parts are kept:" \
            "$(grep -v '^\s*$' "$new/pip.log" | tail -n 1)"
    for wheel in .gpu/wheels/*.whl; do
        unzip -q -o "$wheel" -d "$stage/site" > /dev/null 2>&1 || die "$wheel is not a readable wheel (delete it and pack again)"
    done
    { tar -C "$runs" --exclude=checkpoints --exclude=tensorboard --exclude=trt_cache --exclude=model.keras -cf - . | tar -C "$stage/runs" -xf -; } \
        2> "$new/tar.log" || die "cannot copy the runs of $runs, the previous parts are kept: $(tail -n 1 "$new/tar.log")"
    { tar -C "$stage" -cf - site runs | xz -T0 -6 > "$new/ship.tar.xz"; } 2> "$new/xz.log" \
        || die "cannot write the archive in $new (disk full?), the previous parts are kept: $(tail -n 1 "$new/xz.log")"
    split -b "${part_mb}M" -d "$new/ship.tar.xz" "$new/ship.part-" || die "cannot cut $new/ship.tar.xz into parts"
    sha256sum "$new/ship.tar.xz" | cut -d' ' -f1 > "$new/ship.sha256"
    rm -f .gpu/ship.part-* .gpu/ship.sha256
    mv "$new"/ship.part-* "$new/ship.sha256" .gpu/
    rm -rf "$new"
    ls -l .gpu/ship.part-*
    echo "sha256 $(cat .gpu/ship.sha256)"
}

append() {
    [ $# -eq 1 ] || die "append takes one PART (a file 'pack' made, e.g. ship.part-00), got $# argument(s)"
    [ -f "$1" ] && [ -r "$1" ] || die "$1 is not a readable file (expected a part that 'pack' made)"
    [ -d "$SHIP_DIR" ] && [ -w "$SHIP_DIR" ] || die "$SHIP_DIR is not a writable folder (GPU_SHIP_DIR)"
    cat -- "$1" >> "$ARCHIVE" 2> /dev/null || die "cannot append $1 to $ARCHIVE (disk full?)"
    ls -l "$ARCHIVE"
}

unpack() {
    [ $# -eq 1 ] || die "unpack takes the SHA256 that 'pack' printed, got $# argument(s)"
    local want=${1,,} got nvidia new=$SHIP_DIR/ship.new
    [[ $want =~ ^[0-9a-f]{64}$ ]] || die "'$1' is not a sha256 (64 hex digits, as 'pack' printed it)"
    [ -f "$ARCHIVE" ] || die "$ARCHIVE does not exist: append the parts first (gpu_ship.sh append PART, in order)"
    got=$(sha256sum "$ARCHIVE" | cut -d' ' -f1)
    [ "$got" = "$want" ] || die "$ARCHIVE sha256 $got, expected $want: a part is missing or doubled"
    rm -rf "$new" && mkdir -p "$new" || die "cannot create $new"
    tar -C "$new" -xJf "$ARCHIVE" 2> /dev/null || { rm -rf "$new"; die "cannot unpack $ARCHIVE into $new (disk full?)"; }
    rm -rf "$SHIP_DIR/ship" && mv "$new" "$SHIP_DIR/ship"
    nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    if [ -n "$nvidia" ]; then ln -sfn "$nvidia" "$SHIP_DIR/ship/site/nvidia"; fi
    echo "unpacked $SHIP_DIR/ship: site: $(ls "$SHIP_DIR/ship/site" | tr '\n' ' ')"
    echo "runs: $(ls "$SHIP_DIR/ship/runs" | tr '\n' ' '); nvidia libraries: ${nvidia:-none found}"
}

case ${1:-} in
    pack) pack "${@:2}" ;;
    append) append "${@:2}" ;;
    unpack) unpack "${@:2}" ;;
    *) usage ;;
esac
