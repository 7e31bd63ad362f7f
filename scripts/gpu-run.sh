#!/usr/bin/env bash
# The GPU run on an offline machine, one step per size-limited transfer (call; see docs/gpu.md;
# the kit comes from `make gpu-kit`):
#
#   scripts/gpu-run.sh build .gpu/call-1     install the wheels, unpack llama-cpp-python, start its CUDA
#                                            build in the background (it outlives the call), stash parts
#   scripts/gpu-run.sh stash .gpu/call-N     stash this call's model parts (and say how the build goes)
#   scripts/gpu-run.sh run .gpu/call-LAST    stash, wait for the build, assemble and check the models,
#                                            bench + ladder + a cross-check; results into $OUT/gpu/
#   FLAVOUR=cpu-native scripts/gpu-run.sh --rehearse
#                                            every call of the kit, here, in a temporary folder, with a
#                                            CPU build and the tiny matrix gpu-rehearsal
#
# Everything that must outlive a call lives under $BPC_TMP (default /tmp), which the machine keeps
# between calls made back to back.
# Each step logs its wall time. `run` refuses to start without a finished build.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == --rehearse ]]; then  # the rehearsal's own defaults; anything set in the environment wins
    : "${FLAVOUR:=cpu-native}" "${BPC_MATRIX:=gpu-rehearsal}" "${PY:=$ROOT/.venv/bin/python}" "${BENCH_BUDGET_S:=400}"
    : "${LADDER_BUDGET_S:=300}" "${LADDER_BYTES:=400}" "${LADDER_CODED:=100}" "${LADDER_THREADS:=1}"
    : "${XCHECK_BYTES:=1000}" "${XCHECK_THREADS:=1}" "${BUILD_WAIT_S:=900}" "${JOBS:=$(nproc)}"
    : "${RUN_BUDGET_S:=1800}" "${GROUPS_BYTES:=300}" "${GROUPS_LANES:=2}"
    export FLAVOUR BPC_MATRIX PY BENCH_BUDGET_S LADDER_BUDGET_S LADDER_BYTES LADDER_CODED LADDER_THREADS
    export XCHECK_BYTES XCHECK_THREADS BUILD_WAIT_S JOBS RUN_BUDGET_S GROUPS_BYTES GROUPS_LANES
fi
BPC_TMP=${BPC_TMP:-/tmp}
SITE=$BPC_TMP/bpc-site            # the carried wheels, installed (PYTHONPATH)
BUILD=$BPC_TMP/bpc-build          # llama-cpp-python: src/, build.log, state, site/
STASH=$BPC_TMP/bpc-stash          # model parts as the calls bring them
export BPCBENCH_CACHE=$BPC_TMP/bpc-cache
PY=${PY:-python3}
LLAMA_VERSION=$("$PY" "$ROOT/scripts/pins.py" llama-cpp-python) || exit 2  # pyproject.toml's pin
FLAVOUR=${FLAVOUR:-cuda}
JOBS=${JOBS:-16}
CUDA_CMAKE_ARGS=${CUDA_CMAKE_ARGS:--DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90}
WHEEL_CACHE=${WHEELS:-$HOME/.cache/bpcbench/wheels}/$FLAVOUR
MATRIX=${BPC_MATRIX:-gpu}
NGL=${BPC_NGL:-99}
BENCH_BUDGET_S=${BENCH_BUDGET_S:-270}     # the bench is stopped (SIGTERM: finished cells kept) after this
LADDER_BUDGET_S=${LADDER_BUDGET_S:-90}
LADDER_BYTES=${LADDER_BYTES:-8000}
LADDER_CODED=${LADDER_CODED:-1000}
LADDER_THREADS=${LADDER_THREADS:-8}       # per model; base and level run at once
RUN_BUDGET_S=${RUN_BUDGET_S:-540}         # the whole run step; its call's time limit is 570 s
BUILD_WAIT_S=${BUILD_WAIT_S:-300}         # of that, the most spent waiting for the build
XCHECK_BYTES=${XCHECK_BYTES:-4000}         # the cross-check's prefix of alice29
XCHECK_THREADS=${XCHECK_THREADS:-4}
GROUPS_BYTES=${GROUPS_BYTES:-4000}         # one lane group against two (#22 item 3): alice29's prefix, lanes
GROUPS_LANES=${GROUPS_LANES:-32}
LOG=$BPC_TMP/bpc-gpu-run.log
export PYTHONUNBUFFERED=1

