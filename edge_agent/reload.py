"""Applying a changed configuration file to a running agent (HQ's ``reload-config``).

What can change in place does (counting lines and zones of existing cameras,
rollup timing, retention and the disk budget, the live feed); anything else is
reported as needing a restart rather than half-applied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import CommandError
from .config import ConfigError, load_config
from .pipeline import CameraAnalytics

if TYPE_CHECKING:
    from .runtime import Agent

HOT = {"rollup", "timezone"}


def reload_config(agent: Agent) -> dict:
    if agent.config_path is None:
        raise CommandError("this agent was not started from a configuration file")
    try:
        new = load_config(agent.config_path)
    except ConfigError as exc:
        raise CommandError(f"the configuration file is not valid; nothing changed: {exc}") from None
    old = agent.config
    applied, restart = [], []
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
            new_cams = {c.id: c for c in new.cameras}
            for camera_id, camera in new_cams.items():
                before = old_cams.get(camera_id)
                if before is None or camera.model_dump(exclude={"lines", "zones"}) != before.model_dump(
                        exclude={"lines", "zones"}):
                    restart.append(f"cameras.{camera_id}")
                elif (camera.lines, camera.zones) != (before.lines, before.zones) and camera_id in agent.cameras:
                    runtime = agent.cameras[camera_id]
                    runtime.analytics = CameraAnalytics(camera, new.tracker, camera.fps_cap or 30.0)
                    applied.append(f"cameras.{camera_id}.lines/zones")
            restart.extend(f"cameras.{c} (removed)" for c in old_cams if c not in new_cams)
        elif key == "mqtt" and old.mqtt.model_dump(exclude={"live_events"}) == new.mqtt.model_dump(
                exclude={"live_events"}):
            applied.append("mqtt.live_events")
        else:
            restart.append(key)
    agent.config = new.model_copy(update={
        # What needs a restart keeps running as it was started.
        key: getattr(old, key) for key in ("mqtt", "detector", "tracker", "dashboard", "assets_dir")
        if key in restart
    })
    agent.apply_live_events()
    if old.rollup.interval_seconds != new.rollup.interval_seconds and agent.scheduler.running:
        agent.scheduler.reschedule_job("rollup", trigger="interval", seconds=new.rollup.interval_seconds)
    return {"applied": applied, "restart_needed": restart}
