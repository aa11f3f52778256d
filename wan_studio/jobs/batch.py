"""Batch input: CSV / JSONL / TXT (or pasted prompts) × N seeds → requests, with per-line errors.

A malformed row never stops the batch: it is reported with its line number and the valid rows
are still queued.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from wan_studio.engine.request import BATCH, MAX_SEED, GenerationRequest, RequestError, coerce_text, fields_on, validate
from wan_studio.presets import Preset

BatchFormat = Literal["csv", "jsonl", "txt"]
ROW_FIELDS = fields_on(BATCH)  # the field table's ``batch`` column; CSV cells are read by its types
MAX_ROWS = 10_000
MAX_SEEDS_PER_ROW = 100


class BatchError(ValueError):
    """The batch as a whole cannot be read (wrong format, no prompt column, too many rows)."""


@dataclass(frozen=True)
class RowProblem:
    """A row that was skipped: ``line`` is 1-based in the file or pasted text."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class BatchPlan:
    """Requests ready to queue (rows × seeds) and the rows that were skipped."""

    requests: list[GenerationRequest] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0

    def summary(self, queued: int | None = None) -> str:
        """One paragraph for the user, listing skipped rows by line number."""
        n = len(self.requests) if queued is None else queued
        text = f"Queued {n} job{'s' if n != 1 else ''} from {self.rows - len(self.problems)} of {self.rows} rows."
        if self.problems:
            text += f" Skipped {len(self.problems)}: " + "; ".join(str(p) for p in self.problems[:20])
            if len(self.problems) > 20:
                text += f"; … and {len(self.problems) - 20} more"
        return text


def format_of(path: Path) -> BatchFormat:
    """The batch format from a file name; raises ``BatchError`` for anything else."""
    suffix = Path(path).suffix.lower()
    kinds: dict[str, BatchFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
    if suffix not in kinds:
        raise BatchError(f"{Path(path).name}: use a .csv, .jsonl or .txt file (one prompt per line)")
    return kinds[suffix]


def read_rows(text: str, kind: BatchFormat) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    """Parse ``text`` into (line, fields) rows and problems; fields are still unchecked strings."""
    if kind == "txt":
        rows = [(i, {"prompt": line.strip()}) for i, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")]
        return _limit(rows), []
    if kind == "jsonl":
        return _read_jsonl(text)
    return _read_csv(text)


def _limit(rows: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    if len(rows) > MAX_ROWS:
        raise BatchError(f"the batch has {len(rows)} rows; the limit is {MAX_ROWS} — split it into several files")
    return rows


def _read_jsonl(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    rows, problems = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(RowProblem(i, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        if isinstance(data, str):
            data = {"prompt": data}
        if not isinstance(data, dict):
            problems.append(RowProblem(i, "expected a JSON object like {\"prompt\": \"...\"}"))
            continue
        rows.append((i, data))
    return _limit(rows), problems


def _read_csv(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "prompt" not in header:
        raise BatchError("the CSV needs a header row with a 'prompt' column "
                         f"(optional: {', '.join(f for f in ROW_FIELDS if f != 'prompt')})")
    reader.fieldnames = header
    rows, problems = [], []
    for record in reader:
        line = reader.line_num
        if None in record:
            cells = len(header) + len(record[None])
            problems.append(RowProblem(line, f"{cells} cells but the header has {len(header)}"))
            continue
        fields = {k: v.strip() for k, v in record.items() if k and isinstance(v, str) and v.strip() != ""}
        if fields:
            rows.append((line, fields))
    return _limit(rows), problems


def _coerce(fields: dict[str, Any]) -> dict[str, Any]:
    """Turn CSV strings into numbers; raise ``RequestError`` naming the bad cell."""
    unknown = sorted(set(fields) - set(ROW_FIELDS))
    if unknown:
        raise RequestError(f"unknown column(s) {', '.join(unknown)}; allowed: {', '.join(ROW_FIELDS)}")
    return {name: coerce_text(name, value) for name, value in fields.items()}


def plan_batch(rows: list[tuple[int, dict[str, Any]]], presets: dict[str, Preset], default_preset: str,
               seeds_per_row: int = 1, base_seed: int | None = None, base_dir: Path | None = None,
               check: Callable[[GenerationRequest], None] | None = None,
               max_prompt_chars: int = 4000) -> BatchPlan:
    """Build requests for ``rows`` × ``seeds_per_row`` seeds; bad rows become ``RowProblem``s.

    A row's seed (or ``base_seed``, or a random one) is the first of its consecutive seeds.
    ``base_dir`` resolves relative image paths.
    """
    if not 1 <= seeds_per_row <= MAX_SEEDS_PER_ROW:
        raise BatchError(f"seeds per prompt must be 1–{MAX_SEEDS_PER_ROW}, got {seeds_per_row}")
    plan = BatchPlan(rows=len(rows))
    for line, raw in rows:
        try:
            plan.requests.extend(_row_requests(raw, presets, default_preset, seeds_per_row, base_seed,
                                               base_dir, check, max_prompt_chars))
        except RequestError as e:
            plan.problems.append(RowProblem(line, str(e)))
    return plan


def _row_requests(raw: dict[str, Any], presets: dict[str, Preset], default_preset: str, n: int,
                  base_seed: int | None, base_dir: Path | None,
                  check: Callable[[GenerationRequest], None] | None, max_chars: int) -> list[GenerationRequest]:
    fields = _coerce(raw)
    name = fields.pop("preset", None) or default_preset
    if name not in presets:
        raise RequestError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    prompt = fields.pop("prompt", None)
    if not isinstance(prompt, str):
        raise RequestError("the prompt is missing; every row needs one")
    image = fields.get("image")
    if isinstance(image, str) and base_dir is not None and not Path(image).is_absolute():
        fields["image"] = str(Path(base_dir) / image)
    first = fields.pop("seed", None)
    if first is None or first < 0:
        first = base_seed if base_seed is not None and base_seed >= 0 else secrets.randbelow(MAX_SEED - n)
    requests = []
    for k in range(n):
        req = validate(presets[name].request(prompt, seed=(first + k) % (MAX_SEED + 1), **fields), max_chars)
        if check is not None:
            check(req)
        requests.append(req)
    return requests
