#!/usr/bin/env bash
# `make llama-tools` (issue #10, "KLD against llama.cpp"; #22, the side-by-side speed script): build
# llama.cpp's `llama-perplexity` and `llama-bench` from the SAME sources as the project's
# llama-cpp-python wheel (the sdist's vendor/llama.cpp), for CPU, and install them to
# <cache root>/tools/llama.cpp-<version>/ (the root as bpcbench's own rule gives it:
# python -m bpcbench.defaults cache). tests/ladder/test_kld_reference.py uses llama-perplexity,
# benchmarks/side_by_side.py both.
#
#   * the sdist: $SDIST, else $CACHE/sdist/llama_cpp_python-<version>.tar.gz, else `pip download` of it
#   * cmake as the wheel's build (scikit-build-core): Release, GGML_NATIVE on (the cpu-native flavour;
#     GGML_NATIVE=OFF for cpu-portable via $CMAKE_ARGS), curl off; flash attention is a runtime flag.
#     Static libraries (the wheel's are shared) so the installed binary needs nothing beside it.
#   * only the llama-perplexity and llama-bench targets, under nice, $JOBS jobs (default 2)
#
# Idempotent: nothing happens if both binaries are already installed. The build folder is temporary and
# removed on every exit path.
set -euo pipefail

PYTHON=${PYTHON:-python3}
VERSION=${LLAMA_CPP_PYTHON:-$("$PYTHON" "$(dirname "$0")/pins.py" llama-cpp-python)}
CACHE=$(PYTHONPATH="$(dirname "$0")/../src" "$PYTHON" -m bpcbench.defaults cache)
DEST=$CACHE/tools/llama.cpp-$VERSION
TOOLS=(llama-perplexity llama-bench)
SDIST=${SDIST:-$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz}
JOBS=${JOBS:-2}

say() { echo "[llama-tools $(date -u +%H:%M:%S)] $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

missing=()
for tool in "${TOOLS[@]}"; do
    [[ -x $DEST/$tool ]] || missing+=("$tool")
done
if (( ${#missing[@]} == 0 )); then
    say "${TOOLS[*]} already built in $DEST"
    exit 0
fi
for tool in cmake c++ make tar; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt-get install cmake g++ make)"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bpc-llama-tools.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

if [[ ! -f $SDIST ]]; then
    say "no $SDIST: downloading llama-cpp-python==$VERSION's sdist from PyPI"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP/dl" \
        || die "pip download llama-cpp-python==$VERSION"
    mkdir -p "$(dirname "$SDIST")"
    cp "$TMP/dl/llama_cpp_python-$VERSION.tar.gz" "$SDIST.part" && mv "$SDIST.part" "$SDIST"
fi

t0=$(date +%s)
say "unpacking $SDIST"
tar xzf "$SDIST" -C "$TMP"
SRC=$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp
[[ -f $SRC/tools/perplexity/perplexity.cpp ]] || die "no tools/perplexity in $SDIST"
[[ -f $SRC/tools/llama-bench/llama-bench.cpp ]] || die "no tools/llama-bench in $SDIST"

say "configuring $SRC (Release, GGML_NATIVE=ON, static) ${CMAKE_ARGS:-}"
# shellcheck disable=SC2086  # CMAKE_ARGS is a list of -D flags, as for the wheel's build
nice -n 19 cmake -S "$SRC" -B "$TMP/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON ${CMAKE_ARGS:-} >"$TMP/configure.log" 2>&1 \
    || { tail -n 30 "$TMP/configure.log" >&2; die "cmake configure"; }

say "building ${missing[*]} with -j$JOBS (a few minutes on 2 cores)"
nice -n 19 cmake --build "$TMP/build" --config Release --target "${missing[@]}" -j "$JOBS" \
    >"$TMP/build.log" 2>&1 || { tail -n 40 "$TMP/build.log" >&2; die "cmake --build"; }

mkdir -p "$DEST"
for tool in "${missing[@]}"; do
    built=$(find "$TMP/build" -type f -name "$tool" -perm -u+x | head -1)
    [[ -n $built ]] || die "the build produced no $tool"
    "$built" --help >/dev/null 2>&1 || die "$built does not run"
    cp "$built" "$DEST/$tool.part" && mv "$DEST/$tool.part" "$DEST/$tool"
    say "installed $DEST/$tool"
done
say "built in $(( $(date +%s) - t0 )) s"
