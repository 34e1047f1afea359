"""systemd watchdog: ping only while the detection loop and the scheduler are alive.

A thread that pings unconditionally would keep a wedged agent "healthy" for
ever. Here each ping is earned: the detection loop must have passed its
heartbeat (``Agent.loop_heartbeat``) and the scheduler must have run its
``watchdog`` job within the limit. When either stalls, pings stop and systemd
(``WatchdogSec=``) kills and restarts the service.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .systemd import Notifier

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)

DEFAULT_STALL_SECONDS = 60.0
JOB_NAME = "watchdog"


class Watchdog:
    def __init__(self, agent: Agent, notifier: Notifier, stall_seconds: float | None = None) -> None:
        self.agent = agent
        self.notifier = notifier
        # Without systemd's own limit, "stalled" still means something for health().
        self.stall_seconds = stall_seconds or notifier.watchdog_seconds or DEFAULT_STALL_SECONDS
        self.started_at = time.monotonic()
        self.pings = 0
        self.last_problem: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)

    @property
    def ping_interval(self) -> float:
        return max(0.05, (self.notifier.watchdog_seconds or self.stall_seconds) / 3)

    def start(self) -> None:
        # A job that does nothing: its last run proves the scheduler's threads run jobs.
        self.agent.schedule(JOB_NAME, lambda: None, min(15.0, max(0.05, self.stall_seconds / 4)))
        if self.notifier.enabled:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def problems(self, now: float | None = None) -> list[str]:
        """Why the agent is not alive right now (empty: alive)."""
        now = time.monotonic() if now is None else now
        problems = []
        beat = getattr(self.agent, "loop_heartbeat", None)
        since = now - (beat if beat is not None else self.started_at)
        if since > self.stall_seconds:
            problems.append(f"detection loop has not run for {since:.0f} s")
        scheduler = self.agent.scheduler
        if not scheduler.running:
            problems.append("scheduler is not running")
        else:
            last_run = (self.agent.jobs.get(JOB_NAME) or {}).get("last_run")
            wall_since = time.time() - last_run if last_run else now - self.started_at
            if wall_since > self.stall_seconds:
                problems.append(f"scheduler has not run a job for {wall_since:.0f} s")
        return problems

    def _loop(self) -> None:
        while not self._stop.wait(self.ping_interval):
            problems = self.problems()
            if problems:
                text = "; ".join(problems)
                if text != self.last_problem:
                    log.error("watchdog: %s; not telling systemd we are alive", text)
                self.last_problem = text
                self.notifier.notify(STATUS=f"unhealthy: {text}")
                continue
            if self.last_problem:
                log.info("watchdog: alive again")
                self.last_problem = None
            fields: dict[str, object] = {"STATUS": self._status_line()}
            if self.notifier.watchdog_usec:
                fields["WATCHDOG"] = 1
            if self.notifier.notify(**fields) and "WATCHDOG" in fields:
                self.pings += 1

    def _status_line(self) -> str:
        """One line for ``systemctl status``."""
        try:
            health = self.agent.health()
        except Exception as exc:  # never let a status line stop the pings
            return f"running (health unavailable: {type(exc).__name__})"
        cameras = health.get("cameras") or []
        streaming = sum(1 for c in cameras if c.get("state") == "streaming")
        uplink = health.get("uplink") or {}
        link = "connected" if uplink.get("connected") else "not connected"
        return f"{streaming}/{len(cameras)} cameras streaming, uplink {link}, {uplink.get('pending', 0)} pending"
