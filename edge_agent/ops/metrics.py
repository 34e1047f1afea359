"""Prometheus metrics (prometheus_client), read from the agent at scrape time.

Nothing is counted twice or instrumented in the hot loop: a custom collector
turns ``Agent.health()`` and the per-camera counters into metric families when
Prometheus asks. Served at ``/metrics`` on the dashboard port, or on a port of
its own (``metrics.port``).
"""

from __future__ import annotations

import logging
import shutil
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from .. import __version__

if TYPE_CHECKING:
    from ..runtime import Agent

log = logging.getLogger(__name__)
PREFIX = "edge_agent"
_registries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self._agent = weakref.ref(agent)

    def collect(self) -> Iterator[Metric]:
        agent = self._agent()
        if agent is None:
            return
        try:
            health = agent.health()
        except Exception:  # a scrape must answer even when the agent is in trouble
            log.exception("metrics: health() failed")
            error = GaugeMetricFamily(f"{PREFIX}_scrape_error", "1 if reading the agent's state failed")
            error.add_metric([], 1)
            yield error
            return
        yield from _identity(agent, health)
        yield from _cameras(agent, health)
        yield from _uplink(health)
        yield from _jobs(health)
        yield from _disk(agent)


def _identity(agent: Agent, health: dict) -> Iterator[Metric]:
    info = InfoMetricFamily(f"{PREFIX}_build", "Agent version and identity")
    identity = agent.identity
    info.add_metric([], {"version": __version__, "org": identity.org, "store": identity.store,
                         "device": identity.device,
                         "backend": str((health.get("detector") or {}).get("backend") or "")})
    yield info
    uptime = GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the agent started")
    uptime.add_metric([], float(health.get("uptime_s") or 0.0))
    yield uptime
    median = (health.get("detector") or {}).get("median_ms")
    if median is not None:
        latency = GaugeMetricFamily(f"{PREFIX}_detector_latency_median_seconds",
                                    "Median detector time per frame over the last 100 frames")
        latency.add_metric([], median / 1000.0)
        yield latency
    late = CounterMetricFamily(f"{PREFIX}_late_events", "Events that arrived after their minute was closed")
    late.add_metric([], float(health.get("late_events") or 0))
    yield late
    beat = getattr(agent, "loop_heartbeat", None)
    if beat is not None:
        age = GaugeMetricFamily(f"{PREFIX}_loop_heartbeat_age_seconds",
                                "Seconds since the detection loop last passed its heartbeat")
        age.add_metric([], max(0.0, time.monotonic() - beat))
        yield age


def _cameras(agent: Agent, health: dict) -> Iterator[Metric]:
    labels = ["camera"]
    up = GaugeMetricFamily(f"{PREFIX}_camera_up", "1 while the camera is streaming", labels=labels)
    fps = GaugeMetricFamily(f"{PREFIX}_camera_fps", "Frames processed per second (last 5 s)", labels=labels)
    age = GaugeMetricFamily(f"{PREFIX}_camera_last_frame_age_seconds", "Seconds since the last frame", labels=labels)
    processed = CounterMetricFamily(f"{PREFIX}_camera_frames_processed", "Frames run through the detector",
                                    labels=labels)
    dropped = CounterMetricFamily(f"{PREFIX}_camera_frames_dropped",
                                  "Frames skipped because the detector was busy (newest frame wins)", labels=labels)
    reconnects = CounterMetricFamily(f"{PREFIX}_camera_reconnects", "Times the camera was lost and retried",
                                     labels=labels)
    events = CounterMetricFamily(f"{PREFIX}_events", "Line crossings committed to SQLite since start", labels=labels)
    for camera in health.get("cameras") or []:
        camera_id = str(camera.get("id"))
        up.add_metric([camera_id], 1.0 if camera.get("state") == "streaming" else 0.0)
        fps.add_metric([camera_id], float(camera.get("fps") or 0.0))
        if camera.get("last_frame_age_s") is not None:
            age.add_metric([camera_id], float(camera["last_frame_age_s"]))
        processed.add_metric([camera_id], float(camera.get("frames_processed") or 0))
        dropped.add_metric([camera_id], float(camera.get("frames_dropped") or 0))
        reconnects.add_metric([camera_id], float(camera.get("reconnects") or 0))
        runtime = getattr(agent, "cameras", {}).get(camera_id)
        events.add_metric([camera_id], float(getattr(runtime, "crossings", 0) or 0))
    yield from (up, fps, age, processed, dropped, reconnects, events)


