"""Re-record the golden outputs of the tiny models (tests/data/golden/*.npy).

Run after a deliberate change of what the models compute (a sampler, a default, a layer):
``python scripts/record_golden.py`` records every case, ``python scripts/record_golden.py NAME ...``
only those named; ``--list`` prints the cases. Then run ``python -m pytest tests/test_golden.py``
and commit the .npy files with the change that moved them (docs/TESTING.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.golden import CASES, record  # noqa: E402  (after the path set-up above)


def main(argv: list[str] | None = None) -> int:
    """Record the cases named in ``argv`` (all by default); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"cases to record (default: all of {', '.join(CASES)})")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    unknown = sorted(set(args.names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    for name in args.names or list(CASES):
        path = record(name)
        print(f"recorded {name}: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
