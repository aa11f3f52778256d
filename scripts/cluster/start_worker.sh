#!/usr/bin/env bash
# Join the cluster from a Linux PC or from WSL2 on the Windows PC (the recommended route). Usage:
#   scripts/cluster/start_worker.sh 192.168.10.1 192.168.10.2   # head's address, this PC's address
# Under WSL2 use mirrored networking (docs/CLUSTER.md) so this address is the Windows PC's own.
set -euo pipefail
HEAD_IP="${1:?usage: start_worker.sh <head address> <this PC address>}"
MY_IP="${2:?usage: start_worker.sh <head address> <this PC address>}"
ray stop --force >/dev/null 2>&1 || true
# Ray numbers GPUs as CUDA does; NVML (temperatures, thermal guard) by PCI bus: make them agree.
export CUDA_DEVICE_ORDER=PCI_BUS_ID
exec ray start --address="$HEAD_IP:6379" --node-ip-address="$MY_IP" --num-gpus="${NUM_GPUS:-1}" \
  --object-manager-port=8076 --node-manager-port=8077 --runtime-env-agent-port=8078 \
  --dashboard-agent-grpc-port=8079 --dashboard-agent-listen-port=52365 --metrics-export-port=8080 \
  --min-worker-port=10002 --max-worker-port=10100