def _uplink(health: dict) -> Iterator[Metric]:
    uplink = health.get("uplink") or {}
    connected = GaugeMetricFamily(f"{PREFIX}_uplink_connected", "1 while connected to the headquarters broker")
    connected.add_metric([], 1.0 if uplink.get("connected") else 0.0)
    pending = GaugeMetricFamily(f"{PREFIX}_outbox_pending", "Messages in the SQLite outbox not yet acknowledged")
    pending.add_metric([], float(uplink.get("pending") or 0))
    yield connected
    yield pending
    for key, help_text in (("published", "Messages published to the broker"),
                           ("acked", "Messages acknowledged by the broker (PUBACK success)"),
                           ("refused", "Messages the broker refused (e.g. ACL)"),
                           ("reconnects", "Reconnections to the broker")):
        if key in uplink:
            counter = CounterMetricFamily(f"{PREFIX}_uplink_{key}", help_text)
            counter.add_metric([], float(uplink[key] or 0))
            yield counter


def _jobs(health: dict) -> Iterator[Metric]:
    now = time.time()
    age = GaugeMetricFamily(f"{PREFIX}_job_last_run_age_seconds", "Seconds since the periodic job last ran",
                            labels=["job"])
    runs = CounterMetricFamily(f"{PREFIX}_job_runs", "Times the periodic job ran", labels=["job"])
    failing = GaugeMetricFamily(f"{PREFIX}_job_failing", "1 if the job's last run raised an error", labels=["job"])
    for name, state in (health.get("jobs") or {}).items():
        if state.get("last_run"):
            age.add_metric([name], max(0.0, now - state["last_run"]))
        runs.add_metric([name], float(state.get("runs") or 0))
        failing.add_metric([name], 1.0 if state.get("last_error") else 0.0)
    yield from (age, runs, failing)


def _disk(agent: Agent) -> Iterator[Metric]:
    path = Path(agent.config.storage.path)
    free = GaugeMetricFamily(f"{PREFIX}_data_disk_free_bytes", "Free bytes on the file system of the database")
    try:
        free.add_metric([], float(shutil.disk_usage(path.parent).free))
    except OSError:
        return
    yield free
    size = GaugeMetricFamily(f"{PREFIX}_database_bytes", "Size of the SQLite database with its WAL")
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except OSError:
            pass
    size.add_metric([], float(total))
    yield size


def registry_for(agent: Agent) -> CollectorRegistry:
    """One registry per agent (tests run several agents in one process)."""
    registry = _registries.get(agent)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(agent))
        ProcessCollector(registry=registry)  # RSS, CPU seconds, open files
        PlatformCollector(registry=registry)
        _registries[agent] = registry
    return registry


def mount_metrics(app, agent: Agent) -> None:
    """Serve ``/metrics`` on the dashboard's FastAPI app unless metrics have a port of their own."""
    settings = getattr(agent.config, "metrics", None)
    if settings is None or not settings.enabled or settings.port is not None:
        return
    from starlette.responses import Response

    registry = registry_for(agent)

    def metrics(request) -> Response:  # a plain route: /metrics answers without a redirect to /metrics/
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, include_in_schema=False)


class MetricsServer:
    """prometheus_client's own HTTP server on ``metrics.host:metrics.port``."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.settings = agent.config.metrics
        self.port: int | None = None
        self._server = None
        self._thread = None

    @classmethod
    def for_agent(cls, agent: Agent) -> MetricsServer | None:
        settings = getattr(agent.config, "metrics", None)
        if settings is None or not settings.enabled or settings.port is None:
            return None
        return cls(agent)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/metrics"

    def start(self) -> None:
        self._server, self._thread = start_http_server(self.settings.port, addr=self.settings.host,
                                                       registry=registry_for(self.agent))
        self.port = self._server.server_port
        log.info("metrics at %s", self.url)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
