"""Print benchmark results as a table, and gather every ``<model>.json`` of a folder.

  python3 bench/report.py bench/out          # table + Markdown rows for docs/BENCHMARKS.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (("case", 44), ("size", 13), ("s/step", 7), ("×ref", 5), ("alloc", 6), ("resv", 6), ("pred", 6),
           ("MFU", 5), ("text", 5), ("swap", 5), ("decode", 6), ("error", 30))


def _fmt(v: Any, width: int) -> str:
    if v is None:
        text = "-"
    elif isinstance(v, float):
        text = f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    else:
        text = str(v)
    return text[:width].ljust(width)


def rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """One row per case, with the step time relative to the uncapped reference of the same size."""
    ref = {(r["model"], r["size"]): r["step_median_s"] for r in results
           if r["case"].startswith("reference") and r.get("step_median_s")}
    out = []
    for r in results:
        base = ref.get((r["model"], r["size"]))
        ratio = r["step_median_s"] / base if base and r.get("step_median_s") else None
        out.append([f'{r["model"]} {r["case"]}', r["size"], r.get("step_median_s"), ratio,
                    r.get("peak_alloc_gib"), r.get("peak_reserved_gib"), r.get("predicted_peak_gib"),
                    r.get("mfu"), r.get("text_s"), r.get("expert_swap_s"), r.get("decode_s"), r.get("error")])
    return out


def print_table(results: list[Any]) -> None:
    """A fixed-width table of ``CaseResult``s or their dicts (GiB, seconds)."""
    dicts = [r if isinstance(r, dict) else r.to_dict() for r in results]
    print(" ".join(name.ljust(w) for name, w in COLUMNS))
    for row in rows(dicts):
        print(" ".join(_fmt(v, w) for v, (_, w) in zip(row, COLUMNS)))


def print_phases(results: list[dict[str, Any]]) -> None:
    """Measured vs predicted peak allocated GiB per phase for our runs (to re-fit costs.py)."""
    ours = [r for r in results if r.get("predicted_phase_gib")]
    if not ours:
        return
    print("phase peaks, measured / predicted GiB (text+first_step, denoise, decode):")
    for r in ours:
        cells = [f'{r["phase_peak_alloc_gib"].get(k, "-")} / {v}' for k, v in r["predicted_phase_gib"].items()]
        print(f'  {r["model"]:9s} {r["size"]:13s} {r["case"][:40]:40s} ' + "   ".join(cells))


def markdown(results: list[dict[str, Any]]) -> str:
    """The same rows as a Markdown table."""
    head = "| " + " | ".join(name for name, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    return head + "\n".join("| " + " | ".join(_fmt(v, 60).strip() for v in row) + " |" for row in rows(results))


def main(folder: str) -> int:
    """Print every result under ``folder``."""
    results: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("*.json")):
        results += json.loads(path.read_text(encoding="utf-8"))
    print_table(results)
    print()
    print_phases(results)
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bench/out"))
