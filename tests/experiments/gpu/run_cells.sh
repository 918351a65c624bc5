#!/usr/bin/env bash
# Run the cells of planned experiments by hand on a GPU machine without Slurm, one worker job per
# cell (torchrun for more than one rank), writing each result bundle to OUT/<experiment>/<cell>/.
# The bundles are then brought back and attached to their experiments on the laptop:
#
#   dinf experiment create PRESET --record-only --name NAME ... --write-specs SPECS/NAME
#   bash tests/experiments/gpu/run_cells.sh SPECS OUT [CELL_GLOB] [DEADLINE_S]   # on the GPU machine
#   dinf experiment attach NAME OUT/NAME/*
#
# CELL_GLOB picks cells (e.g. 'gpu-corr/*', or several joined by commas: 'gpu-scaling/*,gpu-weak/*'), in
# that order; cells are skipped once DEADLINE_S seconds have passed,
# so a call under a time limit returns with the bundles it finished. A failing cell does not stop
# the others; its launcher log stays beside where its bundle would be.
set -uo pipefail
SPECS=${1:?specs directory (from --write-specs)}
OUT=${2:?output directory}
GLOB=${3:-*/*}
DEADLINE_S=${4:-100000}
PY=${PYTHON:-python3}
# NVLink multicast stays off on these hosts (shared/GPU.md).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$(cd "$(dirname "$0")/../../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
port=29500
specs=()
IFS=',' read -r -a globs <<<"$GLOB"
for glob in "${globs[@]}"; do
  for spec in "$SPECS"/$glob/spec.json; do specs+=("$spec"); done
done
for spec in "${specs[@]}"; do
  [ -f "$spec" ] || continue
  cell_dir=$(dirname "$spec")
  rel=${cell_dir#"$SPECS"/}
  out="$OUT/$rel"
  if [ $(( $(date +%s) - start )) -ge "$DEADLINE_S" ]; then
    echo "skip  $rel (deadline)"; continue
  fi
  mkdir -p "$out"
  ranks=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['nodes']*r['tasks_per_node'])" \
          "$cell_dir/resources.json")
  t0=$(date +%s)
  if [ "$ranks" -eq 1 ]; then
    "$PY" -m worker run --spec "$spec" --out "$out" >"$out/launcher.log" 2>&1
  else
    port=$((port + 1))
    "$PY" -m torch.distributed.run --nproc_per_node="$ranks" --master_port="$port" \
      -m worker run --spec "$spec" --out "$out" >"$out/launcher.log" 2>&1
  fi
  rc=$?
  echo "rc=$rc $rel ranks=$ranks $(( $(date +%s) - t0 ))s"
  [ "$rc" -eq 0 ] || tail -5 "$out/launcher.log"
done
