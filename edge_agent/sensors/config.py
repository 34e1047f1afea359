"""The ``sensors:`` section: the store-local broker and the registry of nodes.

Kept free of imports from ``edge_agent.config`` (which imports this module), so
it carries its own strict base class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# ESPHome's node name rules (lowercase, digits, '-'); the node id is also the
# MQTT topic segment and the broker username.
NodeId = Annotated[str, Field(min_length=1, max_length=31, pattern=r"^[a-z0-9][a-z0-9-]*$")]
Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
NodeKind = Literal["door_beam", "pir", "shelf_scale"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SensorBrokerConfig(_Strict):
    """The store's own mosquitto (on the box), not headquarters' broker (``mqtt:``)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "edge-agent-sensors"
    topic_root: str = "sensors"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    # The broker keeps our subscription and queues QoS 1 events while the agent
    # restarts (mosquitto keeps them in memory).
    session_expiry_seconds: Annotated[int, Field(ge=0, le=86400)] = 3600

    @field_validator("topic_root")
    @classmethod
    def _clean_root(cls, root: str) -> str:
        root = root.strip("/")
        if not root or re.search(r"[#+\s]", root):
            raise ValueError("topic_root must be an MQTT topic without wildcards, e.g. sensors "
                             "(the same as topic_root in firmware_configs/packages/base.yaml)")
        return root


class SensorNodeConfig(_Strict):
    """One node of the registry: what it is and where it is.

    door_beam: ``door`` (a door id; also the line id in sensor-only rollups), and
    ``camera`` + ``line`` when a camera counts the same door (fusion).
    pir: ``zone``. shelf_scale: ``zone`` (the camera's shelf zone when one sees
    it) and ``product``. ``camera`` may be left out when exactly one camera has
    that zone or line.
    """

    id: NodeId
    kind: NodeKind
    door: Ident | None = None
    zone: Ident | None = None
    camera: Ident | None = None
    line: Ident | None = None
    product: Annotated[str, Field(max_length=200)] | None = None
    # A beam pair mounted the other way round: swap in/out here instead of reflashing.
    swap_direction: bool = False
    enabled: bool = True

    @model_validator(mode="after")
    def _location_for_kind(self) -> SensorNodeConfig:
        if self.kind == "door_beam":
            if self.door is None:
                raise ValueError(f"node {self.id!r} (door_beam) needs door: the id of the door it counts, e.g. main")
            if self.zone is not None or self.product is not None:
                raise ValueError(f"node {self.id!r} (door_beam) has a door, not zone/product; remove them")
        else:
            if self.zone is None:
                raise ValueError(f"node {self.id!r} ({self.kind}) needs zone: the zone id it watches")
            if self.door is not None or self.line is not None or self.swap_direction:
                raise ValueError(f"node {self.id!r} ({self.kind}) has a zone; door/line/swap_direction are for door_beam nodes")
            if self.kind == "pir" and self.product is not None:
                raise ValueError(f"node {self.id!r} (pir) has no product; product labels belong to shelf_scale nodes")
        return self


class DoorFusionConfig(_Strict):
    """When camera and beam counts of one door disagree enough to warn."""

    window_minutes: Annotated[int, Field(ge=1, le=240)] = 15
    min_crossings: Annotated[int, Field(ge=1, le=100000)] = 20
    warn_below: Annotated[float, Field(gt=0, le=1)] = 0.7


class ShelfFusionConfig(_Strict):
    """A pick-up goes with a person in the shelf's zone from ``before`` seconds
    before the event to ``after`` seconds after it (the scale reports once the
    weight has settled, a second or two after the hand left)."""

    match_before_seconds: Annotated[float, Field(ge=0, le=60)] = 5.0
    match_after_seconds: Annotated[float, Field(ge=0, le=60)] = 2.0


