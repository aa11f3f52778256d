"""Opening the job database: moved out of the served outputs, damaged files moved aside (kept) and the
finished videos listed again from their sidecars, each said in a sentence. Real SQLite files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wan_studio.jobs.lock import AppLock
from wan_studio.jobs.state import open_store
from wan_studio.jobs.store import JobStore, NewJob, StoreError


def _video(outputs: Path, name: str, job_id: str, user: str | None = "ann") -> Path:
    day = outputs / "2026-12-01"
    day.mkdir(parents=True, exist_ok=True)
    (day / f"{name}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    sidecar = day / f"{name}.json"
    sidecar.write_text(json.dumps({"job_id": job_id, "user": user, "video": {"file": f"{name}.mp4"},
                                   "request": {"prompt": f"prompt of {name}", "model": "demo", "seed": 7}}))
    return sidecar


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    _video(outputs, "120000-demo-7-a", "job-a")
    _video(outputs, "120100-demo-8-b", "job-b", user=None)
    (outputs / ".work" / "job-c").mkdir(parents=True)
    (outputs / ".work" / "job-c" / "outputs.json").write_text("{}")
    return outputs, tmp_path / "outputs-state" / "jobs.db"


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated"])
def test_a_damaged_database_is_moved_aside_and_the_videos_are_listed_again(layout: tuple[Path, Path],
                                                                         damage: str) -> None:
    outputs, db = layout
    db.parent.mkdir()
    if damage == "truncated":
        s = JobStore(db)
        s.add([NewJob({"prompt": "p", "model": "demo"}) for _ in range(50)])
        s.close()
        data = db.read_bytes()
        db.write_bytes(data[:100] + b"\x00" * (len(data) - 100))
    else:
        db.write_bytes(b"" if damage == "empty" else b"not a database" * 300)
    before = db.read_bytes()
    opened = open_store(outputs, db)
    try:
        [notice] = opened.notices
        [backup] = [p for p in db.parent.glob("jobs.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
        assert backup.read_bytes() == before  # kept, byte for byte
        assert f"moved to {backup}" in notice and f"2 videos in {outputs} are kept" in notice
        assert "their settings are in the sidecars" in notice
        done = {j.id: j for j in opened.store.list(("done",))}
        assert set(done) == {"job-a", "job-b"}
        assert done["job-a"].request["prompt"] == "prompt of 120000-demo-7-a" and done["job-a"].user == "ann"
        assert done["job-b"].user is None  # unknown owner: only an admin sees it
        assert all(Path(p).exists() for p in done["job-a"].outputs)
    finally:
        opened.store.close()


def test_a_missing_database_beside_videos_is_rebuilt_and_said(layout: tuple[Path, Path]) -> None:
    outputs, db = layout
    opened = open_store(outputs, db)
    assert len(opened.store.list(("done",))) == 2
    assert "was missing" in opened.notices[0] and "2 videos" in opened.notices[0]
    opened.store.close()
    again = open_store(outputs, db)  # a healthy database: nothing to say, nothing added twice
    assert again.notices == [] and len(again.store.list()) == 2
    again.store.close()


def test_a_fresh_install_says_nothing(tmp_path: Path) -> None:
    opened = open_store(tmp_path / "outputs", tmp_path / "state" / "jobs.db")
    assert opened.notices == [] and opened.store.list() == []
    opened.store.close()


def test_the_database_in_the_outputs_folder_moves_out_with_its_jobs(layout: tuple[Path, Path]) -> None:
    outputs, db = layout
    old = JobStore(outputs / "jobs.db")
    [queued] = old.add([NewJob({"prompt": "still waiting", "model": "demo"})])
    old.close()
    (outputs / "jobs.db.damaged-20260101-000000").write_bytes(b"old damage")
    opened = open_store(outputs, db)
    try:
        assert not list(outputs.glob("jobs.db*"))  # nothing of the database is left where it is served
        assert opened.store.get(queued.id).request["prompt"] == "still waiting"
        assert (db.parent / "jobs.db.damaged-20260101-000000").read_bytes() == b"old damage"
        assert any(f"moved from {outputs / 'jobs.db'} to {db}" in n for n in opened.notices)
    finally:
        opened.store.close()


def test_the_old_database_is_not_moved_while_another_app_uses_it(layout: tuple[Path, Path]) -> None:
    outputs, db = layout
    JobStore(outputs / "jobs.db").close()
    held = AppLock(outputs / "jobs.db")
    held.acquire()
    try:
        with pytest.raises(StoreError, match="already using"):
            open_store(outputs, db)
        assert (outputs / "jobs.db").exists() and not db.exists()
    finally:
        held.release()
