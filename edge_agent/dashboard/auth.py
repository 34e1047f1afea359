"""Dashboard accounts, sessions and login throttling.

Passwords are hashed with scrypt from Python's standard library (memory-hard,
no extra dependency on the box); the hash records its own cost parameters so
they can be raised later without breaking old hashes. Accounts live in a small
JSON file written by ``edge-agent dashboard set-password`` at install time;
sessions live in SQLite (hash of the token only) so they survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..config import AgentConfig

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
MIN_PASSWORD_LENGTH = 8
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"

# 2**15 × r 8 = 32 MiB and ~0.1 s per check on a Raspberry Pi 5 class core.
SCRYPT_LOG2_N = 15
SCRYPT_R = 8
SCRYPT_P = 1


class AccountError(ValueError):
    """A password or account problem worded for the person at the keyboard."""


def users_file(config: AgentConfig) -> Path:
    """Where the accounts are: ``dashboard.password_file`` or beside the database."""
    if config.dashboard.password_file is not None:
        return Path(config.dashboard.password_file).expanduser()
    return Path(config.storage.path).expanduser().parent / "dashboard-users.json"


def hash_password(password: str, log2_n: int = SCRYPT_LOG2_N) -> str:
    salt = os.urandom(16)
    n = 2**log2_n
    key = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=256 * SCRYPT_R * n, dklen=32)
    return "scrypt${}${}${}${}${}".format(
        log2_n, SCRYPT_R, SCRYPT_P, base64.b64encode(salt).decode(), base64.b64encode(key).decode()
    )


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, log2_n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        n, r_, p_ = 2 ** int(log2_n), int(r), int(p)
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=n, r=r_, p=p_,
                                maxmem=256 * r_ * n, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def password_tag(encoded: str) -> str:
    """A short fingerprint of a stored hash: sessions opened with an older password end."""
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash to check against when the user name is unknown, so timing does not
    tell which names exist."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_hex(8))
    return _dummy_hash


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: Role
    password_hash: str


class Accounts:
    """The accounts file, re-read when it changes (a new password works at once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._accounts: dict[str, Account] = {}

    def all(self) -> dict[str, Account]:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._accounts = None, {}
                return {}
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._accounts = read_accounts(self.path)
                self._stamp = stamp
            return dict(self._accounts)

    def get(self, username: str) -> Account | None:
        return self.all().get(username)

    def authenticate(self, username: str, password: str) -> Account | None:
        account = self.get(username)
        if account is None:
            verify_password(password, _dummy())
            return None
        return account if verify_password(password, account.password_hash) else None


def read_accounts(path: Path) -> dict[str, Account]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        users = data["users"]
        return {name: Account(name, entry["role"], entry["hash"]) for name, entry in users.items()
                if entry.get("role") in ROLES}
    except FileNotFoundError:
        return {}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AccountError(f"{path} is not a dashboard accounts file ({exc}); "
                           "set the passwords again with edge-agent dashboard set-password") from None


def set_password(path: Path, username: str, role: Role, password: str, log2_n: int = SCRYPT_LOG2_N) -> None:
    """Create or update one account; the file is replaced atomically, mode 0600."""
    import re

    if not re.match(USERNAME_PATTERN, username):
        raise AccountError("a user name is 1-64 letters, digits or . _ @ -")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    accounts = read_accounts(path)
    accounts[username] = Account(username, role, hash_password(password, log2_n))
    _write_accounts(path, accounts)


def remove_account(path: Path, username: str) -> bool:
    accounts = read_accounts(path)
    if accounts.pop(username, None) is None:
        return False
    _write_accounts(path, accounts)
    return True


def _write_accounts(path: Path, accounts: dict[str, Account]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": 1, "users": {a.username: {"role": a.role, "hash": a.password_hash}
                                    for a in sorted(accounts.values(), key=lambda a: a.username)}}
    fd, tmp = tempfile.mkstemp(prefix=".users-", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(body, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- sessions --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Session:
    username: str
    role: Role
    csrf_token: str
    expires_at: float


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Sessions in SQLite: writes through the agent's store, reads on the
    dashboard's own read-only connection."""

    def __init__(self, store, read_db, accounts: Accounts, hours: float) -> None:
        self.store = store
        self.read_db = read_db  # callable → sqlite_utils.Database (thread-local)
        self.accounts = accounts
        self.seconds = hours * 3600

    def open(self, account: Account) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(account.username, account.role, secrets.token_urlsafe(32), now + self.seconds)
        with self.store.transaction() as db:
            db.execute("DELETE FROM dashboard_sessions WHERE expires_at < ?", [now])
            db.execute(
                "INSERT INTO dashboard_sessions (token_hash, username, role, csrf_token, password_tag, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [_token_hash(token), account.username, account.role, session.csrf_token,
                 password_tag(account.password_hash), now, session.expires_at],
            )
        return token, session

    def get(self, token: str | None) -> Session | None:
        if not token or len(token) > 200:
            return None
        row = self.read_db().execute(
            "SELECT username, role, csrf_token, password_tag, expires_at FROM dashboard_sessions WHERE token_hash = ?",
            [_token_hash(token)],
        ).fetchone()
        if row is None:
            return None
        username, role, csrf, tag, expires_at = row
        if expires_at < time.time():
            return None
        account = self.accounts.get(username)
        # The account was removed, its role changed or its password was reset: the session ends.
        if account is None or account.role != role or password_tag(account.password_hash) != tag:
            return None
        return Session(username, role, csrf, expires_at)

    def close(self, token: str | None) -> None:
        if token:
            with self.store.transaction() as db:
                db.execute("DELETE FROM dashboard_sessions WHERE token_hash = ?", [_token_hash(token)])


# -- throttling -----------------------------------------------------------------------
class LoginLimiter:
    """Failed logins per client address and per user name within a sliding window.

    Checked *before* the password is, so a locked-out guesser learns nothing and
    costs no scrypt work. Per user name the limit is wider (several people may
    share a tablet's address, and a guesser must not lock the manager out for long).
    """

    MAX_KEYS = 10_000

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _limits(self, client: str, username: str) -> list[tuple[str, int]]:
        return [(f"ip:{client}", self.attempts), (f"user:{username.lower()}", self.attempts * 4)]

    def retry_after(self, client: str, username: str, now: float | None = None) -> float:
        """Seconds until a login may be tried again (0: go ahead)."""
        now = time.time() if now is None else now
        wait = 0.0
        with self._lock:
            for key, limit in self._limits(client, username):
                failures = self._failures.get(key)
                if not failures:
                    continue
                while failures and failures[0] <= now - self.window:
                    failures.popleft()
                if len(failures) >= limit:
                    wait = max(wait, failures[0] + self.window - now)
        return wait

    def failed(self, client: str, username: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window}
            for key, limit in self._limits(client, username):
                self._failures.setdefault(key, deque(maxlen=limit)).append(now)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(f"ip:{client}", None)
