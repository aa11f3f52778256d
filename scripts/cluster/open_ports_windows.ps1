# Run once as Administrator on the Windows PC: let the head's address reach the Ray ports, and (for
# WSL2 with mirrored networking) let inbound connections into the WSL2 VM. Usage:
#   powershell -ExecutionPolicy Bypass -File scripts\cluster\open_ports_windows.ps1 192.168.10.1
param([Parameter(Mandatory = $true)][string]$HeadIp)
$ErrorActionPreference = "Stop"
$ports = "6379,8076-8080,10002-10100,52365"
New-NetFirewallRule -DisplayName "Wan Studio Ray (from head)" -Direction Inbound -Protocol TCP `
  -LocalPort $ports.Split(",") -RemoteAddress $HeadIp -Action Allow | Out-Null
# WSL2 mirrored mode filters inbound traffic with the Hyper-V firewall; this GUID is the WSL VM's.
if (Get-Command Set-NetFirewallHyperVVMSetting -ErrorAction SilentlyContinue) {
  Set-NetFirewallHyperVVMSetting -Name '{40E0AC32-46A5-438A-A0B2-2B479E8F2E90}' -DefaultInboundAction Allow
}
Write-Output "Opened TCP $ports from $HeadIp"
