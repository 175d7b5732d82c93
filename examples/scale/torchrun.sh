#!/usr/bin/env bash
# DDP on 2 machines x 2 processes with torchrun: run this script on each machine, with
# HOST the address of the first machine (reachable from the other). torchrun's c10d
# rendezvous assigns the node ranks; Lightning reads RANK / WORLD_SIZE / LOCAL_RANK /
# GROUP_RANK / MASTER_ADDR / MASTER_PORT (TorchElasticEnvironment). --nnodes must equal
# training.num_nodes and --nproc_per_node training.devices in the spec.
set -euo pipefail
HOST=${HOST:-node0.example.org}
OUT=${OUT:-runs/ddp}

torchrun --nnodes=2 --nproc_per_node=2 --rdzv_id=holomed-ddp --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 examples/scale/fit_distributed.py examples/scale/ddp.yaml --out $OUT

# one machine, 2 processes (also what the CI test runs):
#   torchrun --standalone --nproc_per_node=2 examples/scale/fit_distributed.py examples/scale/ddp.yaml --out runs/ddp1 --set training.num_nodes=1
