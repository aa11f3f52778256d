"""``python -m wan_studio.cluster.check --address HEAD:6379``: every node of the cluster, its GPUs,
and whether its Python, Ray, torch and diffusers versions match the head's.

Run it on the head after both PCs joined; it exits 1 when a node's versions differ (Ray refuses or
misbehaves across versions) or when no GPU is visible, with a sentence saying what to fix.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeReport:
    """What one node says about itself; ``gpus`` are one line each (name, memory, temperature)."""

    host: str
    os: str
    versions: dict[str, str]
    gpus: tuple[str, ...]
    gpu_note: str


def describe_node() -> NodeReport:
    """Runs on a node: its host, OS, package versions and GPUs (through NVML)."""
    import platform
    from importlib import metadata

    from wan_studio.gpu.telemetry import local_host, open_telemetry

    versions = {"python": platform.python_version()}
    for pkg in ("ray", "torch", "diffusers"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "missing"
    telemetry = open_telemetry()
    gpus = tuple(f"GPU {s.index}: {s.name}, {(s.mem_total_bytes or 0) / 2**30:.0f} GiB, {s.temperature_c} °C"
                 for s in telemetry.sample())
    telemetry.close()
    return NodeReport(local_host(), f"{platform.system()} {platform.release()}", versions, gpus, telemetry.reason)


def check(address: str) -> tuple[list[NodeReport], list[str]]:
    """Reports of every live node, and the problems found (empty when the cluster is usable)."""
    from wan_studio.cluster.ray_backend import connect

    ray = connect(address)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(describe_node)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
            for n in nodes]
    reports: list[NodeReport] = ray.get(refs, timeout=120)
    head = describe_node()
    problems = []
    for r in reports:
        for pkg, version in r.versions.items():
            if version != head.versions.get(pkg):
                problems.append(f"{r.host} has {pkg} {version} but this PC has {head.versions.get(pkg)}: "
                                f"install the same version on both PCs")
    if not any(r.gpus for r in reports):
        problems.append("no node reports an NVIDIA GPU: check the driver (nvidia-smi) on each PC")
    return reports, problems


def main(argv: list[str] | None = None) -> int:
    """Print every node and its GPUs; exit 1 on a problem."""
    p = argparse.ArgumentParser(prog="python -m wan_studio.cluster.check", description=__doc__.split("\n\n")[0])
    p.add_argument("--address", default="auto", help="the head's HOST:PORT, or auto on the head itself")
    ns = p.parse_args(argv)
    from wan_studio.cluster.ray_backend import ClusterUnavailable

    try:
        reports, problems = check(ns.address)
    except ClusterUnavailable as e:
        print(e, file=sys.stderr)
        return 1
    for r in reports:
        versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
        print(f"{r.host} ({r.os}; {versions})")
        for line in r.gpus or (f"no GPU: {r.gpu_note}",):
            print(f"  {line}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
