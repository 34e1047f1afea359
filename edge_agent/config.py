"""The agent's whole configuration: one pydantic model, loaded from YAML with
``EDGE_AGENT_…`` environment overrides.

A wrong config must fail at start with the field's path and the fix, never a
traceback; :func:`load_config` turns pydantic's errors into :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .sensors.config import SensorsConfig, resolve_nodes
from .analytics.settings import AnalyticsSettings, LineRulesConfig
from .ops.settings import LoggingConfig, MetricsConfig
from .performance import PerformanceConfig

Coord = Annotated[float, Field(ge=0.0, le=1.0)]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
TopicSegment = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/#+\s]+$")]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-agent"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edge-agent"



class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class LineConfig(Strict):
    """A counting line: two points in normalised image coordinates (0–1, y down).

    ``in_side`` is seen as if you stood on the first point looking at the second
    on the picture: a person moving onto your right-hand (or left-hand) side
    counts ``in``; the opposite move counts ``out``.
    """

    id: Identifier
    name: Annotated[str, Field(max_length=64)] | None = None  # shown on the dashboard, any language
    points: list[tuple[Coord, Coord]]
    in_side: Literal["left", "right"] = "right"
    # Counting rules: an absolute dead band (0-1 units) on top of analytics.line_rules
    # (band relative to body size, cooldown, track quality, ID-switch memory) which
    # ``rules`` overrides for this line only.
    hysteresis: Annotated[float, Field(ge=0.0, le=0.2)] = 0.0
    rules: LineRulesConfig | None = None
    # Decide a track's direction when it leaves the scene (back-and-forth cancels out).
    count_on_exit: bool = False
    # Crossings of this line change the store's occupancy (in adds, out subtracts).
    entrance: bool = True

    @field_validator("points")
    @classmethod
    def _two_distinct_points(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(points) != 2:
            raise ValueError(
                f"a counting line has exactly 2 points, got {len(points)}; "
                "write it as [[x1, y1], [x2, y2]] in 0-1 image coordinates"
            )
        if points[0] == points[1]:
            raise ValueError("the two points of a counting line must differ")
        return points


class ZoneConfig(Strict):
    """A polygon in normalised coordinates: a shelf area, an aisle, a staff-only area."""

    id: Identifier
    name: Annotated[str, Field(max_length=64)] | None = None  # shown on the dashboard, any language
    polygon: list[tuple[Coord, Coord]]
    kind: Literal["zone", "shelf", "staff"] = "zone"
    product: str | None = None
    # Which point of a person's box must be inside: the feet (floor zones, the
    # default) or the box centre (e.g. a shelf face seen from the front).
    anchor: Literal["feet", "centre"] = "feet"

    @field_validator("polygon")
    @classmethod
    def _at_least_three(cls, polygon: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(polygon) < 3:
            raise ValueError(
                f"a zone polygon needs at least 3 points, got {len(polygon)}; "
                "write it as [[x1, y1], [x2, y2], [x3, y3], ...] in 0-1 image coordinates"
            )
        return polygon


class CameraConfig(Strict):
    id: Identifier
    source: str | int = Field(
        description="a video file path, an rtsp:// or http:// URL, or a USB camera index (0, 1, …)"
    )
    fps_cap: Annotated[float, Field(gt=0, le=120)] | None = None
    loop: bool = False
    imgsz: Annotated[int, Field(ge=64, le=1920, multiple_of=32)] | None = None
    lines: list[LineConfig] = []
    zones: list[ZoneConfig] = []
    enabled: bool = True

    @field_validator("source", mode="before")
    @classmethod
    def _source_given(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ValueError(
                "a camera needs a source: a video file path, an rtsp:// URL or a USB index such as 0"
            )
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> CameraConfig:
        _no_duplicates([line.id for line in self.lines], f"camera {self.id!r} lines")
        _no_duplicates([zone.id for zone in self.zones], f"camera {self.id!r} zones")
        return self

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, str) and "://" not in self.source


class DetectorConfig(Strict):
    model: str = Field(
        "yolov8n_fp32.onnx",
        description="a model file; a bare name is looked up in the assets directory",
    )
    backend: Literal["auto", "openvino", "onnxruntime", "ultralytics"] = "auto"
    imgsz: Annotated[int, Field(ge=64, le=1920, multiple_of=32)] = 640
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.1
    iou: Annotated[float, Field(gt=0, lt=1)] = 0.7
    classes: list[int] = [0]
    threads: Annotated[int, Field(ge=0, le=64)] = 0


class TrackerConfig(Strict):
    """Tracker settings; thresholds mirror Ultralytics' bytetrack.yaml.

    ``botsort`` (default) is Roboflow ``trackers``' BoT-SORT without ReID and
    without camera-motion compensation: Ultralytics' ByteTrack association
    (score-fused IoU, a second pass for low-confidence boxes, a stricter pass for
    unconfirmed tracks) without torch. See docs/analytics.md for the measurements.
    """

    kind: Literal["botsort", "bytetrack", "ultralytics-bytetrack", "ultralytics-botsort"] = "botsort"
    high_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.25
    new_track_threshold: Annotated[float, Field(gt=0, lt=1)] = 0.25
    match_iou: Annotated[float, Field(gt=0, lt=1)] = 0.2
    lost_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    min_frames: Annotated[int, Field(ge=1, le=30)] = 2


Days = Annotated[float, Field(gt=0)]


class RetentionConfig(Strict):
    """Days each table keeps its rows (``null``: forever). Only data that has
    reached its rollups / HQ is ever removed by age; see docs/storage.md."""

    events: Days = 7
    zone_visits: Days = 7
    sensor_readings: Days = 7
    rollups_minute: Days = 30  # with the camera_minutes bookkeeping rows
    rollups_hour: Days | None = None
    rollups_day: Days | None = None
    outbox_sent: Days = 30  # sent messages (HQ's "re-send" reaches back this far)
    device_log: Days = 30

    @field_validator("events", "zone_visits")
    @classmethod
    def _keep_a_day(cls, days: float) -> float:
        if days < 2:
            raise ValueError("keep raw rows at least 2 days: day rollups are built from them")
        return days


class StorageConfig(Strict):
    path: Path = Field(default_factory=lambda: _default_data_dir() / "agent.db")
    # FULL: fsync on every commit (survives power cuts); NORMAL: may lose the last
    # commits on a power cut. See docs/storage.md.
    synchronous: Literal["NORMAL", "FULL"] = "FULL"
    # Most bytes the database may use; beyond it the oldest data already sent goes
    # first, and unsent data only as the last resort (counted and reported).
    disk_budget_mb: Annotated[float, Field(ge=1)] = 1024
    # Also prune as if over budget when the file system has less free space than this.
    min_free_disk_mb: Annotated[float, Field(ge=0)] = 200
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    prune_interval_seconds: Annotated[float, Field(gt=0, le=86400)] = 300


class TLSConfig(Strict):
    """Server verification against ``ca_file`` (or the system CAs); a client
    certificate (``cert_file`` + ``key_file``) when the broker asks for one."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pairs(self) -> TLSConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        return self


class MqttConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None  # read at start (keeps the secret out of the config file)
    tls: TLSConfig = Field(default_factory=TLSConfig)
    topic_prefix: str = "smartstore/v1"
    org: TopicSegment = "demo-org"
    store_id: TopicSegment = "demo-store"
    device_id: TopicSegment = "demo-device"
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    max_inflight: Annotated[int, Field(ge=1, le=1000)] = 50
    # Reconnect waits grow from min to max (doubling), each drawn at random from
    # [half, full] of the step so a fleet does not reconnect in lockstep.
    reconnect_min_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 60.0
    health_interval_seconds: Annotated[float, Field(ge=0, le=86400)] = 60  # 0: no health messages
    live_events: bool = False  # also publish every crossing on <base>/event

    @model_validator(mode="after")
    def _reconnect_range(self) -> MqttConfig:
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ValueError("reconnect_max_seconds must be at least reconnect_min_seconds")
        return self

    def missing_files(self) -> list[str]:
        """Files this section names that are not on this box (checked when the uplink
        starts, not when the config is read: a controller validates configs for boxes)."""
        problems = []
        files = [("password_file", self.password_file, "a file holding the broker password (one line)")]
        if self.tls.enabled:
            files += [(f"tls.{key}", getattr(self.tls, key), "a PEM file") for key in ("ca_file", "cert_file", "key_file")]
        for key, path, what in files:
            if path is not None and not Path(path).expanduser().is_file():
                problems.append(f"mqtt.{key}: file {path} does not exist; put {what} there or fix the path")
        return problems

    def secret(self) -> str | None:
        if self.password_file is not None:
            return Path(self.password_file).expanduser().read_text(encoding="utf-8").strip()
        return self.password

    @field_validator("topic_prefix")
    @classmethod
    def _clean_prefix(cls, prefix: str) -> str:
        prefix = prefix.strip("/")
        if not prefix or re.search(r"[#+\s]", prefix):
            raise ValueError("topic_prefix must be a non-empty MQTT topic without wildcards, e.g. smartstore/v1")
        return prefix


class DashboardConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Accounts: `edge-agent dashboard set-password --role admin|viewer` writes this file
    # (default: dashboard-users.json beside the database). No account, no access.
    password_file: Path | None = None
    session_hours: Annotated[float, Field(gt=0, le=24 * 30)] = 12.0
    login_attempts: Annotated[int, Field(ge=1, le=100)] = 5  # failed logins per client per window
    login_window_seconds: Annotated[float, Field(ge=1, le=86400)] = 300.0
    # Setup-page snapshots: one per camera this often, people pixelated before storing.
    snapshot_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0

    @field_validator("host")
    @classmethod
    def _no_wildcard_default(cls, host: str) -> str:
        if host in ("", "*"):
            raise ValueError("give the store LAN address to bind, e.g. 192.168.1.20 (or 127.0.0.1)")
        return host


class PosConfig(Strict):
    """Point-of-sale receipts for conversion (receipts ÷ visitors): an MQTT topic on
    the store broker and/or a folder where the till drops CSV files."""

    enabled: bool = False
    mqtt_topic: str | None = Field(None, description="e.g. store/pos/receipts; JSON receipts")
    host: str | None = Field(None, description="broker host; default: mqtt.host")
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    csv_dir: Path | None = Field(None, description="folder scanned for *.csv receipt files")
    poll_seconds: Annotated[float, Field(ge=1, le=3600)] = 10.0

    @model_validator(mode="after")
    def _has_a_source(self) -> PosConfig:
        if self.enabled and not self.mqtt_topic and self.csv_dir is None:
            raise ValueError("pos is enabled but has no source: set pos.mqtt_topic and/or pos.csv_dir")
        if self.mqtt_topic is not None and (not self.mqtt_topic.strip("/") or re.search(r"[#+\s]", self.mqtt_topic)):
            raise ValueError("pos.mqtt_topic must be a topic without wildcards, e.g. store/pos/receipts")
        return self


class RollupConfig(Strict):
    interval_seconds: Annotated[float, Field(gt=0, le=600)] = 5.0
    # A camera whose pipeline has not reported for this long is treated as caught up.
    stale_after_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0


class AgentConfig(BaseSettings):
    """Everything the agent reads at start. Defaults run the demo."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    assets_dir: Path = Field(default_factory=lambda: _default_cache_dir())
    cameras: list[CameraConfig] = []
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    pos: PosConfig = Field(default_factory=PosConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    rollup: RollupConfig = Field(default_factory=RollupConfig)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    timezone: str = "UTC"
    sensors: SensorsConfig | None = None  # ESPHome sensor nodes on the store's broker (issue 5)

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> AgentConfig:
        _no_duplicates([camera.id for camera in self.cameras], "cameras")
        return self

    @model_validator(mode="after")
    def _sensor_locations_exist(self) -> AgentConfig:
        if self.sensors is not None:
            resolve_nodes(self.sensors, self.cameras)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the YAML file (passed as init kwargs).
        return env_settings, init_settings

    def camera(self, camera_id: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.id == camera_id:
                return camera
        raise KeyError(camera_id)


class ConfigError(Exception):
    """A config problem worded for the person who wrote the file."""


def _no_duplicates(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for item in ids:
        if item in seen:
            raise ValueError(f"{what}: id {item!r} is used twice; ids must be unique")
        seen.add(item)


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """``cameras.0.lines.1.points`` → ``cameras[0] (id 'door').lines[1] (id 'main').points``."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            label = f"[{key}]"
            try:
                node = node[key]
                if isinstance(node, dict) and "id" in node:
                    label += f" (id {node['id']!r})"
            except (IndexError, KeyError, TypeError):
                node = None
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


