"""Saving a camera's lines and zones from the Setup page into the config file.

Only that camera's ``lines`` and ``zones`` are replaced in the YAML the agent
was started with; everything else (comments, order, other cameras, secrets
that came from the environment and must not land in the file) is left as it
was. The new file is validated with the same model the agent starts with
before it replaces the old one (atomically, the old one kept as ``.bak``).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..config import (AgentConfig, CameraConfig, ConfigError, LineConfig, ZoneConfig, format_validation_error,
                      layout_path, load_config)


class LayoutError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def validate_camera(camera: CameraConfig, lines: list[dict], zones: list[dict]) -> CameraConfig:
    """The camera with new lines and zones, checked by the config model itself
    (raises ``ValidationError``; duplicate ids, points, polygons…)."""
    data = camera.model_dump()
    data["lines"], data["zones"] = lines, zones
    return CameraConfig.model_validate(data)


def _point_list(points) -> CommentedSeq:
    outer = CommentedSeq()
    for x, y in points:
        pair = CommentedSeq([round(float(x), 4), round(float(y), 4)])
        pair.fa.set_flow_style()
        outer.append(pair)
    outer.fa.set_flow_style()
    return outer


def _line_yaml(line: LineConfig) -> CommentedMap:
    entry = CommentedMap()
    entry["id"] = line.id
    if line.name:
        entry["name"] = line.name
    entry["points"] = _point_list(line.points)
    entry["in_side"] = line.in_side
    for key, value in line.model_dump(mode="json", exclude_defaults=True).items():
        if key not in entry and key not in ("points",):
            entry[key] = value
    return entry


def _zone_yaml(zone: ZoneConfig) -> CommentedMap:
    entry = CommentedMap()
    entry["id"] = zone.id
    if zone.name:
        entry["name"] = zone.name
    entry["kind"] = zone.kind
    if zone.product:
        entry["product"] = zone.product
    entry["polygon"] = _point_list(zone.polygon)
    for key, value in zone.model_dump(mode="json", exclude_defaults=True).items():
        if key not in entry and key not in ("polygon",):
            entry[key] = value
    return entry


def save_layout(config_path: Path, camera: CameraConfig) -> AgentConfig:
    """Write ``camera``'s lines and zones into ``config_path`` when the agent may
    write it, else into the layout file beside the database (a rollout owns the
    config file and the service may not write /etc); return the new, validated
    configuration (file + layout + environment, as at start)."""
    if not (os.access(config_path.parent, os.W_OK) or os.access(config_path, os.W_OK)):
        return save_layout_overlay(config_path, camera)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)  # the style of examples/store.yaml
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LayoutError(409, f"cannot read the config file {config_path}: {exc.strerror}") from None
    data = yaml.load(text) or CommentedMap()
    entry = next((c for c in data.get("cameras") or [] if isinstance(c, dict) and c.get("id") == camera.id), None)
    if entry is None:
        raise LayoutError(409, f"camera {camera.id!r} is not in {config_path} (set from the environment?): "
                               "add it to the file to edit it here")
    entry["lines"] = CommentedSeq([_line_yaml(line) for line in camera.lines])
    entry["zones"] = CommentedSeq([_zone_yaml(zone) for zone in camera.zones])
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    new_text = buffer.getvalue()

    folder = config_path.parent
    if os.access(folder, os.W_OK):
        fd, tmp = tempfile.mkstemp(prefix=f".{config_path.name}-", suffix=".yaml", dir=str(folder))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(new_text)
                handle.flush()
                os.fsync(handle.fileno())
            new_config = _validated(Path(tmp), config_path)
            shutil.copy2(config_path, config_path.with_name(config_path.name + ".bak"))
            os.chmod(tmp, config_path.stat().st_mode & 0o777)
            os.replace(tmp, config_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return new_config
    # The folder is read-only (e.g. a hardened service) but the file is not: write in place.
    check = _validated_text(new_text, config_path)
    with config_path.open("w", encoding="utf-8") as handle:
        handle.write(new_text)
        handle.flush()
        os.fsync(handle.fileno())
    return check


def save_layout_overlay(config_path: Path, camera: CameraConfig) -> AgentConfig:
    """Keep ``camera``'s lines and zones in the layout file (see config.layout_path)."""
    import yaml as pyyaml

    target = layout_path(_validated(config_path, config_path))
    try:
        overlay = pyyaml.safe_load(target.read_text(encoding="utf-8")) if target.exists() else None
    except (OSError, pyyaml.YAMLError):
        overlay = None  # a broken layout file is replaced by a good one
    overlay = overlay if isinstance(overlay, dict) and isinstance(overlay.get("cameras"), dict) else {"cameras": {}}
    overlay["cameras"][camera.id] = {
        "lines": [line.model_dump(mode="json", exclude_none=True) for line in camera.lines],
        "zones": [zone.model_dump(mode="json", exclude_none=True) for zone in camera.zones],
    }
    text = "# Lines and zones saved from the dashboard's Setup page; they replace the config file's\n" \
           "# for these cameras. Delete this file to go back to the config file's.\n" + \
           pyyaml.safe_dump(overlay, sort_keys=False, allow_unicode=True)
    previous = target.read_bytes() if target.exists() else None
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".layout-", suffix=".yaml", dir=str(target.parent))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)
    try:
        return _validated(config_path, config_path)
    except LayoutError:
        if previous is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(previous)
        raise


def _validated(path: Path, original: Path) -> AgentConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise LayoutError(422, f"the saved file would not be valid ({original}): {exc}") from None


def _validated_text(text: str, original: Path) -> AgentConfig:
    """Validate YAML text as if it were ``original`` (relative paths resolve beside it)."""
    import yaml as pyyaml

    from ..config import _resolve_relative_paths

    data = _resolve_relative_paths(pyyaml.safe_load(text) or {}, original.parent)
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        raise LayoutError(422, format_validation_error(exc, data)) from None
