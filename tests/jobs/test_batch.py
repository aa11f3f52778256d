"""Batch parsing and expansion: formats, seeds, per-line problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from wan_studio.jobs.batch import BatchError, format_of, plan_batch, read_rows
from wan_studio.presets import load_presets

PRESETS = load_presets()


def _plan(text: str, kind: str, **kw: object):  # type: ignore[no-untyped-def]
    rows, problems = read_rows(text, kind)  # type: ignore[arg-type]
    plan = plan_batch(rows, PRESETS, "demo-fast", **kw)  # type: ignore[arg-type]
    return plan, problems


def test_txt_skips_blank_and_comment_lines() -> None:
    plan, problems = _plan("a fox\n\n# note\na cat\n", "txt")
    assert [r.prompt for r in plan.requests] == ["a fox", "a cat"] and not problems


def test_seeds_per_row_are_consecutive_from_the_base_seed() -> None:
    plan, _ = _plan("a fox\na cat\n", "txt", seeds_per_row=3, base_seed=10)
    assert [(r.prompt, r.seed) for r in plan.requests] == [
        ("a fox", 10), ("a fox", 11), ("a fox", 12), ("a cat", 10), ("a cat", 11), ("a cat", 12)]


def test_csv_rows_override_preset_fields_and_bad_rows_are_reported_by_line() -> None:
    text = ("prompt,seed,steps,width\n"
            "a fox,5,3,128\n"
            "a cat,x,3,128\n"            # line 3: bad seed
            ",1,2,64\n"                   # line 4: empty prompt
            "a bird,7,2,100\n"            # line 5: width not a multiple of 32
            "an owl,8,2,64\n")
    plan, problems = _plan(text, "csv")
    assert [(r.prompt, r.seed, r.steps, r.width) for r in plan.requests] == [("a fox", 5, 3, 128), ("an owl", 8, 2, 64)]
    lines = {p.line: p.message for p in plan.problems}
    assert set(lines) == {3, 4, 5}
    assert "seed must be a whole number" in lines[3]
    assert "prompt is missing" in lines[4]
    assert "multiple of 32" in lines[5]
    assert "Skipped 3: line 3:" in plan.summary()


def test_csv_without_prompt_header_is_refused() -> None:
    with pytest.raises(BatchError, match="'prompt' column"):
        read_rows("text,seed\nhello,1\n", "csv")


def test_csv_row_with_extra_cells_is_a_problem_not_a_crash() -> None:
    rows, problems = read_rows("prompt,seed\na fox,1\na cat,2,3\n", "csv")
    assert len(rows) == 1 and problems[0].line == 3


def test_jsonl_bad_json_unknown_field_and_unknown_preset() -> None:
    text = ('{"prompt": "a fox", "seed": 1}\n'
            '{"prompt": "a cat", \n'
            '"just a prompt string"\n'
            '{"prompt": "x", "colour": "red"}\n'
            '{"prompt": "y", "preset": "nope"}\n')
    plan, problems = _plan(text, "jsonl", base_seed=3)
    assert [r.prompt for r in plan.requests] == ["a fox", "just a prompt string"]
    assert [p.line for p in problems] == [2]
    assert {p.line for p in plan.problems} == {4, 5}
    assert any("unknown column(s) colour" in p.message for p in plan.problems)


def test_relative_image_path_resolves_against_the_batch_folder(tmp_path: Path, image_file: Path) -> None:
    rows, _ = read_rows(f"prompt,image\na fox,{image_file.name}\na cat,missing.png\n", "csv")
    plan = plan_batch(rows, PRESETS, "demo-fast", base_dir=image_file.parent)
    assert plan.requests[0].image == str(image_file)
    assert plan.problems[0].line == 3 and "does not exist" in plan.problems[0].message


def test_format_from_name() -> None:
    assert format_of(Path("x.CSV")) == "csv" and format_of(Path("a.jsonl")) == "jsonl"
    with pytest.raises(BatchError, match="use a .csv"):
        format_of(Path("a.xlsx"))
