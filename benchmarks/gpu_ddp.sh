#!/usr/bin/env bash
# DDP on a GPU matches one process, in fp32 and bf16 (issue: scale, item 1), on the
# SYNTHETIC cohort of examples/scale/ddp.yaml (2,000 patients, joint fusion, 40 epochs,
# early stopping), dropout off so that runs can be compared patient by patient.
#
# A machine with ONE GPU: the two processes share it. NCCL refuses two ranks on one
# device, so they talk through gloo (training.process_group_backend: gloo), and they are
# started as two torchrun agents of one node each (--nnodes=2 --nproc_per_node=1) that meet
# through torchrun's c10d rendezvous on localhost: the multi-node launch path, for real,
# with each "node" holding cuda:0. With 2+ GPUs use --nproc_per_node and NCCL instead.
#
#   bash benchmarks/gpu_ddp.sh OUTDIR        # then: python benchmarks/gpu_ddp_table.py OUTDIR
#
# Runs: cpu fp32 1 process; gpu fp32 1 process; gpu fp32 2 processes; gpu bf16-mixed
# 1 process; gpu bf16-mixed 2 processes. Each writes predictions.csv and results.json.
set -uo pipefail
OUT=${1:?usage: gpu_ddp.sh OUTDIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SPEC=examples/scale/ddp.yaml
COMMON=(--set fusion.dropout=0 --set fusion.modality_dropout=0
        --set modalities.clinical.encoder.options.dropout=0
        --set modalities.expression.encoder.options.dropout=0
        --set modalities.methylation.encoder.options.dropout=0
        --set training.max_epochs=${EPOCHS:-40})
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} HOLOMED_THREADS=${HOLOMED_THREADS:-4}

one() {  # name accelerator precision
  local t0=$(date +%s.%N)
  $PY examples/scale/fit_distributed.py $SPEC --out "$OUT/$1" "${COMMON[@]}" \
    --set training.num_nodes=1 --set training.devices=1 --set training.strategy=auto \
    --set training.accelerator=$2 --set training.precision=$3 >"$OUT/$1.log" 2>&1
  local rc=$?
  echo "$1 rc=$rc wall=$(awk "BEGIN{print $(date +%s.%N) - $t0}")" | tee -a "$OUT/runs.txt"
}

two() {  # name accelerator precision port: two single-process "nodes" on this machine
  local t0=$(date +%s.%N) pids=()
  for node in 0 1; do
    $PY -m torch.distributed.run --nnodes=2 --nproc_per_node=1 --rdzv_id="gpu-$1" \
      --rdzv_backend=c10d --rdzv_endpoint=127.0.0.1:$4 \
      examples/scale/fit_distributed.py $SPEC --out "$OUT/$1" "${COMMON[@]}" \
      --set training.num_nodes=2 --set training.devices=1 --set training.strategy=ddp \
      --set training.process_group_backend=gloo \
      --set training.accelerator=$2 --set training.precision=$3 >"$OUT/$1.node$node.log" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  echo "$1 rc=$rc wall=$(awk "BEGIN{print $(date +%s.%N) - $t0}")" | tee -a "$OUT/runs.txt"
}

ACC=${ACC:-gpu}
one cpu_fp32_1 cpu 32-true
one ${ACC}_fp32_1 $ACC 32-true
two ${ACC}_fp32_2 $ACC 32-true 29411
one ${ACC}_bf16_1 $ACC bf16-mixed
two ${ACC}_bf16_2 $ACC bf16-mixed 29412
