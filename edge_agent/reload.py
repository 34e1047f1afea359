"""Applying a changed configuration file to a running agent (HQ's ``reload-config``).

What can change in place does (counting lines and zones of existing cameras,
rollup timing, retention and the disk budget, the live feed); anything else is
reported as needing a restart rather than half-applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import CommandError
from .config import AgentConfig, ConfigError, load_config

if TYPE_CHECKING:
    from .runtime import Agent

HOT = {"rollup", "timezone"}


def reload_config(agent: Agent) -> dict:
    """HQ's ``reload-config``: re-read the file the agent started from and apply it."""
    if agent.config_path is None:
        raise CommandError("this agent was not started from a configuration file")
    try:
        new = load_config(agent.config_path)
    except ConfigError as exc:
        raise CommandError(f"the configuration file is not valid; nothing changed: {exc}") from None
    return apply_config(agent, new)


def apply_config(agent: Agent, new: AgentConfig) -> dict:
    """The one way a running agent takes a new configuration (HQ reload, dashboard Setup).

    A camera whose lines or zones changed gets new analytics that keep its
    tracker (track ids carry on); the swap is one reference assignment, so the
    detection loop uses the old analytics or the new one for a whole frame,
    never a mix. Returns what was applied, which cameras took a new layout, and
    what needs a restart.
    """
    with agent._apply_lock:
        old = agent.config
        applied, restart, cameras = [], [], []
        for key in type(old).model_fields:
            if getattr(old, key) == getattr(new, key):
                continue
            if key in HOT:
                applied.append(key)
            elif key == "storage":
                before, after = old.storage.model_dump(), new.storage.model_dump()
                if before["path"] != after["path"] or before["synchronous"] != after["synchronous"]:
                    restart.append("storage.path/synchronous")
                applied.append("storage (budget, retention)")
            elif key == "cameras":
                old_cams = {c.id: c for c in old.cameras}
                for camera in new.cameras:
                    before = old_cams.get(camera.id)
                    if before is None or camera.model_dump(exclude={"lines", "zones"}) != before.model_dump(
                            exclude={"lines", "zones"}):
                        restart.append(f"cameras.{camera.id}")
                    elif (camera.lines, camera.zones) != (before.lines, before.zones) and camera.id in agent.cameras:
                        runtime = agent.cameras[camera.id]
                        with runtime.lock:
                            # Visits in the old zones end and held crossings are decided first.
                            agent.finish_camera(camera.id, runtime, how="layout")
                            old_analytics = runtime.analytics
                            runtime.analytics = type(old_analytics)(
                                camera, new.tracker, camera.fps_cap or 30.0, tracker=old_analytics.tracker,
                                settings=new.analytics, pose=agent.pose)
                        cameras.append(camera.id)
                        applied.append(f"cameras.{camera.id}.lines/zones")
                new_ids = {c.id for c in new.cameras}
                restart.extend(f"cameras.{c} (removed)" for c in old_cams if c not in new_ids)
            elif key == "mqtt" and old.mqtt.model_dump(exclude={"live_events"}) == new.mqtt.model_dump(
                    exclude={"live_events"}):
                applied.append("mqtt.live_events")
            else:
                restart.append(key)
        agent.config = new.model_copy(update={
            # What needs a restart keeps running as it was started.
            key: getattr(old, key) for key in ("mqtt", "detector", "tracker", "dashboard", "assets_dir", "performance")
            if key in restart
        })
        recorder = getattr(agent, "recorder", None)  # the analytics' copy of the layout, where there is one
        if recorder is not None and hasattr(recorder, "sync_layout"):
            recorder.sync_layout(agent.config)
        agent.apply_live_events()
        if old.rollup.interval_seconds != new.rollup.interval_seconds and agent.scheduler.running:
            agent.scheduler.reschedule_job("rollup", trigger="interval", seconds=new.rollup.interval_seconds)
        return {"applied": applied, "cameras": cameras, "restart_needed": restart}
