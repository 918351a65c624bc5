#!/usr/bin/env bash
# One device call on nvidia-h200-x4: the int8 kernels' GPU test and kernel table (30-60 s), then the 4-GPU cells.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
T0=$(date +%s)
timeout 90 python3 -m pytest tests/worker/test_quant.py -m gpu -q -p no:cacheprovider -x > $OUT/quant_gpu_test.log 2>&1; echo "quant gpu test rc=$? $(( $(date +%s) - T0 ))s"
timeout 90 python3 -c "import sys; sys.path.insert(0, 'tests/benchmarks'); import gpu_quant; print('\n'.join(gpu_quant.kernel_check('cuda', compiled=False)))" > $OUT/kernel_table.txt 2>&1; echo "kernel table rc=$? $(( $(date +%s) - T0 ))s"
CELLS='gpu4-scaling/single_r1,gpu4-scaling/dp_r2,gpu4-scaling/dp_r4,gpu4-scaling/pp_r2,gpu4-scaling/pp_r4,gpu4-scaling/tp_r2,gpu4-scaling/tp_r4,gpu4-latency/*,gpu4-profile/pp_r4,gpu4-profile/single_r1'
LEFT=$(( 540 - ($(date +%s) - T0) ))
timeout $(( LEFT )) bash tests/experiments/gpu/run_cells.sh gpu_specs /tmp/bundles "$CELLS" $(( LEFT - 60 )) > $OUT/cells.log 2>&1; echo "cells rc=$? $(( $(date +%s) - T0 ))s"
find /tmp/bundles -name '*.safetensors' -delete
tar czf $OUT/bundles.tgz -C /tmp bundles
cat $OUT/cells.log | grep -v "^\s*$" | tail -20
tail -3 $OUT/quant_gpu_test.log; cat $OUT/kernel_table.txt | cut -c1-400
