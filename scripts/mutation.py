"""Mutation score of the core rooms: how many small deliberate bugs their tests catch.

Copies the tracked files into a scratch folder (the work tree stays clean), mutates the rooms below
with mutmut (``pip install mutmut``; it changes one operator, constant or call inside a function
at a time), runs each room's own test files against every mutant and prints the share killed
per room and in all, then the survivors. Slow (≈ 1 s per mutant on a free core; not in CI):

    nice -n 19 python scripts/mutation.py                 # every room, results in /tmp/wan-mutation
    python scripts/mutation.py --report                   # print the last run's score again
    python scripts/mutation.py --rooms wan_studio/jobs/access.py --jobs 2

The survivors and why each is harmless are listed in docs/TESTING.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# room -> the test files that guard it (fast ones: no servers, no worker processes)
ROOMS: dict[str, list[str]] = {
    "wan_studio/jobs/store.py": ["tests/jobs/test_store.py", "tests/jobs/test_queue.py", "tests/jobs/test_groups.py"],
    "wan_studio/jobs/access.py": ["tests/jobs/test_access.py"],
    "wan_studio/memory/planner.py": ["tests/memory/test_planner.py", "tests/memory/test_oom_ladder.py",
                                     "tests/memory/test_overrides.py"],
    "wan_studio/memory/manager.py": ["tests/memory/test_lru.py", "tests/memory/test_manager.py"],
    "wan_studio/memory/costs.py": ["tests/memory/test_byte_counts.py", "tests/memory/test_planner.py"],
    "wan_studio/memory/estimate.py": ["tests/memory/test_byte_counts.py", "tests/memory/test_planner.py"],
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def _copy_tree(work: Path) -> None:
    """The tracked files of this checkout (plus uncommitted edits) into ``work``."""
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)


def _config(rooms: list[str]) -> str:
    tests = sorted({t for room in rooms for t in ROOMS[room]})
    lines = ["[mutmut]", "source_paths=wan_studio", "only_mutate=" + "\n    ".join(rooms),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             "pytest_add_cli_args=-p no:cacheprovider -q -x", "process_isolation=forkserver"]
    return "\n".join(lines) + "\n"


def results(work: Path) -> dict[str, str]:
    """Mutant name -> status (killed, survived, no tests, ...) of the run in ``work``."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work,
                         capture_output=True, text=True).stdout
    status: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, what = line.strip().rpartition(": ")
        if sep:
            status[name] = what
    return status


def report(work: Path, rooms: list[str]) -> float:
    """Print the share killed per room and in all, then the survivors; returns the share."""
    status = results(work)
    total = Counter()
    for room in rooms:
        prefix = room.removesuffix(".py").replace("/", ".")
        mine = {k: v for k, v in status.items() if k.startswith(prefix + ".")}
        counts = Counter("killed" if v in KILLED else v for v in mine.values())
        total.update(counts)
        done = sum(counts.values()) - counts["not checked"]
        share = counts["killed"] / done if done else 0.0
        print(f"{room}: {counts['killed']}/{done} killed ({share:.0%})" +
              (f", {counts['not checked']} not checked" if counts["not checked"] else ""))
    done = sum(total.values()) - total["not checked"]
    share = total["killed"] / done if done else 0.0
    print(f"all rooms: {total['killed']}/{done} mutants killed ({share:.1%})")
    survivors = sorted(k for k, v in status.items() if v not in KILLED and v != "not checked")
    if survivors:
        print("survivors (see them with: cd " + str(work) + " && python -m mutmut show NAME):")
        print("\n".join(f"  {s}: {status[s]}" for s in survivors))
    (work / "score.json").write_text(json.dumps({"share_killed": share, "counts": dict(total)}))
    return share


def main(argv: list[str] | None = None) -> int:
    """Run (or with ``--report`` only report) the mutation pass; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", nargs="*", default=list(ROOMS), help="files to mutate (default: all rooms)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wan-mutation"), help="scratch folder")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (cores to use)")
    parser.add_argument("--report", action="store_true", help="only print the last run's score")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rooms) - set(ROOMS))
    if unknown:
        parser.error(f"not a room: {', '.join(unknown)}; rooms: {', '.join(ROOMS)}")
    if not args.report:
        try:
            import mutmut  # noqa: F401
        except ImportError:
            parser.error("mutmut is not installed: pip install mutmut")
        _copy_tree(args.work)
        (args.work / "setup.cfg").write_text(_config(args.rooms), encoding="utf-8")
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs)], cwd=args.work)
    report(args.work, args.rooms)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
