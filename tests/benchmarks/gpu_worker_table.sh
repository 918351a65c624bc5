#!/usr/bin/env bash
# Run the issue-9 GPU table (or part of it) on a lent GPU machine (python3 + torch + transformers there, no deepspeed):
#   bash tests/benchmarks/gpu_worker_table.sh OUT_DIR [args of gpu_worker_table.py, e.g. --cells call1 --deadline-s 530]
# Installs the carried DeepSpeed wheels from .whl/ (see ../shared/GPU.md) into /tmp/dinf-site first, and keeps
# NVLink multicast off for every process it starts.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu_worker_table.sh OUT_DIR [args...]}; shift
if [ -d .whl ] && ! python3 -c "import deepspeed" 2>/dev/null; then
  if [ ! -d /tmp/dinf-site/deepspeed ]; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/dinf-site .whl/*.whl
  fi
  export PYTHONPATH=/tmp/dinf-site${PYTHONPATH:+:$PYTHONPATH}
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,uuid,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -c "import deepspeed; print('deepspeed', deepspeed.__version__)" 2>/dev/null || echo "deepspeed: not importable"
exec python3 tests/benchmarks/gpu_worker_table.py --out "$out" "$@"
