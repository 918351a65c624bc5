#!/usr/bin/env bash
# Run the issue-2 GPU table on a lent 2-GPU machine (python3 + torch + transformers there, no deepspeed):
#   bash tests/benchmarks/gpu_worker_table.sh OUT_DIR [extra args of gpu_worker_table.py]
# Installs the carried DeepSpeed wheels from .whl/ (see ../shared/GPU.md) into /tmp/dinf-site first.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: gpu_worker_table.sh OUT_DIR [args...]}; shift
if [ -d .whl ] && ! python3 -c "import deepspeed" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/dinf-site .whl/*.whl
  export PYTHONPATH=/tmp/dinf-site${PYTHONPATH:+:$PYTHONPATH}
fi
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
exec python3 tests/benchmarks/gpu_worker_table.py --out "$out" "$@"
