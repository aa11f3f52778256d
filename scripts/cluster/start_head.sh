#!/usr/bin/env bash
# Start the Ray head on the Linux PC (the one that runs app.py). Usage:
#   scripts/cluster/start_head.sh 192.168.10.1        # this PC's address on the 10GbE link
# Fixed ports, so the firewall can open exactly these (docs/CLUSTER.md).
set -euo pipefail
HEAD_IP="${1:?usage: start_head.sh <this PC 10GbE address>}"
ray stop --force >/dev/null 2>&1 || true
# Ray numbers GPUs as CUDA does; NVML (temperatures, thermal guard) by PCI bus: make them agree.
export CUDA_DEVICE_ORDER=PCI_BUS_ID
exec ray start --head --node-ip-address="$HEAD_IP" --port=6379 --num-gpus="${NUM_GPUS:-1}" \
  --object-manager-port=8076 --node-manager-port=8077 --runtime-env-agent-port=8078 \
  --dashboard-agent-grpc-port=8079 --dashboard-agent-listen-port=52365 --metrics-export-port=8080 \
  --min-worker-port=10002 --max-worker-port=10100 --include-dashboard=false
