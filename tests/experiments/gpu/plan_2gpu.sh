#!/usr/bin/env bash
# The 2-GPU paper on the fast engine, end to end except the GPU calls (README.md says when to run what).
#
#   bash tests/experiments/gpu/plan_2gpu.sh plan [SPECS]           # laptop: one spec per cell under SPECS
#   bash tests/experiments/gpu/run_cells.sh SPECS OUT GLOBS DEADLINE  # GPU machine (README.md: two calls)
#   bash tests/experiments/gpu/plan_2gpu.sh report OUT [REPORT.md]  # laptop: attach OUT/<exp>/* and report
#
# Both laptop steps start from a fresh, throw-away DINF_HOME and database and replay the plans of
# PLANS (default plans-2xH200-fast.txt beside this script: NAME PRESET OPTIONS..., plus a COMMON line),
# so the specs and the report depend on nothing but that file and the bundles. `report` is what
# tests/experiments/test_gpu_report.py replays in-process, so the report it writes regenerates byte for byte.
# dinf runs as $DINF when set, else `$PYTHON -m`-style from this checkout (PYTHON defaults to python3).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
PLANS=${PLANS:-$HERE/plans-2xH200-fast.txt}
PY=${PYTHON:-python3}
STEP=${1:?plan or report}

dinf() {
  if [ -n "${DINF:-}" ]; then $DINF --db "$WORK/dinf.db" "$@"; else
    PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c \
      'import sys; from tui.cli.main import main; sys.exit(main(sys.argv[1:]))' --db "$WORK/dinf.db" "$@"
  fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dinf-2gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
unset DINF_DB DINF_CONFIG
export DINF_HOME="$WORK/home"
common=$(awk '$1 == "COMMON" { $1 = ""; print substr($0, 2) }' "$PLANS")
names=()

# Record every plan (no runs); --write-specs when SPECS is given.
record() {
  local specs=${1:-}
  while read -r name preset options; do
    case "$name" in ''|'#'*|COMMON) continue ;; esac
    names+=("$name")
    # shellcheck disable=SC2086  # options are words by design
    dinf experiment create "$preset" --record-only --name "$name" $common $options \
      ${specs:+--write-specs "$specs/$name"} >/dev/null
  done <"$PLANS"
}

case "$STEP" in
  plan)
    SPECS=${2:-$ROOT/gpu_specs}
    [ ! -e "$SPECS" ] || { echo "plan_2gpu.sh: $SPECS exists; remove it or name another directory" >&2; exit 2; }
    record "$SPECS"
    for name in "${names[@]}"; do
      echo "$name: $(ls "$SPECS/$name" | tr '\n' ' ')"
    done
    echo "specs under $SPECS (carry it to the GPU machine with the checkout)"
    ;;
  report)
    OUT=${2:?the bundles directory brought back (OUT/<experiment>/<cell>/)}
    REPORT=${3:-report.md}
    record ""
    for name in "${names[@]}"; do
      # an experiment whose cells a deadline skipped entirely has no bundles; the report says so
      if [ -d "$OUT/$name" ]; then dinf experiment attach "$name" "$OUT/$name"/*; fi
    done
    dinf report "${names[@]}" -o "$REPORT"
    ;;
  *) echo "plan_2gpu.sh: the step is 'plan' or 'report', not '$STEP'" >&2; exit 2 ;;
esac
