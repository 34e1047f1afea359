"""The store manager's dashboard: FastAPI, served by the agent on the store LAN.

Everything the pages need (scripts, the chart library, styles, texts) is served
from here; nothing comes from the internet. Importing this package is cheap:
the web stack loads only when the dashboard starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import create_app
    from .server import DashboardServer

__all__ = ["DashboardServer", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "DashboardServer":
        from .server import DashboardServer

        return DashboardServer
    raise AttributeError(name)
