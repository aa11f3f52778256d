"""Mutation score of the core rooms: how many small deliberate bugs their tests catch.

Copies the tracked files into a scratch folder (the work tree stays clean), mutates the rooms below
with mutmut (``pip install mutmut``; it changes one operator, constant or call inside a function
at a time), runs each room's own test files against every mutant and prints the share killed
per room and in all, then the survivors. Slow (≈ 1 s per mutant on a free core; not in CI):

    nice -n 19 python scripts/mutation.py                 # every room, results in /tmp/wan-mutation
    python scripts/mutation.py --report                   # print the last run's score again
    python scripts/mutation.py --rooms wan_studio/jobs/access.py --jobs 2
    python scripts/mutation.py --rooms wan_studio/jobs/store.py --skip-killed /tmp/store-results.json

``--skip-killed`` takes the ``results.json`` a run leaves in its scratch folder: mutants killed there
are counted killed and not run again (valid while the room's source is unchanged and tests were only
added), the others are run against the current tests.

A room may be a part of a file (``path.py::name,name``): only those top-level functions are
mutated (the rest is fenced off with ``# pragma: no mutate`` in the scratch copy only).

Survivors that change only the letter case of SQL outside its quoted literals (SQLite reads
keywords, table, column and pragma names in any case) or of a codec name are counted apart as
equivalent: no test can tell them from the original. The score is printed with and without them.

The survivors and why each is harmless are listed in docs/TESTING.md.
"""

from __future__ import annotations

