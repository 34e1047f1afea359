"""Configuration sections for operations (``logging:``, ``metrics:``).

Defined here, not in config.py, so the operations code and its settings read
together; config.py adds one field per section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoggingConfig(_Strict):
    """Logs go to stderr (journald under systemd); optionally also to a rotated file."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line (ts, level, logger, message, …) for log shippers"
    )
    file: Path | None = Field(None, description="also write the log to this file, rotated by size")
    max_bytes: Annotated[int, Field(ge=100_000, le=1_000_000_000)] = 10_000_000
    backup_count: Annotated[int, Field(ge=1, le=100)] = 5


class MetricsConfig(_Strict):
    """Prometheus metrics: at /metrics on the dashboard port, or on a port of their own."""

    enabled: bool = True
    port: Annotated[int, Field(ge=0, le=65535)] | None = Field(
        None, description="serve metrics on this port instead of the dashboard's /metrics (0: any free port)"
    )
    host: str = "127.0.0.1"

    @field_validator("host")
    @classmethod
    def _no_wildcard(cls, host: str) -> str:
        if host in ("", "*"):
            raise ValueError("give an address to bind, e.g. 127.0.0.1 or the store LAN address")
        return host
