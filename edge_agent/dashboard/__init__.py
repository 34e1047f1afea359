"""The store manager's dashboard: FastAPI, served by the agent on the store LAN.

Everything the page needs (script, chart library, styles) is served from here;
nothing comes from the internet.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import plotly
import uvicorn
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request

from .. import __version__
from ..ops.metrics import mount_metrics
from ..storage import open_readonly
from .queries import recent_minutes, today_counts

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="edge-agent dashboard", version=__version__)
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    local = threading.local()

    def db():
        if getattr(local, "db", None) is None:
            local.db = open_readonly(agent.config.storage.path)
        return local.db

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request):
        return templates.TemplateResponse(request, "index.html", {"store": agent.identity.store,
                                                                  "device": agent.identity.device})

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_js():
        return FileResponse(PLOTLY_JS, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/api/summary")
    def summary():
        """Today's counts, the last 30 minutes, and uplink/camera health."""
        now = time.time()
        health = agent.health()
        return {
            "store": agent.identity.store,
            "device": agent.identity.device,
            "timezone": agent.config.timezone,
            "today": today_counts(db(), now, agent.config.timezone),
            "minutes": recent_minutes(db(), now),
            "uplink": health["uplink"],
            "cameras": health["cameras"],
        }

    @app.get("/api/health")
    def health():
        return agent.health()

    mount_metrics(app, agent)  # /metrics (Prometheus), unless metrics.port gives it a port of its own
    return app


class DashboardServer:
    """uvicorn in a thread of the agent process."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        config = agent.config.dashboard
        self.host = config.host
        self._socket = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((config.host, config.port))
        self.port = self._socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(create_app(agent), log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()
        deadline = time.time() + 10
        while not self.server.started and time.time() < deadline and self._thread.is_alive():
            time.sleep(0.02)
        log.info("dashboard at %s", self.url)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(5)
        self._socket.close()