_FIXES = {
    "extra_forbidden": "remove it or check its spelling against the documented keys",
    "missing": "add it",
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the allowed values",
    "less_than_equal": "lower it",
    "greater_than_equal": "raise it",
    "greater_than": "raise it",
    "less_than": "lower it",
    "string_pattern_mismatch": "use only letters, digits, '_', '.' and '-'",
}


def format_validation_error(error: ValidationError, data: Any) -> str:
    lines = ["the configuration is not valid:"]
    for item in error.errors():
        where = _location(tuple(item["loc"]), data)
        message = item["msg"].removeprefix("Value error, ")
        fix = _FIXES.get(item["type"])
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  - {where}: {message}" + (f" ({fix})" if fix else ""))
    return "\n".join(lines)


def load_config(path: str | Path | None = None, **overrides: Any) -> AgentConfig:
    """Read YAML (if given), apply environment overrides, validate.

    Relative paths in the file (camera sources, the model, storage) resolve
    against the file's folder, so a config works wherever it is launched from.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys (cameras:, mqtt:, …)")
        data = _resolve_relative_paths(loaded, path.parent)
    data.update(overrides)
    try:
        config = AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, data)) from None
    return apply_layout_overlay(config) if path is not None else config


def layout_path(config: AgentConfig) -> Path:
    """Where the dashboard keeps lines and zones when the config file is not the
    agent's to write (a rollout owns /etc/edge-agent): beside the database."""
    return config.storage.path.expanduser().parent / "layout.yaml"


def apply_layout_overlay(config: AgentConfig) -> AgentConfig:
    """Lines and zones saved from the dashboard replace the file's for the cameras
    they name (``{cameras: {<id>: {lines: […], zones: […]}}}``); delete the
    layout file to go back to the config file's."""
    path = layout_path(config)
    if not path.exists():
        return config
    try:
        overlay = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path} (lines and zones saved from the dashboard) cannot be read: {exc}") from None
    cameras = overlay.get("cameras") if isinstance(overlay, dict) else None
    if not isinstance(cameras, dict):
        raise ConfigError(f"{path}: expected 'cameras:' mapping camera ids to their lines and zones")
    data = config.model_dump()
    for camera in data["cameras"]:
        layout = cameras.get(camera["id"])
        if isinstance(layout, dict):
            camera["lines"] = layout.get("lines", camera["lines"])
            camera["zones"] = layout.get("zones", camera["zones"])
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise ConfigError(f"{path} (lines and zones saved from the dashboard): "
                          + format_validation_error(exc, data)) from None


def _resolve_relative_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            candidate = (base / value).resolve()
            return str(candidate) if candidate.exists() or "/" in value else value
        return value

    for camera in data.get("cameras") or []:
        if isinstance(camera, dict) and isinstance(camera.get("source"), str) and not camera["source"].strip().isdigit():
            camera["source"] = resolve(camera["source"])
    storage = data.get("storage")
    if isinstance(storage, dict) and isinstance(storage.get("path"), str):
        if not Path(storage["path"]).expanduser().is_absolute():
            storage["path"] = str((base / storage["path"]).resolve())
    mqtt = data.get("mqtt")
    if isinstance(mqtt, dict):
        files = [(mqtt, "password_file")]
        if isinstance(mqtt.get("tls"), dict):
            files += [(mqtt["tls"], key) for key in ("ca_file", "cert_file", "key_file")]
        for section, key in files:
            if isinstance(section.get(key), str) and not Path(section[key]).expanduser().is_absolute():
                section[key] = str((base / section[key]).resolve())
    detector = data.get("detector")
    if isinstance(detector, dict) and isinstance(detector.get("model"), str) and "/" in detector["model"]:
        detector["model"] = resolve(detector["model"])
    for section, key in (("dashboard", "password_file"), ("pos", "csv_dir")):
        block = data.get(section)
        if isinstance(block, dict) and isinstance(block.get(key), str) and not Path(block[key]).expanduser().is_absolute():
            block[key] = str((base / block[key]).resolve())
    return data


def dump_config(config: AgentConfig) -> str:
    """YAML of a config, as written back by the dashboard's Setup page."""
    data = config.model_dump(mode="json", exclude_defaults=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