say() {  # to stderr, and to the log once its folder exists
    local line
    line="[gpu-run $(date -u +%H:%M:%S)] $*"
    echo "$line" >&2
    [[ -d ${LOG%/*} ]] && echo "$line" >>"$LOG"
    return 0
}
die() { say "error: $1"; exit "${2:-2}"; }

# step NAME CMD...: run CMD, log its wall time and exit status; returns that status
step() {
    local name=$1 t0 rc
    shift
    t0=$(date +%s.%N)
    "$@"
    rc=$?
    say "$name: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s (exit $rc)"
    return $rc
}

stash() {  # CALL_DIR: check this call's parts against SHA256SUMS, keep them under $STASH
    local call=$1
    mkdir -p "$STASH"
    cp "$call/MODELS" "$call/SHA256SUMS" "$STASH/" || return 1
    compgen -G "$call/parts/*" >/dev/null || return 0
    (cd "$call/parts" && sha256sum --quiet --strict --ignore-missing -c ../SHA256SUMS) || return 1
    cp "$call"/parts/* "$STASH/"
    say "stashed: $(cd "$call/parts" && ls | tr '\n' ' ')"
}

cuda_env() {  # nvcc for CMake, the CUDA libraries for the loader (no-op in a CPU flavour)
    local nvcc
    [[ $FLAVOUR == cuda ]] || return 0
    nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || { say "nvcc not found"; return 0; }
    export PATH=${nvcc%/*}:$PATH CUDACXX=${CUDACXX:-$nvcc}
    export LD_LIBRARY_PATH=${nvcc%/bin/nvcc}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

build_state() { cat "$BUILD/state" 2>/dev/null || echo none; }

report_build() {
    local state
    state=$(build_state)
    if [[ $state == running ]]; then
        say "build running for $(( $(date +%s) - $(stat -c %Y "$BUILD/started") )) s: $(tail -c 300 "$BUILD/build.log" | tr '\n\r' '  ' | tail -c 160)"
    elif [[ $state == failed ]]; then
        tail -15 "$BUILD/build.log" >&2
        say "build: failed (log above); stop here, the run call would refuse"
    else
        say "build: $state"
    fi
}

install_wheels() {  # the carried wheels (or, rehearsing, the same ones for this Python) into $SITE
    local dir=${BPC_WHEELS:-$1/whl}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$dir"/*.whl
}

unpack_source() {
    rm -rf "$BUILD/src" && mkdir -p "$BUILD/src" &&
        "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
            "$1"/src/llama_cpp_python-$LLAMA_VERSION-trimmed.tar.xz "$BUILD/src"
}

compile_llama() {  # the build itself: a wheel of llama-cpp-python, installed into $BUILD/site
    local args=$1
    cd "$BUILD/src/llama_cpp_python-$LLAMA_VERSION" &&
        CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$JOBS PYTHONPATH=$SITE \
            "$PY" -m pip wheel --no-deps --no-build-isolation --no-index -w "$BUILD/wheel" . &&
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$BUILD/site" \
            "$BUILD"/wheel/llama_cpp_python-$LLAMA_VERSION-*.whl
}

start_build() {
    local args cached
    mkdir -p "$BUILD" && touch "$BUILD/started"
    case $FLAVOUR in
        cuda) args=$CUDA_CMAKE_ARGS ;;
        cpu-portable) args=-DGGML_NATIVE=OFF ;;
        *) args= ;;
    esac
    cached=$(ls "$WHEEL_CACHE"/llama_cpp_python-$LLAMA_VERSION-*.whl 2>/dev/null | head -1)
    if [[ $FLAVOUR != cuda && -n $cached ]]; then
        say "rehearsal: using the cached $FLAVOUR wheel $cached instead of compiling (the device compiles with CMAKE_ARGS=\"$CUDA_CMAKE_ARGS\" -j$JOBS)"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$BUILD/site" "$cached" &&
            echo ok >"$BUILD/state" || { echo failed >"$BUILD/state"; return 1; }
        return 0
    fi
    say "compiling llama-cpp-python $LLAMA_VERSION with CMAKE_ARGS=\"$args\" -j$JOBS in the background; log $BUILD/build.log"
    echo running >"$BUILD/state"
    # setsid: a new session outlives the call that started it, so the build runs while the next calls transfer
    setsid nohup bash "${BASH_SOURCE[0]}" _compile "$args" </dev/null >/dev/null 2>&1 &
}

background_compile() {  # _compile ARGS: the background half of start_build
    local t0 s
    t0=$(date +%s)
    compile_llama "$1" >"$BUILD/build.log" 2>&1 && s=ok || s=failed
    echo "build $s in $(( $(date +%s) - t0 )) s" >>"$BUILD/build.log"
    echo "$s" >"$BUILD/state"
}

wait_build() {
    local waited=0
    while [[ $(build_state) == running && $waited -lt $BUILD_WAIT_S ]]; do
        (( waited % 30 == 0 )) && report_build
        sleep 5
        waited=$((waited + 5))
    done
    case $(build_state) in
        ok) say "build ready: $(tail -1 "$BUILD/build.log" 2>/dev/null || echo "a cached wheel")" ;;
        none) die "no llama-cpp-python build here: run 'scripts/gpu-run.sh build' first (call 1; a machine that went back keeps nothing)" 3 ;;
        running) die "the build is still running after ${BUILD_WAIT_S} s; nothing was run" 3 ;;
        *) tail -20 "$BUILD/build.log" >&2; die "the llama-cpp-python build failed; log above" 3 ;;
    esac
}

assemble_models() {  # MODELS: name sha256 bytes nparts dest; dest is site/... or cache/...
    local name sha bytes n dest target i part
    while IFS=$'\t' read -r name sha bytes n dest; do
        case $dest in
            site/*) target=$SITE/${dest#site/}; mkdir -p "$(dirname "$target")"; touch "$(dirname "$target")/__init__.py" ;;
            cache/*) target=$BPCBENCH_CACHE/${dest#cache/}; mkdir -p "$(dirname "$target")" ;;
            *) die "MODELS: unknown destination $dest" ;;
        esac
        if [[ -f $target ]] && [[ $(stat -c %s "$target") == "$bytes" ]] && echo "$sha  $target" | sha256sum --quiet -c 2>/dev/null; then
            continue
        fi
        : >"$target.tmp"
        for ((i = 0; i < n; i++)); do
            part=$STASH/$(printf '%s.part%02d' "$name" "$i")
            [[ -f $part ]] || die "model part $(basename "$part") is missing: a stash call was skipped or the machine went back" 3
            cat "$part" >>"$target.tmp"
        done
        echo "$sha  $target.tmp" | sha256sum --quiet -c || die "$name: assembled file does not match its sha256" 3
        mv "$target.tmp" "$target"
        say "model $name: $bytes bytes, sha256 ${sha:0:12}… -> $target"
    done <"$STASH/MODELS"
}

bpc() { PYTHONPATH=$BUILD/site:$SITE "$PY" -m bpcbench "$@"; }

check_offload() {
    local yes
    yes=$(PYTHONPATH=$BUILD/site:$SITE "$PY" -c "import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())") || return 1
    say "llama_cpp from $BUILD/site; GPU offload supported: $yes"
    [[ $FLAVOUR != cuda || $yes == True ]]
}

cross_check() {  # a file coded on this backend decodes here; with another offload it is refused (exit 4)
    local dir=$1 rc f=$1/alice-xcheck
    head -c "$XCHECK_BYTES" "$ROOT/src/bpcbench/data/corpora/canterbury/alice29.txt" >"$f.txt"
    bpc compress "$f.txt" -o "$f.bpcz" -ngl "$NGL" -t "$XCHECK_THREADS" --stats || return 1
    bpc decompress "$f.bpcz" -o "$f.out" -ngl "$NGL" -t "$XCHECK_THREADS" --stats && cmp "$f.txt" "$f.out" || return 1
    bpc decompress "$f.bpcz" -o "$f.cpu" -ngl 0 -t "$XCHECK_THREADS"
    rc=$?
    say "decoding with -ngl 0: exit $rc (4 = refused, as it must be)"
    [[ $rc == 4 ]]
}

collect() {  # at most 8 files, one folder down: what one call may bring back from the machine
    local work=$1 dest=$2 bench
    mkdir -p "$dest"
    bench=$work/bench
    for f in results.csv summary.md env.json; do [[ -f $bench/$f ]] && cp "$bench/$f" "$dest/"; done
    for f in ladder.csv ladder.md; do [[ -f $work/ladder/$f ]] && cp "$work/ladder/$f" "$dest/"; done
    [[ -f $work/alice-xcheck.bpcz ]] && cp "$work/alice-xcheck.bpcz" "$dest/"
    tar -czf "$dest/run.tar.gz" -C "$work" --exclude='alice-xcheck.*' . 2>/dev/null
    cp "$LOG" "$dest/gpu-run.log"
    say "results in $dest: $(ls "$dest" | tr '\n' ' ')"
}

left() { echo $(( RUN_END - $(date +%s) )); }  # seconds left of the run call's budget

cmd_run() {
    local call=$1 work rc=0 bench_s ladder_s
    RUN_END=$(( $(date +%s) + RUN_BUDGET_S ))
    wait_build
    step models/assemble assemble_models || exit 3
    step llama/check check_offload || die "this llama-cpp-python cannot offload to a GPU; nothing was run" 3
    step models/list bpc models
    work=$BPC_TMP/bpc-results/$(PYTHONPATH=$BUILD/site:$SITE "$PY" -m bpcbench.defaults run-id gpu) || exit 2
    mkdir -p "$work"
    # what is left of RUN_BUDGET_S goes to the bench first, keeping room for the ladder, the check and collect
    bench_s=$(( $(left) - LADDER_BUDGET_S - 60 ))
    (( bench_s > BENCH_BUDGET_S )) && bench_s=$BENCH_BUDGET_S
    (( bench_s < 60 )) && bench_s=$(( $(left) - 60 ))
    step "bench $MATRIX (budget ${bench_s} s)" timeout -k 20 -s TERM "$bench_s" \
        env PYTHONPATH="$BUILD/site:$SITE" "$PY" -m bpcbench bench "$MATRIX" --n-gpu-layers "$NGL" --out "$work/bench" -q \
        || rc=$?
    if [[ -f $work/bench/results.csv && ! -f $work/bench/summary.md ]]; then  # stopped: render what it finished
        step "report (stopped bench)" bpc report "$work/bench" >/dev/null
    fi
    ladder_s=$(( $(left) - 60 ))
    (( ladder_s > LADDER_BUDGET_S )) && ladder_s=$LADDER_BUDGET_S
    if (( ladder_s >= 30 )); then
        step "ladder Q8_0,Q4_K_M,Q2_K (budget ${ladder_s} s)" timeout -k 10 -s TERM "$ladder_s" \
            env PYTHONPATH="$BUILD/site:$SITE" "$PY" -m bpcbench ladder smollm2-135m --reexpand \
            --levels Q8_0,Q4_K_M,Q2_K --corpora alice29 --max-bytes "$LADDER_BYTES" --coded-bytes "$LADDER_CODED" \
            -t "$LADDER_THREADS" --out "$work/ladder" -q >/dev/null || { [[ $rc == 0 ]] && rc=1; }
    else
        say "ladder skipped: $(left) s left"
    fi
    if (( $(left) >= 30 )); then
        step cross-check timeout -k 5 -s TERM $(( $(left) - 15 )) bash "${BASH_SOURCE[0]}" _xcheck "$work" \
            || { [[ $rc == 0 ]] && rc=1; }
    else
        say "cross-check skipped: $(left) s left"
    fi
    if (( $(left) >= 45 )); then  # last, with what is left: its table goes into run.tar.gz, it sets no rc
        step "lane groups 1 and 2" timeout -k 5 -s TERM $(( $(left) - 15 )) env PYTHONPATH="$BUILD/site:$SITE" \
            "$PY" "$ROOT/benchmarks/lane_groups.py" --bytes "$GROUPS_BYTES" --lanes "$GROUPS_LANES" \
            -t "$XCHECK_THREADS" -ngl "$NGL" >"$work/lane-groups.md" || say "lane groups: stopped or failed"
    else
        say "lane groups skipped: $(left) s left"
    fi
    collect "$work" "${OUT:-$ROOT/results/gpu-run}/gpu"
    [[ -f $work/bench/results.csv ]] || die "the bench wrote no results.csv" 1
    return $rc
}

rehearse() {
    local t0 tmp calls c
    t0=$(date +%s)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/bpc-rehearse.XXXXXX")
    export BPC_TMP=$tmp OUT=$tmp/out BPC_WHEELS=$tmp/wheels
    LOG=$tmp/bpc-gpu-run.log
    mkdir -p "$OUT"
    say "rehearsal in $tmp (FLAVOUR=$FLAVOUR, matrix $BPC_MATRIX, python $("$PY" -V 2>&1))"
    step "kit sizes" "$PY" "$ROOT/scripts/gpu_kit.py" --check || die "the kit does not fit its calls" 1
    step "wheels for this Python (the kit's are for 3.12)" "$PY" "$ROOT/scripts/gpu_kit.py" --local-wheels "$BPC_WHEELS" || exit 1
    calls=$("$PY" -c "import json; print(' '.join(f\"{c['step']}:{c['folder']}\" for c in json.load(open('$ROOT/.gpu/kit.json'))['calls']))")
    for c in $calls; do
        say "--- call ${c#*:} (${c%%:*})"
        if [[ ${c%%:*} == build+run ]]; then
            bash "$0" build "$ROOT/${c#*:}" && bash "$0" run "$ROOT/${c#*:}" || die "rehearsal: call ${c#*:} failed" 1
        else
            bash "$0" "${c%%:*}" "$ROOT/${c#*:}" || die "rehearsal: call ${c#*:} failed" 1
        fi
    done
    local back
    back=$(find "$OUT" -type f | wc -l)
    [[ $back -le 8 && -f $OUT/gpu/results.csv ]] || die "rehearsal: $back files under \$OUT, or no results.csv" 1
    rm -rf "$tmp"/bpc-site "$tmp"/bpc-build "$tmp"/bpc-stash "$tmp"/bpc-cache "$BPC_WHEELS"  # 700 MB of models
    say "rehearsal passed in $(( $(date +%s) - t0 )) s; $back files back in $OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
}

main() {
    [[ ${1:-} == --rehearse ]] && { rehearse; return; }
    [[ ${1:-} == _compile ]] && { background_compile "$2"; return; }
    [[ ${1:-} == _xcheck ]] && { cross_check "$2"; return; }
    local cmd=${1:-} call=${2:-}
    [[ $cmd =~ ^(build|stash|run)$ && -d $call ]] || die "usage: scripts/gpu-run.sh build|stash|run CALL_DIR | --rehearse" 2
    call=$(cd "$call" && pwd)
    mkdir -p "$BPC_TMP"
    cuda_env
    say "=== $cmd $call on $(hostname) ($(nproc) cores$(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | head -1 | sed 's/^/, /'))"
    step stash stash "$call" || die "the parts in $call do not match SHA256SUMS" 3
    case $cmd in
        build)
            if [[ $(build_state) =~ ^(running|ok)$ ]]; then report_build; return 0; fi  # a repeated call 1
            step "wheels -> $SITE" install_wheels "$call" || die "installing the wheels failed" 3
            step "unpack llama-cpp-python" unpack_source "$call" || die "unpacking the source failed" 3
            step "start build" start_build || die "the build could not start" 3 ;;
        stash) report_build ;;
        run) cmd_run "$call" ;;
    esac
}

main "$@"
