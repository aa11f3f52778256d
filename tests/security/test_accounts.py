"""Accounts for a shared app: hashed passwords, roles, limits for non-admins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wan_studio.accounts import Accounts, AccountsError, add_account, hash_password, verify_password
from wan_studio.engine.request import GenerationRequest, RequestError, validate
from wan_studio.limits import UserLimits, check_job_cost, check_queue_quota, job_cost

ROOT = Path(__file__).resolve().parents[2]


def test_password_is_stored_hashed_and_verified(tmp_path: Path):
    path = tmp_path / "accounts.txt"
    add_account(path, "ann", "correct horse", "admin")
    add_account(path, "bob", "battery staple")
    text = path.read_text()
    assert "correct horse" not in text and "battery staple" not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    acc = Accounts(path)
    assert acc.check("ann", "correct horse") and not acc.check("ann", "battery staple")
    assert not acc.check("carl", "anything") and not acc.check("", "")
    assert acc.is_admin("ann") and not acc.is_admin("bob") and not acc.is_admin(None)


def test_same_password_gives_different_hashes():
    a, b = hash_password("same password"), hash_password("same password")
    assert a != b and verify_password("same password", a) and verify_password("same password", b)
    assert not verify_password("x", "not-a-hash")


def test_edits_take_effect_without_restart(tmp_path: Path):
    path = tmp_path / "accounts.txt"
    add_account(path, "ann", "first password")
    acc = Accounts(path)
    os.utime(path, (1, 1))  # make sure the rewrite below changes the mtime
    add_account(path, "ann", "second password")
    assert acc.check("ann", "second password") and not acc.check("ann", "first password")


@pytest.mark.parametrize("line, words", [
    ("ann:plaintext:user", "line 1"),
    ("ann:scrypt$x$y:root", "line 1"),
    ("bad name:scrypt$x$y:user", "line 1"),
])
def test_malformed_accounts_file_names_the_line(tmp_path: Path, line: str, words: str):
    path = tmp_path / "accounts.txt"
    path.write_text(line + "\n")
    with pytest.raises(AccountsError, match=words):
        Accounts(path)


def test_weak_password_and_bad_name_are_refused(tmp_path: Path):
    with pytest.raises(AccountsError, match="8 characters"):
        add_account(tmp_path / "a.txt", "ann", "short")
    with pytest.raises(AccountsError, match="user name"):
        add_account(tmp_path / "a.txt", "ann:admin", "long enough pw")


def test_add_user_command_writes_an_account(tmp_path: Path):
    path = tmp_path / "accounts.txt"
    env = {**os.environ, "WAN_STUDIO_NEW_PASSWORD": "a good password"}
    res = subprocess.run([sys.executable, "app.py", "--accounts", str(path), "--add-user", "zoe", "--admin"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert Accounts(path).is_admin("zoe") and Accounts(path).check("zoe", "a good password")


def big_request() -> GenerationRequest:
    return validate(GenerationRequest(prompt="x", model="ti2v-5b", width=1920, height=1088, num_frames=241, seed=1))


def test_job_cost_limit_applies_to_users_not_admins():
    limits = UserLimits.for_sharing()
    small = validate(GenerationRequest(prompt="x", model="ti2v-5b", seed=1))
    check_job_cost(small, limits, is_admin=False)
    assert job_cost(big_request()) > limits.max_job_cost
    with pytest.raises(RequestError, match=r"too large for a shared account.*1920×1088, 241 frames, 50 steps"):
        check_job_cost(big_request(), limits, is_admin=False)
    check_job_cost(big_request(), limits, is_admin=True)
    check_job_cost(big_request(), UserLimits(), is_admin=False)


def test_queue_quota():
    limits = UserLimits(max_queued_jobs=2)
    check_queue_quota(1, limits, is_admin=False)
    with pytest.raises(RequestError, match="already have 2 jobs"):
        check_queue_quota(2, limits, is_admin=False)
    check_queue_quota(50, limits, is_admin=True)


def test_shared_studio_limits_users_and_has_no_admin_without_accounts(tmp_path: Path):
    from wan_studio.services import Studio
    from wan_studio.settings import Settings

    local = Studio.create(Settings(models_dir=tmp_path / "m", outputs_dir=tmp_path / "o"))
    assert local.is_admin(None) and local.limits.max_job_cost is None
    shared = Studio.create(Settings(models_dir=tmp_path / "m", outputs_dir=tmp_path / "o", share=True))
    assert not shared.is_admin(None) and shared.limits == UserLimits.for_sharing()
    tight = Studio.create(Settings(models_dir=tmp_path / "m", outputs_dir=tmp_path / "o", share=True,
                                   max_job_cost=1.0))
    req = tight.presets["demo-fast"].request("a kite", seed=1)
    with pytest.raises(RequestError, match="too large"):
        tight.run(req, user="guest")
    for s in (local, shared, tight):
        s.close()
