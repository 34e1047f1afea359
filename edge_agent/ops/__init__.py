"""Day-2 operations: systemd readiness and watchdog, Prometheus metrics,
structured logs and ``edge-agent doctor``.

Kept apart from the detection path: :func:`attach` hooks a started
:class:`~edge_agent.runtime.Agent` from the outside and only reads its state.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)


class Ops:
    """What :func:`attach` started for one agent; :meth:`stop` undoes it."""

    def __init__(self, agent: Agent) -> None:
        from .metrics import MetricsServer
        from .systemd import Notifier
        from .watchdog import Watchdog

        self.agent = agent
        self.notifier = Notifier.from_environment()
        self.watchdog = Watchdog(agent, self.notifier)
        self.metrics_server = MetricsServer.for_agent(agent)

    def start(self) -> Ops:
        if self.metrics_server is not None:
            self.metrics_server.start()
        self.watchdog.start()
        self.notifier.notify(READY=1, STATUS="running")
        return self

    def stop(self) -> None:
        self.notifier.notify(STOPPING=1, STATUS="stopping")
        self.watchdog.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()


def attach(agent: Agent) -> Ops:
    """Start the operations hooks for a started agent (called at the end of ``Agent.start``)."""
    return Ops(agent).start()
