"""uvicorn in a thread of the agent process, bound to the configured address."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from .app import create_app

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)


class DashboardServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        config = agent.config.dashboard
        self.host = config.host
        try:
            if ipaddress.ip_address(config.host).is_unspecified:
                log.warning("the dashboard listens on every interface (%s): prefer the store LAN address",
                            config.host)
        except ValueError:
            pass  # a host name
        self._socket = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((config.host, config.port))
        self.port = self._socket.getsockname()[1]
        self.app = create_app(agent)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                                    timeout_graceful_shutdown=2))
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
        self.app.state.stopping.set()  # ends live streams, so uvicorn can close their connections
        self.server.should_exit = True
        self._thread.join(5)
        self._socket.close()
