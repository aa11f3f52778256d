"""The file route's decision, path by path: which files under the outputs folder go to whom.

``guard.file_decision`` answers True (serve), False (404, as if the file did not exist) or None (not
under the outputs or state folder: Gradio's own ``allowed_paths`` rules apply, and
``launch_kwargs`` never allows the outputs' parent). A real job store and real files; the caller's
admin role comes from the accounts in the app, here set directly.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

from wan_studio.jobs.access import Caller
from wan_studio.jobs.store import JobStore, NewJob
from wan_studio.settings import Settings
from wan_studio.ui.guard import file_decision


@pytest.fixture
def world(tmp_path: Path) -> Iterator[SimpleNamespace]:
    settings = Settings(models_dir=tmp_path / "models", outputs_dir=tmp_path / "outputs")
    outputs = settings.outputs_dir
    outputs.mkdir()
    settings.state_folder.mkdir()
    store = JobStore(settings.jobs_db)
    studio = SimpleNamespace(settings=settings, queue=SimpleNamespace(store=store),
                             caller=lambda user, session: Caller(user, session, admin=user == "admin"))

    def finished(user: str, *names: str, status: str = "done") -> list[Path]:
        paths = [outputs / n for n in names]
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists() and not p.is_symlink():
                p.write_bytes(b"\x00\x00\x00\x18ftypmp42")
        [job] = store.add([NewJob({"prompt": "a mill"}, user=user, owner="s-" + user)])
        store.transition(job.id, "running")
        if status == "done":
            store.transition(job.id, "done", outputs=[str(p) for p in paths])
        else:
            store.update(job.id, outputs=[str(p) for p in paths])
        return paths

    yield SimpleNamespace(studio=studio, outputs=outputs, root=tmp_path, finished=finished,
                          decide=lambda path, user: file_decision(studio, str(path), user))
    store.close()


def test_a_finished_video_and_its_sidecar_go_to_their_owner_and_an_admin_only(world) -> None:
    video, sidecar = world.finished("ann", "ann.mp4", "ann.json")
    for path in (video, sidecar):
        assert world.decide(path, "ann") is True
        assert world.decide(path, "admin") is True
        assert world.decide(path, "bob") is False
        assert world.decide(path, None) is False  # no login: only the session that submitted it
    assert world.decide(world.outputs / "sub" / ".." / "ann.mp4", "ann") is True  # the same file, spelled longer


def test_without_a_login_the_submitting_session_owns_its_video(world) -> None:
    [video] = world.finished("", "anon.mp4")
    studio = world.studio
    studio.caller = lambda user, session: Caller(None, "s-", admin=False)
    assert world.decide(video, None) is True
    studio.caller = lambda user, session: Caller(None, "someone-else", admin=False)
    assert world.decide(video, None) is False


def test_an_unfinished_job_or_a_file_of_no_job_is_not_served(world) -> None:
    [running] = world.finished("ann", "running.mp4", status="running")
    assert world.decide(running, "ann") is False
    stray = world.outputs / "stray.mp4"
    stray.write_bytes(b"x")
    assert world.decide(stray, "ann") is False and world.decide(stray, "admin") is False


def test_only_videos_and_sidecars_that_are_files_are_served(world) -> None:
    notes, folder = world.outputs / "notes.txt", world.outputs / "folder.mp4"
    notes.write_text("secret")
    folder.mkdir()
    world.finished("ann", "ok.mp4")
    store = world.studio.queue.store
    [job] = store.add([NewJob({"prompt": "x"}, user="ann")])
    store.transition(job.id, "running")
    store.transition(job.id, "done", outputs=[str(notes), str(folder)])
    assert world.decide(notes, "ann") is False
    assert world.decide(folder, "ann") is False
    assert world.decide(world.outputs, "ann") is False  # the folder itself


def test_hidden_folders_are_never_served_even_when_a_job_lists_them(world) -> None:
    for name in (".work/ann.mp4", ".inputs/ann.json", ".calibration/x.json", "day/.tmp-ann.mp4"):
        [path] = world.finished("ann", name)
        assert world.decide(path, "ann") is False and world.decide(path, "admin") is False, name


def test_a_link_out_of_the_outputs_is_refused_and_a_loop_too(world) -> None:
    secret = world.root / "accounts.txt"
    secret.write_text("ann:hash:admin")
    link = world.outputs / "link.mp4"
    link.symlink_to(secret)
    world.finished("ann", "link.mp4")  # a job even lists it
    assert world.decide(link, "ann") is False and world.decide(link, "admin") is False
    loop = world.outputs / "loop.mp4"
    loop.symlink_to(loop)
    assert world.decide(loop, "admin") is False


def test_the_state_folder_is_never_served_and_other_folders_are_left_to_gradio(world) -> None:
    state = world.studio.settings.state_folder  # outputs-state: a sibling whose name starts like outputs
    db_copy = state / "jobs.mp4"
    db_copy.write_bytes(b"SQLite format 3\x00")
    assert world.decide(state / "jobs.db", "admin") is False
    assert world.decide(db_copy, "admin") is False
    inside = world.outputs / "in.mp4"
    inside.symlink_to(db_copy)
    assert world.decide(inside, "admin") is False
    beside = world.root / "outputs-old" / "x.mp4"  # the same prefix, another folder
    beside.parent.mkdir()
    beside.write_bytes(b"x")
    assert world.decide(beside, "admin") is None
    assert world.decide(world.root / "accounts.txt", "admin") is None  # the outputs' parent: not ours
    assert world.decide(world.root / "models" / "x.safetensors", "admin") is None
    escape = world.outputs / "evil.mp4"
    escape.symlink_to(beside)  # lexically inside the outputs, really beside them
    assert world.decide(escape, "admin") is False
    assert world.decide("https://example.com/ann.mp4", "admin") is None


def _preview(world, user: str, name: str = "preview-000003.jpg") -> tuple[str, Path]:
    store = world.studio.queue.store
    [job] = store.add([NewJob({"prompt": "a mill"}, user=user)])
    store.transition(job.id, "running")
    path = world.outputs / ".work" / job.id / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xd8\xff")
    return job.id, path


def test_a_running_jobs_live_preview_goes_to_its_owner_and_an_admin_only(world) -> None:
    job_id, frame = _preview(world, "ann")
    assert world.decide(frame, "ann") is True and world.decide(frame, "admin") is True
    assert world.decide(frame, "bob") is False and world.decide(frame, None) is False
    assert world.decide(frame.with_name("preview-000004.jpg"), "ann") is False  # not (yet) there


def test_only_preview_files_of_a_known_job_directly_in_its_work_folder_are_previews(world) -> None:
    job_id, frame = _preview(world, "ann")
    other = frame.with_name("latents.pt")
    other.write_bytes(b"x")
    assert world.decide(other, "ann") is False  # the rest of the work folder stays hidden
    deep = frame.parent / "sub" / frame.name
    deep.parent.mkdir()
    deep.write_bytes(b"\xff\xd8\xff")
    assert world.decide(deep, "ann") is False
    orphan = world.outputs / ".work" / "no-such-job" / frame.name
    orphan.parent.mkdir()
    orphan.write_bytes(b"\xff\xd8\xff")
    assert world.decide(orphan, "admin") is False
    named_like = world.outputs / "day" / job_id / frame.name  # a preview name outside .work
    named_like.parent.mkdir(parents=True)
    named_like.write_bytes(b"\xff\xd8\xff")
    assert world.decide(named_like, "ann") is False


def test_a_preview_reached_through_a_link_is_refused(world) -> None:
    job_id, frame = _preview(world, "ann")
    link_dir = world.outputs / ".work" / "alias"
    link_dir.symlink_to(frame.parent)
    assert world.decide(link_dir / frame.name, "ann") is False
    link = frame.with_name("preview-000009.jpg")
    link.symlink_to(frame)
    assert world.decide(link, "ann") is False