class SensorsConfig(_Strict):
    enabled: bool = True
    broker: SensorBrokerConfig = Field(default_factory=SensorBrokerConfig)
    nodes: list[SensorNodeConfig] = []
    # Rollups of sensors that no camera covers use this id in the camera's place.
    source_id: Ident = "sensors"
    offline_after_seconds: Annotated[float, Field(ge=10, le=86400)] = 180.0
    blocked_beam_seconds: Annotated[float, Field(ge=5, le=86400)] = 120.0
    max_payload_bytes: Annotated[int, Field(ge=64, le=65536)] = 4096
    max_messages_per_second: Annotated[float, Field(gt=0, le=10000)] = 20.0
    burst: Annotated[int, Field(ge=1, le=100000)] = 200
    queue_size: Annotated[int, Field(ge=10, le=1000000)] = 10000
    door: DoorFusionConfig = Field(default_factory=DoorFusionConfig)
    shelf: ShelfFusionConfig = Field(default_factory=ShelfFusionConfig)

    @model_validator(mode="after")
    def _unique_nodes(self) -> SensorsConfig:
        seen: set[str] = set()
        for node in self.nodes:
            if node.id in seen:
                raise ValueError(f"sensors.nodes: node id {node.id!r} is used twice; ids must be unique")
            seen.add(node.id)
        return self


@dataclass(frozen=True)
class ResolvedNode:
    """A node with its location resolved against the cameras."""

    id: str
    kind: str
    source: str  # the rollup it is reported in: a camera id or the sensors source id
    door: str | None
    zone: str | None
    camera: str | None  # the running camera that sees its door/zone, if any
    line: str | None
    product: str | None
    swap_direction: bool
    enabled: bool


def resolve_nodes(sensors: SensorsConfig, cameras: Sequence[Any]) -> dict[str, ResolvedNode]:
    """Check every node's camera/line/zone against the cameras and resolve them.

    Raises ValueError naming ``sensors.nodes[i] (id '…').field`` and the fix.
    """
    camera_ids = {camera.id for camera in cameras}
    if sensors.source_id in camera_ids:
        raise ValueError(f"sensors.source_id: {sensors.source_id!r} is also a camera id; "
                         "choose another source_id (it names sensor-only rollups)")
    by_id = {camera.id: camera for camera in cameras}
    resolved: dict[str, ResolvedNode] = {}
    for index, node in enumerate(sensors.nodes):
        where = f"sensors.nodes[{index}] (id {node.id!r})"
        camera = None
        if node.camera is not None:
            camera = by_id.get(node.camera)
            if camera is None:
                raise ValueError(f"{where}.camera: no camera {node.camera!r}; cameras: {', '.join(sorted(camera_ids)) or 'none'}")
        line = node.line
        if node.kind == "door_beam":
            if line is not None:
                candidates = [c for c in ([camera] if camera else cameras) if any(l.id == line for l in c.lines)]
                if not candidates:
                    raise ValueError(f"{where}.line: no camera{' ' + repr(node.camera) if camera else ''} has a line "
                                     f"{line!r}; give the id of the camera's counting line at this door")
                if len(candidates) > 1:
                    raise ValueError(f"{where}.line: cameras {', '.join(c.id for c in candidates)} all have a line "
                                     f"{line!r}; add camera: to say which one counts this door")
                camera = candidates[0]
            elif camera is not None:
                raise ValueError(f"{where}.line: a door_beam node with camera: needs line: the camera's counting "
                                 f"line at this door ({', '.join(l.id for l in camera.lines) or 'it has none'})")
        else:
            candidates = [c for c in ([camera] if camera else cameras) if any(z.id == node.zone for z in c.zones)]
            if camera is not None and not candidates:
                raise ValueError(f"{where}.zone: camera {camera.id!r} has no zone {node.zone!r}; "
                                 f"zones: {', '.join(z.id for z in camera.zones) or 'none'}")
            if len(candidates) > 1:
                raise ValueError(f"{where}.zone: cameras {', '.join(c.id for c in candidates)} all have a zone "
                                 f"{node.zone!r}; add camera: to say which one sees it")
            camera = candidates[0] if candidates else None
        product = node.product
        if node.kind == "shelf_scale" and product is None and camera is not None:
            product = next((z.product for z in camera.zones if z.id == node.zone), None)
        running = camera is not None and getattr(camera, "enabled", True)
        resolved[node.id] = ResolvedNode(
            id=node.id,
            kind=node.kind,
            source=camera.id if running else sensors.source_id,
            door=node.door,
            zone=node.zone,
            camera=camera.id if running else None,
            line=line if running else None,
            product=product,
            swap_direction=node.swap_direction,
            enabled=node.enabled,
        )
    return resolved
