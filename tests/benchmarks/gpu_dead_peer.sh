#!/usr/bin/env bash
# A dead peer on 2 GPUs (NCCL, fast engine): kill rank 1 with -9 mid-measurement; rank 0 must exit 3
# with an error event within the timeout (20 s), for pp and for tp.
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
for mode in pp tp; do
  out=/tmp/dead-$mode; rm -rf $out; mkdir -p $out; port=$((29700 + RANDOM % 200))
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port python3 -m worker run \
      --synthetic-config tiny --device cuda --dtype float16 --mode $mode --batch-sizes 2 --num-requests 2 \
      --max-new-tokens 900 --warmup 1 --repeats 200 --dist-timeout 20 --out $out > $out/launcher$r.txt 2>&1 &
    eval pid$r=$!
  done
  for i in $(seq 1 120); do grep -q '"measure"' $out/rank1.events.jsonl 2>/dev/null && break; sleep 0.5; done
  sleep 2; kill -9 $pid1; t0=$(date +%s.%N)
  wait $pid0; rc=$?; t1=$(date +%s.%N)
  echo "$mode: rank 0 exit $rc, $(python3 -c "print(round($t1-$t0,1))") s after rank 1 was killed"
  grep '"error"' $out/rank0.events.jsonl | python3 -c "import json,sys; [print('  error event:', json.loads(l)['message'][:200]) for l in sys.stdin]"
  tail -3 $out/launcher0.txt | cut -c1-200
done
