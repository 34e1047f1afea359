"""Operations hooks on a real agent: sd_notify readiness and watchdog, Prometheus
metrics, JSON logs with rotation, and ``edge-agent doctor``."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from edge_agent import __version__
from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.detect import load_detector
from edge_agent.mosquitto import Mosquitto, free_port
from edge_agent.ops.doctor import check_clock
from edge_agent.ops.logs import configure_logging
from edge_agent.ops.settings import LoggingConfig
from edge_agent.ops.systemd import Notifier
from edge_agent.runtime import Agent


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket collecting what the agent sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def pings_between(self, start: float, end: float) -> int:
        return sum(1 for at, fields in list(self.messages) if start <= at <= end and fields.get("WATCHDOG") == "1")

    def wait_for(self, key: str, value: str, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(fields.get(key) == value for _, fields in list(self.messages)):
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


class GatedDetector:
    """The real detector with a gate the test can close, to wedge the detection loop."""

    def __init__(self, detector) -> None:
        self.inner = detector
        self.backend = detector.backend
        self.gate = threading.Event()
        self.gate.set()

    def detect(self, frames, imgsz=None):
        self.gate.wait()
        return self.inner.detect(frames, imgsz=imgsz)


@pytest.fixture(scope="module")
def detector(model_path):
    return load_detector(model_path, load_config().detector)


def agent_config(tmp_path: Path, assets_dir: Path, clip: Path, **overrides) -> dict:
    data = {
        "assets_dir": str(assets_dir),
        "cameras": [{"id": "door", "source": str(clip), "loop": True, "fps_cap": 10,
                     "lines": [{"id": "main", "points": [[0.5, 0.0], [0.5, 1.0]]}]}],
        "storage": {"path": str(tmp_path / "agent.db")},
        "mqtt": {"enabled": False},
        "dashboard": {"enabled": False},
    }
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return data


def run_in_thread(agent: Agent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- sd_notify -------------------------------------------------------------------------
def test_notifier_sends_to_path_and_abstract_sockets(tmp_path):
    server = NotifySocket(tmp_path / "notify.sock")
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(server.path)})
        assert notifier.notify(READY=1, STATUS="hello")
        assert server.wait_for("READY", "1", timeout=5)
        assert server.wait_for("STATUS", "hello", timeout=5)
    finally:
        server.close()

    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edge-agent-test-{os.getpid()}"
    abstract.bind("\0" + name)
    abstract.settimeout(5)
    try:
        assert Notifier.from_environment({"NOTIFY_SOCKET": "@" + name}).notify(WATCHDOG=1)
        assert abstract.recv(100) == b"WATCHDOG=1"
    finally:
        abstract.close()


def test_notifier_outside_systemd_and_watchdog_pid():
    assert not Notifier.from_environment({}).notify(READY=1)
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environment(env, pid=42).watchdog_seconds == 30.0
    # a child that inherited the parent's watchdog variables must not ping for it
    assert Notifier.from_environment({**env, "WATCHDOG_PID": "41"}, pid=42).watchdog_seconds is None
    assert Notifier.from_environment({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_seconds == 30.0


def test_watchdog_pings_only_while_loop_and_scheduler_are_alive(tmp_path, assets_dir, clip, detector, monkeypatch):
    server = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(server.path))
    monkeypatch.setenv("WATCHDOG_USEC", "900000")  # 0.9 s: pings every 0.3 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    gated = GatedDetector(detector)
    agent = Agent(load_config(**agent_config(tmp_path, assets_dir, clip)), detector=gated)
    try:
        agent.start()
        thread = run_in_thread(agent)
        assert server.wait_for("READY", "1"), "READY=1 never came"
        time.sleep(1.5)
        now = time.monotonic()
        assert server.pings_between(now - 1.2, now) >= 3, "no regular WATCHDOG=1 while healthy"
        assert agent.cameras["door"].frames_processed > 0

        gated.gate.clear()  # the detection loop wedges inside detect()
        time.sleep(0.9 + 0.6)  # past the limit, plus a ping interval and slack
        wedged_from = time.monotonic()
        time.sleep(1.5)
        assert server.pings_between(wedged_from, time.monotonic()) == 0, "pinged while the detection loop was stuck"
        assert any(f.get("STATUS", "").startswith("unhealthy: detection loop") for _, f in server.messages)

        gated.gate.set()
        time.sleep(1.0)
        now = time.monotonic()
        assert server.pings_between(now - 0.8, now) >= 1, "pings did not resume when the loop recovered"

        agent.scheduler.pause()  # jobs stop running: the scheduler counts as stalled
        time.sleep(0.9 + 0.6)
        paused_from = time.monotonic()
        time.sleep(1.5)
        assert server.pings_between(paused_from, time.monotonic()) == 0, "pinged while the scheduler ran no job"
        assert any("scheduler has not run a job" in f.get("STATUS", "") for _, f in server.messages)
        agent.scheduler.resume()
        assert agent.jobs["watchdog"]["runs"] > 0
    finally:
        gated.gate.set()
        agent.stop()
        thread.join(10)
        agent.shutdown()
        server.close()
    assert server.wait_for("STOPPING", "1", timeout=2) or any(f.get("STOPPING") == "1" for _, f in server.messages)


# -- metrics -------------------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.geturl() == url, "redirected"  # Prometheus should get the page itself
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_on_dashboard_port(tmp_path, assets_dir, clip, detector, broker):
    config = load_config(**agent_config(
        tmp_path, assets_dir, clip,
        mqtt={"enabled": True, "host": "127.0.0.1", "port": broker.port},
        dashboard={"enabled": True, "host": "127.0.0.1", "port": 0},
        rollup={"interval_seconds": 0.2},
    ))
    agent = Agent(config, detector=detector)
    try:
        agent.start()
        thread = run_in_thread(agent)
        assert wait_until(lambda: agent.cameras["door"].frames_processed >= 5 and agent.uplink.stats.connected
                          and agent.jobs["rollup"]["runs"] >= 2)
        samples = scrape(agent.dashboard.url + "metrics")
    finally:
        agent.stop()
        thread.join(10)
        agent.shutdown()
    door = (("camera", "door"),)
    assert samples[("edge_agent_camera_frames_processed_total", door)] >= 5
    assert samples[("edge_agent_camera_up", door)] == 1.0
    assert samples[("edge_agent_camera_fps", door)] > 0
    assert ("edge_agent_camera_frames_dropped_total", door) in samples
    assert ("edge_agent_camera_reconnects_total", door) in samples
    assert ("edge_agent_events_total", door) in samples
    assert samples[("edge_agent_uplink_connected", ())] == 1.0
    assert ("edge_agent_outbox_pending", ()) in samples
    assert 0 <= samples[("edge_agent_job_last_run_age_seconds", (("job", "rollup"),))] < 5
    assert samples[("edge_agent_job_runs_total", (("job", "rollup"),))] >= 2
    assert samples[("edge_agent_job_failing", (("job", "rollup"),))] == 0
    assert samples[("edge_agent_data_disk_free_bytes", ())] > 0
    assert samples[("process_resident_memory_bytes", ())] > 10e6
    build = [labels for (name, labels) in samples if name == "edge_agent_build_info"]
    assert build and ("version", __version__) in build[0]


def test_metrics_on_their_own_port(tmp_path, assets_dir, clip, detector):
    port = free_port()
    agent = Agent(load_config(**agent_config(tmp_path, assets_dir, clip, metrics={"port": port})), detector=detector)
    try:
        agent.start()
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert samples[("edge_agent_uplink_connected", ())] == 0.0
        assert ("edge_agent_camera_up", (("camera", "door"),)) in samples
    finally:
        agent.shutdown()
    with pytest.raises(OSError):
        scrape(f"http://127.0.0.1:{port}/metrics")  # stopped with the agent


# -- logs ---------------------------------------------------------------------------------------
@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def test_json_lines_with_rotation(tmp_path, restore_logging, capsys):
    path = tmp_path / "logs" / "agent.log"
    configure_logging(LoggingConfig(format="json", file=path, max_bytes=100_000, backup_count=2))
    log = logging.getLogger("edge_agent.test")
    for number in range(3000):
        log.info("crossing %d on line %s", number, "main")
    try:
        raise ValueError("bad payload")
    except ValueError:
        log.exception("sensor message rejected")
    logging.getLogger("edge_agent.test").debug("not shown at INFO")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"], files  # rotated, 2 backups kept
    assert all(p.stat().st_size <= 100_000 for p in path.parent.iterdir())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    last = records[-1]
    assert last["level"] == "ERROR" and last["logger"] == "edge_agent.test"
    assert last["message"] == "sensor message rejected" and "ValueError: bad payload" in last["exc_info"]
    assert records[0]["message"].startswith("crossing ") and "ts" in records[0] and records[0]["thread"]
    assert not any("not shown" in r["message"] for r in records)
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert json.loads(stderr_lines[-1])["message"] == "sensor message rejected"


def test_logging_section_is_validated(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("logging:\n  format: xml\nmetrics:\n  prot: 9\n")
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert "logging.format" in result.output and "metrics.prot: unknown key" in result.output


# -- doctor ---------------------------------------------------------------------------------------
def write_config(tmp_path: Path, data: dict) -> Path:
    import yaml

    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def doctor(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["doctor", *args])
    return result.exit_code, result.output


def test_doctor_passes_on_a_working_box_and_names_problems_with_fixes(tmp_path, assets_dir, clip, broker):
    good = agent_config(tmp_path, assets_dir, clip, mqtt={"enabled": True, "port": broker.port})
    code, out = doctor("--config", str(write_config(tmp_path, good)))
    assert code == 0, out
    for line in ("ok    config", "ok    storage", "ok    model", "ok    camera door", "ok    broker"):
        assert line in out, out
    assert "ok    disk" in out or "warn  disk" in out, out  # free space is the host's (CI disks run full)
    assert "yolov8n_fp32.onnx loads on" in out and "640x360 frames" in out

    broken = dict(good)
    broken["assets_dir"] = str(tmp_path / "no-models")
    broken["cameras"] = [{**good["cameras"][0], "source": "rtsp://user:pw@127.0.0.1:1/stream"}]
    broken["mqtt"] = {"enabled": True, "host": "127.0.0.1", "port": free_port()}
    code, out = doctor("--config", str(write_config(tmp_path, broken)), "--min-free-mb", "1e12")
    assert code == 1
    assert "FAIL  disk" in out and "below the 1,000,000,000,000 MB minimum" in out
    assert "FAIL  model" in out and "no-models/yolov8n_fp32.onnx is missing" in out
    assert "FAIL  camera door    cannot reach 127.0.0.1:1" in out and "user:pw" not in out
    assert "FAIL  broker" in out and "cannot connect to 127.0.0.1" in out
    assert out.count("fix: ") >= 4 and out.rstrip().endswith("4 problems found.")


def test_doctor_reports_a_bad_config_and_wrong_credentials(tmp_path, assets_dir, clip):
    path = tmp_path / "agent.yaml"
    path.write_text("mqtt:\n  hots: x\n")
    code, out = doctor("--config", str(path))
    assert code == 1 and "FAIL  config" in out and "mqtt.hots: unknown key" in out and "fix: edit" in out

    (tmp_path / "broker").mkdir()
    passwd = tmp_path / "broker" / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "box1", "right-password"], check=True)
    # run as root: the pytest folder is private, the broker's usual user could not read its files
    with Mosquitto(workdir=tmp_path / "broker", allow_anonymous=False,
                   extra=f"password_file {passwd}\nuser root") as server:
        data = agent_config(tmp_path, assets_dir, clip, mqtt={
            "enabled": True, "port": server.port, "username": "box1", "password": "wrong-password"})
        code, out = doctor("--config", str(write_config(tmp_path, data)), "--skip", "model")
        assert code == 1 and "refused the connection" in out and "mqtt.username and mqtt.password" in out
        data["mqtt"]["password"] = "right-password"
        code, out = doctor("--config", str(write_config(tmp_path, data)), "--skip", "model")
        assert code == 0 and "connected to 127.0.0.1" in out and "as box1" in out


def test_doctor_asks_the_running_agent_and_checks_its_version(tmp_path, assets_dir, clip, broker, detector):
    data = agent_config(tmp_path, assets_dir, clip, mqtt={"enabled": True, "port": broker.port},
                        dashboard={"enabled": True, "host": "127.0.0.1", "port": free_port()})
    config_path = write_config(tmp_path, data)
    agent = Agent(load_config(config_path), detector=detector)
    try:
        agent.start()
        thread = run_in_thread(agent)
        code, out = doctor("--config", str(config_path), "--expect-version", __version__, "--wait", "20",
                           "--skip", "model", "--json")
        report = json.loads(out)
        assert code == 0, out
        checks = {c["name"]: c for c in report["checks"]}
        assert "streaming in the running agent" in checks["camera door"]["detail"]
        assert checks["version"]["status"] == "ok" and __version__ in checks["version"]["detail"]

        code, out = doctor("--config", str(config_path), "--expect-version", "9.9.9", "--wait", "1",
                           "--skip", "model", "--skip", "cameras")
        assert code == 1 and f"says version {__version__} is online, expected 9.9.9" in out
    finally:
        agent.stop()
        thread.join(10)
        agent.shutdown()


def test_clock_before_the_release_fails():
    check = check_clock(now=86400.0)
    assert check.failed and "1970-01-02" in check.detail and "NTP" in check.fix
