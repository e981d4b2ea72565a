#!/usr/bin/env bash
# The GPU measurements of docs/PERFORMANCE.md on a lent machine
# (docs/PERFORMANCE.md, "On a lent machine").
#
#   GLIDE_GIT_COMMIT=<sha> GLIDE_GIT_DIRTY=0 bash benchmarks/device_run.sh all   # everything, one call
#   ... A   # layers, base sampling          (three calls of about ten minutes each,
#   ... B   # training step, base batch 64 with XLA attention     for a longer lease)
#   ... C   # upsampler sampling
#
# `all` fits one call of a 15-minute lease: the scripts run in the order of
# what the issue asks first (base sampling, the training step, the upsampler,
# then the layers alone), each under its own limit and all of them under
# GLIDE_DEVICE_BUDGET_S (default 540 s, counted from the script's start);
# a script that would start with under 45 s left is skipped and named. It
# ends with report.py's tables of what it measured, so the call's output
# tail holds the results even if its files do not come back.
#
# Arguments after the phase go to every script (`A --smoke` checks the
# plumbing on a CPU with JAX_PLATFORMS=cpu; the tests run that).
# Results go to $OUT (the folder a lent machine copies back; default
# benchmarks/results), one JSON and one log per script. Wheels in .whl/
# (e.g. ml_collections, carried with the tree) are installed first when the
# package is missing. Every script runs under `timeout`, so one slow compile
# cannot take the whole call, and with JAX_PLATFORMS=cuda, so a broken GPU
# plugin fails at once instead of running the full-size models on the CPU.
set -uo pipefail
phase="${1:?usage: device_run.sh all|A|B|C [script args]}"
shift
extra=("$@")
case "$phase" in all|A|B|C) ;; *) echo "device_run.sh: unknown phase '$phase' (all, A, B or C)" >&2; exit 2 ;; esac
deadline=$((SECONDS + ${GLIDE_DEVICE_BUDGET_S:-540}))
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS="${JAX_PLATFORMS:-cuda}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  compgen -G ".whl/*.whl" >/dev/null || { echo "device_run.sh: ml_collections is missing and .whl/ has no wheels" >&2; exit 1; }
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/glide_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/glide_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, jax.devices()[0].device_kind)" || exit 1
env | grep -E '^(XLA|JAX|GLIDE)_' || true

status=0
ran=()
bench() {  # bench SECONDS NAME SCRIPT ARGS...: one script, its JSON and log in $out, within the budget
  local seconds="$1" name="$2" script="$3" left=$((deadline - SECONDS))
  shift 3
  if [ "$left" -lt 45 ]; then
    echo "== $name: skipped, ${left}s of GLIDE_DEVICE_BUDGET_S left"
    status=1
    return
  fi
  [ "$seconds" -le "$left" ] || seconds="$left"
  case "$script" in sample_speed|train_speed) ran+=("$out/$name.json") ;; esac  # what report.py tabulates
  echo "== $name: $script $* (limit ${seconds}s)"
  timeout "$seconds" "$PYTHON" "benchmarks/$script.py" --out "$out/$name.json" "$@" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$out/$name.log"
  local rc=$?
  [ "$rc" -eq 0 ] || { echo "== $name exited $rc"; status=1; }
}

case "$phase" in
  all) bench 220 sample_speed_base sample_speed --workloads base
       bench 150 train_speed train_speed
       bench 200 sample_speed_upsample sample_speed --workloads upsample
       bench 90 layer_speed layer_speed ;;
  A) bench 150 layer_speed layer_speed
     bench 400 sample_speed_base sample_speed --workloads base ;;
  B) bench 400 train_speed train_speed
     bench 150 sample_speed_base_xla sample_speed --workloads base --batch-sizes 64 --attention-impl xla ;;
  C) bench 500 sample_speed_upsample sample_speed --workloads upsample ;;
esac
# The tables of the sampling and training runs (smoke runs too, so the tests see this step work).
existing=()
for file in ${ran[@]+"${ran[@]}"}; do [ -f "$file" ] && existing+=("$file"); done
if [ "${#existing[@]}" -gt 0 ]; then
  echo "== report"
  "$PYTHON" benchmarks/report.py --allow-smoke "${existing[@]}" || status=1
fi
exit "$status"
