"""Accounts, password hashes, login throttling, language choice; the CLI that sets
the store password at install time."""

from __future__ import annotations

import json
import stat

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.dashboard.auth import (
    AccountError,
    Accounts,
    LoginLimiter,
    hash_password,
    password_tag,
    read_accounts,
    set_password,
    verify_password,
)
from edge_agent.dashboard.i18n import LANGUAGES, negotiate, texts


def test_scrypt_hashes_verify_and_carry_their_cost():
    encoded = hash_password("correct horse", log2_n=10)
    assert encoded.startswith("scrypt$10$8$1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct hors", encoded)
    assert not verify_password("correct horse", "md5$abc")
    assert not verify_password("correct horse", "garbage")
    again = hash_password("correct horse", log2_n=10)
    assert again != encoded and password_tag(again) != password_tag(encoded)  # salted


def test_accounts_file_is_private_and_checked(tmp_path):
    path = tmp_path / "users.json"
    set_password(path, "manager", "admin", "long enough", log2_n=10)
    set_password(path, "clerk", "viewer", "also long enough", log2_n=10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "long enough" not in path.read_text()
    accounts = Accounts(path)
    assert accounts.authenticate("manager", "long enough").role == "admin"
    assert accounts.authenticate("manager", "wrong password") is None
    assert accounts.authenticate("ghost", "long enough") is None
    with pytest.raises(AccountError, match="at least 8"):
        set_password(path, "x", "admin", "short", log2_n=10)
    with pytest.raises(AccountError, match="user name"):
        set_password(path, "bad name", "admin", "long enough", log2_n=10)
    with pytest.raises(AccountError, match="role"):
        set_password(path, "x", "owner", "long enough", log2_n=10)
    path.write_text("{not json")
    with pytest.raises(AccountError, match="not a dashboard accounts file"):
        read_accounts(path)


def test_limiter_counts_failures_per_address_and_per_user():
    limiter = LoginLimiter(attempts=3, window=60)
    for i in range(3):
        assert limiter.retry_after("10.0.0.5", "admin", now=100 + i) == 0
        limiter.failed("10.0.0.5", "admin", now=100 + i)
    assert limiter.retry_after("10.0.0.5", "admin", now=103) == pytest.approx(57)
    assert limiter.retry_after("10.0.0.5", "someone-else", now=103) > 0  # the address is locked
    assert limiter.retry_after("10.0.0.6", "admin", now=103) == 0  # another tablet may still try
    assert limiter.retry_after("10.0.0.5", "admin", now=161) == 0  # the window has passed
    # Per user name the limit is wider (4×), so guessing from many addresses stops too.
    for i in range(12):
        limiter.failed(f"10.1.0.{i}", "manager", now=200)
    assert limiter.retry_after("10.2.0.1", "manager", now=201) > 0
    limiter.succeeded("10.0.0.5")
    assert limiter.retry_after("10.0.0.5", "other", now=104) == 0


@pytest.mark.parametrize("header, cookie, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh-CN"),
    ("zh-TW", None, "zh-CN"),
    ("en-US,en;q=0.9", None, "en"),
    ("fr-FR, de;q=0.9", None, "en"),
    ("fr-FR, zh;q=0.5, en;q=0.4", None, "zh-CN"),
    ("en;q=0.5, zh-Hans;q=0.9", None, "zh-CN"),
    ("zh;q=0", None, "en"),
    ("", None, "en"),
    (None, None, "en"),
    ("zh-CN", "en", "en"),
    ("en", "zh-CN", "zh-CN"),
    ("en", "xx", "en"),
])
def test_language_negotiation(header, cookie, expected):
    assert negotiate(header, cookie) == expected


def test_both_languages_have_every_text():
    english, chinese = texts("en"), texts("zh-CN")
    assert set(english) == set(chinese) and LANGUAGES == ("en", "zh-CN")
    assert all(chinese[key] for key in chinese)
    assert chinese["nav.today"] == "今日"


def test_set_password_command(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(f"storage:\n  path: {tmp_path / 'data' / 'agent.db'}\n")
    runner = CliRunner()
    result = runner.invoke(main, ["dashboard", "set-password", "--role", "admin", "--config", str(config),
                                  "--password-stdin"], input="s3cret-store-pass\n")
    assert result.exit_code == 0, result.output
    users_file = tmp_path / "data" / "dashboard-users.json"
    assert f"admin (admin) saved in {users_file}" in result.output
    stored = json.loads(users_file.read_text())["users"]["admin"]
    assert stored["role"] == "admin" and verify_password("s3cret-store-pass", stored["hash"])

    result = runner.invoke(main, ["dashboard", "set-password", "--role", "viewer", "--user", "tablet",
                                  "--config", str(config)], input="viewer-pass-1\nviewer-pass-1\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["dashboard", "users", "--config", str(config)])
    assert result.output.splitlines() == ["admin\tadmin", "tablet\tviewer"]

    result = runner.invoke(main, ["dashboard", "set-password", "--role", "admin", "--config", str(config),
                                  "--password-stdin"], input="short\n")
    assert result.exit_code == 1 and "at least 8 characters" in result.output
    result = runner.invoke(main, ["dashboard", "remove-user", "tablet", "--config", str(config)])
    assert result.exit_code == 0
    result = runner.invoke(main, ["dashboard", "remove-user", "tablet", "--config", str(config)])
    assert result.exit_code == 1 and "no account 'tablet'" in result.output
