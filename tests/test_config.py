"""Config errors name the field and the fix; the CLI prints no traceback."""

import subprocess
import sys
import textwrap

import pytest

from edge_agent.config import ConfigError, load_config


def write(tmp_path, text):
    path = tmp_path / "agent.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edge_agent", *args], capture_output=True, text=True, env=env)


def test_defaults_are_valid():
    config = load_config()
    assert config.dashboard.host == "127.0.0.1"
    assert config.detector.backend == "auto"


def test_missing_camera_source(tmp_path):
    path = write(tmp_path, """
        cameras:
          - id: door
            lines: []
    """)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "cameras[0] (id 'door').source" in str(error.value)
    result = cli("config", "validate", str(path))
    assert result.returncode == 2
    assert "cameras[0] (id 'door').source" in result.stderr
    assert "Traceback" not in result.stderr


def test_line_with_three_points(tmp_path):
    path = write(tmp_path, """
        cameras:
          - id: door
            source: 0
            lines:
              - id: entrance
                points: [[0.1, 0.5], [0.5, 0.5], [0.9, 0.5]]
    """)
    result = cli("config", "validate", str(path))
    assert result.returncode == 2
    assert "cameras[0] (id 'door').lines[0] (id 'entrance').points" in result.stderr
    assert "exactly 2 points, got 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key(tmp_path):
    path = write(tmp_path, """
        mqtt:
          hots: broker.local
    """)
    result = cli("config", "validate", str(path))
    assert result.returncode == 2
    assert "mqtt.hots: unknown key" in result.stderr
    assert "spelling" in result.stderr
    assert "Traceback" not in result.stderr


def test_coordinates_out_of_range(tmp_path):
    path = write(tmp_path, """
        cameras:
          - id: door
            source: rtsp://cam/stream
            lines:
              - id: entrance
                points: [[0.1, 1.5], [0.5, 0.5]]
    """)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "points" in str(error.value) and "less than or equal to 1" in str(error.value)


def test_not_yaml(tmp_path):
    path = write(tmp_path, "cameras: [\n")
    result = cli("config", "validate", str(path))
    assert result.returncode == 2 and "not valid YAML" in result.stderr


def test_environment_overrides_file(tmp_path, monkeypatch):
    path = write(tmp_path, """
        mqtt:
          host: from-file
          port: 1883
    """)
    monkeypatch.setenv("EDGE_AGENT_MQTT__PORT", "8883")
    config = load_config(path)
    assert config.mqtt.port == 8883 and config.mqtt.host == "from-file"


def test_relative_paths_resolve_against_config_folder(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    path = write(tmp_path, """
        cameras:
          - id: c
            source: clip.mp4
        storage:
          path: data/agent.db
    """)
    config = load_config(path)
    assert config.cameras[0].source == str(tmp_path / "clip.mp4")
    assert config.storage.path == tmp_path / "data" / "agent.db"


def test_valid_file_passes_validate(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    path = write(tmp_path, """
        cameras:
          - id: c
            source: clip.mp4
            lines:
              - {id: door, points: [[0.5, 0], [0.5, 1]], in_side: left}
    """)
    result = cli("config", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "valid (1 cameras, 1 lines)" in result.stdout
