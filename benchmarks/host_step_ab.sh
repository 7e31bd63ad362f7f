#!/bin/bash
# The host step of two trees back to back, case by case (issue 22): this tree's
# benchmarks/test_host_step.py, run against BEFORE's src/ and then AFTER's, first pinned to one core
# in CPU time (the step's own cost on a shared machine), then on all cores in wall time.
#   benchmarks/host_step_ab.sh /path/to/main /path/to/branch [python]
# The benchmark is copied to a temporary folder with a bare pytest.ini, because the project's
# pytest settings put their own tree's src/ first whatever PYTHONPATH says.
set -u
BEFORE=$1 AFTER=$2 PY=${3:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/test_host_step.py" "$HERE/conftest.py" "$WORK/" && printf '[pytest]\n' > "$WORK/pytest.ini"
run() {  # tree label pin -k [timer]
  local tree=$1 label=$2 pin=$3 k=$4 timer=${5:-}
  echo "=== $label $(PYTHONPATH=$tree/src $PY -c 'from bpcbench.codec import kernel; print(kernel.VERSION)')" \
       "pin=$pin -k '$k' $timer $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)"
  (cd "$WORK" && NUMBA_CACHE_DIR=$WORK/cache-$label PYTHONPATH=$tree/src:$tree/tests $pin $PY -m pytest \
     test_host_step.py -q -p no:cacheprovider -k "$k" $timer 2>&1 | sed -n '/host step/,/^$/p' | grep -v "host step")
}
for vocab in smollm2 gemma3; do
  for path in ideal encode decode; do
    run "$BEFORE" before "taskset -c 0" "kernel and 1 and $vocab and $path" --benchmark-timer=time.process_time
    run "$AFTER" after "taskset -c 0" "kernel and 1 and $vocab and $path" --benchmark-timer=time.process_time
    run "$BEFORE" before "" "kernel and $vocab and $path"
    run "$AFTER" after "" "kernel and $vocab and $path"
  done
done
