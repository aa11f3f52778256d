# Join the cluster from native Windows (no WSL2). Ray calls a cluster with a Windows node
# unsupported; it works for this app's plain actors, but prefer WSL2 (docs/CLUSTER.md). Usage, in the
# Python environment that has the same Python, Ray, torch and diffusers versions as the head:
#   powershell -ExecutionPolicy Bypass -File scripts\cluster\start_worker_windows.ps1 192.168.10.1 192.168.10.2
param(
  [Parameter(Mandatory = $true)][string]$HeadIp,
  [Parameter(Mandatory = $true)][string]$MyIp
)
$ErrorActionPreference = "Stop"
$env:RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER = "1"
$env:CUDA_DEVICE_ORDER = "PCI_BUS_ID"  # GPU numbers as NVML counts them (telemetry, thermal guard)
python -c "import sys, ray; print('Python', sys.version.split()[0], 'Ray', ray.__version__)"
ray stop --force 2>$null
ray start --address="${HeadIp}:6379" --node-ip-address="$MyIp" --num-gpus=1 `
  --object-manager-port=8076 --node-manager-port=8077 --runtime-env-agent-port=8078 `
  --dashboard-agent-grpc-port=8079 --dashboard-agent-listen-port=52365 --metrics-export-port=8080 `
  --min-worker-port=10002 --max-worker-port=10100
