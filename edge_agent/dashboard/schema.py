"""The dashboard's SQLite tables (migration range 0300-0399)."""

from __future__ import annotations

import sqlite_utils


def migrate(db: sqlite_utils.Database) -> None:
    # Login sessions: only a hash of the cookie's token is kept, so a copy of the
    # database does not hand out live sessions. ``password_tag`` ties a session to
    # the password it was opened with: changing the password ends it.
    db.execute(
        """CREATE TABLE dashboard_sessions (
            token_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
            csrf_token TEXT NOT NULL,
            password_tag TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at)")