import argparse
import ast
import codecs
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# room -> the test files that guard it (fast ones: no servers, no worker processes)
ROOMS: dict[str, list[str]] = {
    "wan_studio/jobs/store.py": ["tests/jobs/test_store.py", "tests/jobs/test_store_contract.py",
                                 "tests/jobs/test_queue.py", "tests/jobs/test_groups.py"],
    "wan_studio/jobs/access.py": ["tests/jobs/test_access.py"],
    # the served-path and ownership check of the file route
    "wan_studio/ui/guard.py::_is_under,file_decision,_preview_decision": ["tests/security/test_file_decision.py"],
    "wan_studio/memory/planner.py": ["tests/memory/test_planner.py", "tests/memory/test_planner_words.py",
                                     "tests/memory/test_planner_gguf.py", "tests/memory/test_planner_layouts.py",
                                     "tests/memory/test_oom_ladder.py",
                                     "tests/memory/test_overrides.py"],
    # test_manager.py's tiny pipelines take ~1 min a pass: the meta-device tests stand in for it here
    "wan_studio/memory/manager.py": ["tests/memory/test_lru.py", "tests/memory/test_manager_contract.py"],
    "wan_studio/memory/costs.py": ["tests/memory/test_cost_model.py", "tests/memory/test_byte_counts.py",
                                   "tests/memory/test_measured_fit.py", "tests/memory/test_planner.py"],
    "wan_studio/memory/estimate.py": ["tests/memory/test_time_model.py", "tests/memory/test_byte_counts.py", "tests/memory/test_measured_fit.py",
                                      "tests/memory/test_planner.py", "tests/memory/test_planner_sizes.py"],
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SQL_WORD = re.compile(r"\b(SELECT|UPDATE|DELETE|INSERT|PRAGMA|FROM|WHERE|ORDER BY|CASE|COUNT|COALESCE|SET|AND|DESC|ASC)\b")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _file(room: str) -> str:
    return room.partition("::")[0]


def _fence(path: Path, keep: set[str]) -> None:
    """Fence every top-level statement of ``path`` except the functions in ``keep`` with
    ``# pragma: no mutate`` comments, so mutmut mutates only those (scratch copy only)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    tree = ast.parse("\n".join(lines))
    for node in reversed(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name not in keep:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            lines.insert(node.end_lineno, "# pragma: no mutate end")
            lines.insert(start, "# pragma: no mutate start")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _same_text(old: str, new: str) -> bool:
    """Whether two string literals mean the same to SQLite or to ``codecs``."""
    if old == new or old.lower() != new.lower():
        return old == new
    if SQL_WORD.search(old):  # keywords and names in any case; quoted values must be unchanged
        return re.findall(r"'[^']*'", old) == re.findall(r"'[^']*'", new)
    try:
        return codecs.lookup(old).name == codecs.lookup(new).name
    except LookupError:
        return False


def equivalent(diff: str) -> bool:
    """Whether a mutant's diff only re-cases SQL (outside quoted values) or a codec name."""
    old = [line[1:] for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")]
    new = [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    if not old or len(old) != len(new):
        return False
    for a, b in zip(old, new):
        if STRING.sub("S", a) != STRING.sub("S", b):
            return False  # something outside the string literals changed
        if not all(_same_text(x, y) for x, y in zip(STRING.findall(a), STRING.findall(b))):
            return False
    return True


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
    lines = ["[mutmut]", "source_paths=wan_studio", "only_mutate=" + "\n    ".join(sorted({_file(r) for r in rooms})),
             "pytest_add_cli_args_test_selection=" + "\n    ".join(tests),
             "pytest_add_cli_args=-p no:cacheprovider -q -x", "process_isolation=forkserver",
             # a loaded machine runs a mutant's tests many times slower than the clean pass mutmut
             # times: a short limit would count ordinary slowness as a kill ("timeout")
             "timeout_multiplier=30", "timeout_constant=30",
             # tests read bench/ helpers (fit_table), presets and recorded data beside the sources
             "also_copy=bench\n    presets\n    assets\n    docs"]
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


def _diff(work: Path, name: str) -> str:
    return subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True,
                          text=True).stdout


def report(work: Path, rooms: list[str], earlier: dict[str, str] | None = None) -> float:
    """Print the share killed per room and in all (also leaving out equivalent mutants), then the
    survivors; returns the share without the equivalent ones. ``earlier``: statuses of a previous
    run whose kills count (those mutants were not run again)."""
    status = results(work)
    for name, what in (earlier or {}).items():
        if what in ("killed", "equivalent") and status.get(name, "not checked") == "not checked":
            status[name] = what
    for name, what in status.items():
        if what not in KILLED and what != "not checked" and equivalent(_diff(work, name)):
            status[name] = "equivalent"
    total: Counter[str] = Counter()
    for room in rooms:
        prefix = _file(room).removesuffix(".py").replace("/", ".")
        mine = {k: v for k, v in status.items() if k.startswith(prefix + ".")}
        counts = Counter("killed" if v in KILLED else v for v in mine.values())
        total.update(counts)
        _print_share(room, counts)
    share = _print_share("all rooms", total)
    survivors = sorted(k for k, v in status.items() if v not in KILLED and v not in ("not checked", "equivalent"))
    if survivors:
        print("survivors (see them with: cd " + str(work) + " && python -m mutmut show NAME):")
        print("\n".join(f"  {s}: {status[s]}" for s in survivors))
    (work / "score.json").write_text(json.dumps({"share_killed": share, "counts": dict(total)}))
    (work / "results.json").write_text(json.dumps(status, indent=0, ensure_ascii=False))
    return share


def _print_share(label: str, counts: Counter[str]) -> float:
    done = sum(counts.values()) - counts["not checked"]
    real = done - counts["equivalent"]
    raw = counts["killed"] / done if done else 0.0
    share = counts["killed"] / real if real else 0.0
    print(f"{label}: {counts['killed']}/{done} killed ({raw:.1%}); {counts['equivalent']} equivalent, "
          f"{counts['killed']}/{real} of the others killed ({share:.1%})" +
          (f"; {counts['not checked']} not checked" if counts["not checked"] else ""))
    return share


def main(argv: list[str] | None = None) -> int:
    """Run (or with ``--report`` only report) the mutation pass; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", nargs="*", default=list(ROOMS), help="files to mutate (default: all rooms)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wan-mutation"), help="scratch folder")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (cores to use)")
    parser.add_argument("--report", action="store_true", help="only print the last run's score")
    parser.add_argument("--skip-killed", type=Path, help="results.json of an earlier run: its kills count, "
                                                           "only its other mutants run again")
    parser.add_argument("--also", nargs="*", default=[], help="with --skip-killed: mutant names or globs "
                                                              "to run as well (functions new since then)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rooms) - set(ROOMS))  # noqa: C401
    if unknown:
        parser.error(f"not a room: {', '.join(unknown)}; rooms: {', '.join(ROOMS)}")
    if not args.report:
        try:
            import mutmut  # noqa: F401
        except ImportError:
            parser.error("mutmut is not installed: pip install mutmut")
        _copy_tree(args.work)
        for room in args.rooms:
            if "::" in room:
                _fence(args.work / _file(room), set(room.partition("::")[2].split(",")))
        (args.work / "setup.cfg").write_text(_config(args.rooms), encoding="utf-8")
        again = []
        if args.skip_killed:
            earlier = json.loads(args.skip_killed.read_text(encoding="utf-8"))
            # time-outs are checked again (on a busy machine they are often slowness, not kills)
            again = sorted(k for k, v in earlier.items() if v not in ("killed", "equivalent")) + args.also
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs), *again],
                       cwd=args.work)
    earlier = json.loads(args.skip_killed.read_text(encoding="utf-8")) if args.skip_killed else None
    report(args.work, args.rooms, earlier)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
