"""Helpers for tests that talk to the dashboard: accounts, logged-in HTTP clients."""

from __future__ import annotations

import httpx

from edge_agent.config import AgentConfig
from edge_agent.dashboard.auth import set_password, users_file

ADMIN = ("admin", "admin-password-1")
VIEWER = ("viewer", "viewer-password-1")
FAST_HASH = 10  # scrypt cost 2**10 keeps tests quick; real accounts use 2**15


def make_accounts(config: AgentConfig) -> None:
    path = users_file(config)
    set_password(path, ADMIN[0], "admin", ADMIN[1], log2_n=FAST_HASH)
    set_password(path, VIEWER[0], "viewer", VIEWER[1], log2_n=FAST_HASH)


class LoggedIn(httpx.Client):
    """Usable with ``with`` after it has already sent the login request."""

    def __enter__(self) -> LoggedIn:
        return self


def login(base_url: str, account: tuple[str, str] = ADMIN) -> LoggedIn:
    """An HTTP client holding a session cookie; its CSRF token is sent on changes."""
    client = LoggedIn(base_url=base_url, timeout=15)
    response = client.post("/api/login", json={"username": account[0], "password": account[1]})
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = response.json()["csrf_token"]
    return client


class NoDetector:
    """For dashboard tests without cameras: the detector must never be called."""

    backend = "none"

    def detect(self, frames, imgsz=None):
        raise AssertionError("no camera configured")
