"""A Ray cluster of several nodes on this machine that listens on 127.0.0.1 only.

Two things keep a local test cluster on loopback (docs/CLUSTER.md, "Testing on one machine"):

- every node is started with ``node_ip_address=127.0.0.1`` (the GCS, raylets, object managers,
  agents and worker processes bind to the node's address), the dashboard is off and its host is
  127.0.0.1 as well;
- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray's own idea of "this machine's address" the
  loopback one. Without it Ray rewrites the 127.0.0.1 in ``ray.init(address=...)`` to the machine's
  network address (and listens there), so a driver joining a loopback-only GCS waits for it
  forever, which is why ``node_ip_address="127.0.0.1"`` alone left ``ray.init`` hanging.

Ray reads the variable when it is first imported, so this module sets it before importing Ray, and
corrects the already-read constant when an earlier test imported Ray first. Ray's processes inherit
the environment of the process that starts them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

LOOPBACK = "127.0.0.1"
LOOPBACK_ADDRESSES = {LOOPBACK, "::ffff:" + LOOPBACK, "::1"}

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
if "ray._private.ray_constants" in sys.modules:
    sys.modules["ray._private.ray_constants"].ENABLE_RAY_CLUSTER = False

NODE_ARGS = dict(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK)
HEAD_ARGS = dict(NODE_ARGS, include_dashboard=False, dashboard_host=LOOPBACK)


def start_cluster(nodes: int = 2) -> Any:
    """A ``ray.cluster_utils.Cluster`` of ``nodes`` nodes (the head included), one GPU slot each."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args=dict(HEAD_ARGS))
    for _ in range(nodes - 1):
        add_node(cluster)
    return cluster


def add_node(cluster: Any) -> Any:
    """One more loopback node (one CPU, one GPU slot) joined to ``cluster``."""
    return cluster.add_node(**NODE_ARGS)


def ray_processes() -> list[Any]:
    """Ray's processes started from this one (GCS, raylets, agents, workers), as psutil processes."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            if proc.name() in ("gcs_server", "raylet") or cmd.startswith("ray::") or "/ray/" in cmd:
                found.append(proc)
        except psutil.Error:  # ended while we looked
            continue
    return found


def off_loopback(procs: list[Any]) -> list[str]:
    """Every listening socket or open connection of ``procs`` (and of this driver) that is not on
    loopback, as readable lines; empty when all their traffic stays on this machine's loopback."""
    import psutil

    bad = []
    for proc in [*procs, psutil.Process()]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and conn.laddr.ip not in LOOPBACK_ADDRESSES:
                bad.append(f"{name} (pid {proc.pid}) listens on {conn.laddr.ip}:{conn.laddr.port}")
            elif conn.raddr and conn.raddr.ip not in LOOPBACK_ADDRESSES:
                bad.append(f"{name} (pid {proc.pid}) talks to {conn.raddr.ip}:{conn.raddr.port}")
    return bad
