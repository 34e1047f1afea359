"""``edge-agent doctor``: is this box able to count and report, and if not, what to do.

Each check prints ``ok``, ``warn`` or ``FAIL`` with what it saw, and a ``fix:``
line for anything wrong. The exit status is 1 when any check fails, so the
rollout's health check and a technician on the phone use the same command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from .. import __version__
from ..config import AgentConfig, CameraConfig, ConfigError, load_config

CLOCK_FLOOR = 1735689600  # 2025-01-01T00:00:00Z: a box reading earlier has no real time yet
DEFAULT_MIN_FREE_MB = 500


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def ok(name: str, detail: str) -> Check:
    return Check(name, "ok", detail)


def warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, "warn", detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


@dataclass
class Options:
    expect_version: str | None = None
    wait: float = 0.0  # seconds to keep retrying camera/broker/version checks (a service just restarted)
    min_free_mb: float = DEFAULT_MIN_FREE_MB
    skip: frozenset[str] = frozenset()


# -- config ----------------------------------------------------------------------------
def check_config(path: Path | None) -> tuple[AgentConfig | None, Check]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, fail("config", str(exc), f"edit {path} (run `edge-agent config validate {path}` to re-check)")
    cameras = [c for c in config.cameras if c.enabled]
    lines = sum(len(c.lines) for c in cameras)
    return config, ok("config", f"{path or '(defaults)'} is valid: {len(cameras)} cameras, {lines} counting lines")


# -- storage and disk --------------------------------------------------------------------
def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _database_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


def check_storage(config: AgentConfig) -> Check:
    path = Path(config.storage.path).expanduser()
    folder = path.parent
    if not folder.exists():
        parent = _existing_parent(folder)
        if not os.access(parent, os.W_OK):
            return fail("storage", f"{folder} does not exist and {parent} is not writable by {_user()}",
                        f"create {folder} owned by {_user()} (the Ansible role does this)")
        return ok("storage", f"{folder} will be created at start")
    if not os.access(folder, os.W_OK | os.X_OK):
        return fail("storage", f"{folder} is not writable by {_user()}",
                    f"chown {_user()} {folder} (or point storage.path at a writable folder)")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            return fail("storage", f"{path} is not readable and writable by {_user()}", f"chown {_user()} {path}")
        try:
            from ..storage import open_readonly

            db = open_readonly(path)
            tables = db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
            db.conn.close()
        except Exception as exc:  # sqlite3.DatabaseError and friends
            return fail("storage", f"{path} cannot be read as SQLite: {exc}",
                        "stop the agent, move the file aside and keep it for analysis; the agent starts a new one")
        return ok("storage", f"{path}: {tables} tables, {_database_bytes(path) / 1e6:.1f} MB with WAL")
    return ok("storage", f"{path} will be created at start in a writable folder")


def check_disk(config: AgentConfig, min_free_mb: float) -> Check:
    path = Path(config.storage.path).expanduser()
    where = _existing_parent(path.parent)
    usage = shutil.disk_usage(where)
    free_mb = usage.free / 1e6
    used_mb = _database_bytes(path) / 1e6 if path.exists() else 0.0
    # The storage section may carry a disk budget (retention work); use it when present.
    budget_mb = getattr(config.storage, "disk_budget_mb", None)
    detail = f"{free_mb:,.0f} MB free on {where} ({usage.free / usage.total:.0%}); database {used_mb:,.1f} MB"
    if free_mb < min_free_mb:
        return fail("disk", detail + f", below the {min_free_mb:,.0f} MB minimum",
                    f"free space on {where} (old logs: journalctl --vacuum-size=100M; old releases in "
                    "/opt/edge-agent/releases) or lower the storage budget")
    if budget_mb:
        detail += f", budget {budget_mb:,.0f} MB"
        if used_mb + free_mb < budget_mb:
            return fail("disk", detail + ": the disk cannot hold the configured budget",
                        f"lower storage.disk_budget_mb below {used_mb + free_mb - min_free_mb:,.0f} MB "
                        "or free space on the disk")
        if used_mb > 0.9 * budget_mb:
            return warn("disk", detail + ": the database is above 90% of its budget (oldest sent data is pruned)")
    if usage.free / usage.total < 0.10:
        return warn("disk", detail + ": less than 10% free", f"free space on {where}")
    return ok("disk", detail)


# -- model -------------------------------------------------------------------------------
def check_model(config: AgentConfig) -> Check:
    from ..assets import AssetError, ensure_asset
    from ..detect import load_detector

    name = config.detector.model
    given = Path(name).expanduser()
    candidate = given if (given.is_absolute() or given.parent != Path(".")) else config.assets_dir.expanduser() / name
    if not candidate.exists():
        return fail("model", f"{candidate} is missing",
                    f"copy the model file there (the Ansible role does this) or run `edge-agent models fetch {name}`")
    try:
        path = ensure_asset(name, config.assets_dir, allow_download=False)  # checks the manifest's sha256
    except AssetError as exc:
        return fail("model", str(exc), "copy the model file again from the release (its checksum must match)")
    try:
        import numpy as np

        started = time.perf_counter()
        detector = load_detector(Path(path), config.detector)
        loaded = time.perf_counter()
        detector.detect([np.zeros((480, 640, 3), dtype=np.uint8)])
        inferred = time.perf_counter()
    except Exception as exc:  # DetectorError or anything the runtime raises: this check's finding
        return fail("model", f"{path} does not load: {type(exc).__name__}: {exc}",
                    "check detector.backend and that the model file is the one the release expects")
    return ok("model", f"{path.name} loads on {getattr(detector, 'backend', '?')} in {loaded - started:.1f} s, "
                       f"one frame in {(inferred - loaded) * 1000:.0f} ms")


# -- cameras -----------------------------------------------------------------------------
def _mask(source: str | int) -> str:
    text = str(source)
    if "@" in text and "://" in text:  # never print stream credentials
        scheme, rest = text.split("://", 1)
        text = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


def _with_timeout(func: Callable[[], Any], seconds: float) -> tuple[bool, Any]:
    """Run ``func`` in a daemon thread (OpenCV can block for a long time on a dead stream)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = func()
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False, TimeoutError(f"no answer within {seconds:.0f} s")
    if "error" in box:
        return False, box["error"]
    return True, box.get("value")


def _read_one_frame(source: str | int) -> tuple[int, int]:
    from ..capture import open_capture

    capture = open_capture(source)
    try:
        if not capture.isOpened():
            raise RuntimeError("cannot open the stream")
        got, image = capture.read()
        if not got or image is None:
            raise RuntimeError("opened, but no frame came")
        return image.shape[1], image.shape[0]
    finally:
        capture.release()


def probe_camera(camera: CameraConfig, timeout: float = 15.0) -> Check:
    name = f"camera {camera.id}"
    source = camera.source
    label = _mask(source)
    if isinstance(source, int):
        device = Path(f"/dev/video{source}")
        if not device.exists():
            return fail(name, f"{device} does not exist", "plug the USB camera in (check `ls /dev/video*`) or fix source")
        if not os.access(device, os.R_OK | os.W_OK):
            return fail(name, f"{device} is not accessible to {_user()}", f"add {_user()} to the video group")
    elif "://" in source:
        parts = urlsplit(source)
        port = parts.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(parts.scheme, 554)
        try:
            with socket.create_connection((parts.hostname, port), timeout=3):
                pass
        except OSError as exc:
            return fail(name, f"cannot reach {parts.hostname}:{port} ({exc.strerror or exc})",
                        "check the camera's power and cable, its IP address in the config, and the store network")
    elif not Path(source).exists():
        return fail(name, f"file {source} does not exist", "fix cameras[].source")
    done, value = _with_timeout(lambda: _read_one_frame(source), timeout)
    if not done:
        return fail(name, f"{label}: {value}",
                    "the address answers but gives no video: check the stream path, user and password")
    width, height = value
    return ok(name, f"{label} gives {width}x{height} frames")


def _running_agent_health(config: AgentConfig) -> dict | None:
    """The running agent's own view (/healthz, no login), or None when it does not answer."""
    if not config.dashboard.enabled:
        return None
    host = config.dashboard.host
    host = f"[{host}]" if ":" in host else host
    try:
        with urllib.request.urlopen(f"http://{host}:{config.dashboard.port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def check_cameras(config: AgentConfig, wait: float) -> list[Check]:
    """While the agent runs, a USB camera is busy and an RTSP camera may allow one
    session: ask the agent what it sees; otherwise open each camera here."""
    cameras = [c for c in config.cameras if c.enabled]
    if not cameras:
        return [warn("cameras", "no camera is configured (sensor-only box?)")]
    deadline = time.monotonic() + wait
    while True:
        health = _running_agent_health(config)
        if health is None:
            return [probe_camera(camera) for camera in cameras]
        seen = {c.get("id"): c for c in health.get("cameras") or []}
        checks = []
        for camera in cameras:
            state = seen.get(camera.id)
            name = f"camera {camera.id}"
            if state is None:
                checks.append(fail(name, "the running agent does not know this camera",
                                   "restart the agent so it reads the current configuration"))
            elif state.get("state") == "streaming":
                checks.append(ok(name, f"{_mask(camera.source)} streaming in the running agent, "
                                       f"{state.get('fps', 0)} frames/s processed"))
            else:
                checks.append(fail(name, f"{_mask(camera.source)} is {state.get('state')} in the running agent"
                                         + (f": {state['last_error']}" if state.get("last_error") else ""),
                                   "check the camera's power, cable and address; the agent retries by itself"))
        if not any(c.failed for c in checks) or time.monotonic() >= deadline:
            return checks
        time.sleep(1.0)


# -- broker and version ---------------------------------------------------------------------------
def check_broker(config: AgentConfig, expect_version: str | None, wait: float) -> list[Check]:
    if not config.mqtt.enabled:
        return [Check("broker", "skip", "mqtt.enabled is false")]
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from ..runtime import identity_from

    settings = config.mqtt
    identity = identity_from(config)
    status_topic = identity.topic("status")
    v5 = settings.protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"edge-agent-doctor-{identity.device}-{os.getpid()}",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls.enabled:
        import ssl

        try:
            client.tls_set(ca_certs=str(settings.tls.ca_file) if settings.tls.ca_file else None,
                           certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
                           keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
                           cert_reqs=ssl.CERT_NONE if settings.tls.insecure_skip_verify else ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = [str(f) for f in (settings.tls.ca_file, settings.tls.cert_file, settings.tls.key_file) if f]
            return [fail("broker", f"TLS files cannot be loaded ({', '.join(files)}): {exc}",
                         "copy the CA (and client certificate/key) to the paths in mqtt.tls, readable by the agent")]
        client.tls_insecure_set(settings.tls.insecure_skip_verify)
    connected = threading.Event()
    answer: dict[str, Any] = {}
    status: dict[str, Any] = {}
    got_status = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        answer["reason"] = str(reason_code)
        answer["ok"] = not reason_code.is_failure
        connected.set()
        if answer["ok"] and expect_version:
            client.subscribe(status_topic, qos=1)

    def on_message(client, userdata, message) -> None:
        try:
            status.update(json.loads(message.payload))
        except ValueError:
            status.update({"state": "unreadable", "raw": message.payload[:200].decode(errors="replace")})
        got_status.set()

    client.on_connect = on_connect
    client.on_message = on_message
    where = f"{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=30)
    except OSError as exc:
        return [fail("broker", f"cannot connect to {where}: {exc}",
                     "check mqtt.host/mqtt.port, DNS and the store firewall (outbound TCP to the broker)")]
    client.loop_start()
    try:
        if not connected.wait(10):
            return [fail("broker", f"no answer from {where} within 10 s",
                         "check mqtt.tls (a TLS port needs tls.enabled) and the firewall")]
        if not answer["ok"]:
            return [fail("broker", f"{where} refused the connection: {answer['reason']}",
                         "check mqtt.username and mqtt.password (Ansible Vault) and the broker's ACL for this device")]
        checks = [ok("broker", f"connected to {where} as {settings.username or '(anonymous)'}")]
        if expect_version:
            checks.append(_wait_for_version(status, got_status, expect_version, status_topic, max(wait, 5.0)))
        return checks
    finally:
        client.loop_stop()
        client.disconnect()


def _wait_for_version(status: dict, got_status: threading.Event, expected: str, topic: str, wait: float) -> Check:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if status.get("state") == "online" and status.get("version") == expected:
            return ok("version", f"the running agent reports {expected} online on {topic}")
        got_status.wait(0.5)
        got_status.clear()
    if not status:
        return fail("version", f"no status message on {topic} within {wait:.0f} s",
                    "the agent is not running or cannot reach the broker: journalctl -u edge-agent -e")
    return fail("version", f"{topic} says version {status.get('version')} is {status.get('state')}, expected {expected}",
                "the new release did not start: journalctl -u edge-agent -e")


# -- clock -----------------------------------------------------------------------------------------
def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def check_clock(now: float | None = None) -> Check:
    now = time.time() if now is None else now
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
    if now < CLOCK_FLOOR:
        return fail("clock", f"the clock says {stamp}, before this release was made",
                    "the box has no real time yet: check network access to the NTP servers (chronyc sources)")
    tracking = _run(["chronyc", "-n", "tracking"])
    if tracking is not None:
        fields = {key.strip(): value.strip() for key, value in
                  (line.split(":", 1) for line in tracking.splitlines() if ":" in line)}
        leap = fields.get("Leap status", "")
        source = fields.get("Reference ID", "")
        if leap == "Normal":
            offset = fields.get("System time", "")
            return ok("clock", f"{stamp}, synchronised by chrony ({source}; {offset})")
        return fail("clock", f"{stamp}, chrony is not synchronised (leap status: {leap or 'unknown'})",
                    "check that the NTP servers in the inventory are reachable: chronyc sources -v")
    synced = _run(["timedatectl", "show", "--property=NTPSynchronized", "--value"])
    if synced is not None:
        if synced.strip() == "yes":
            return ok("clock", f"{stamp}, synchronised (timedatectl)")
        return fail("clock", f"{stamp}, not synchronised (timedatectl)",
                    "enable time sync (the base role installs chrony): timedatectl timesync-status")
    return warn("clock", f"{stamp}; cannot tell whether it is synchronised (no chronyc or timedatectl answers)",
                "install chrony (the base role does)")


# -- all together ------------------------------------------------------------------------------------
def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


CHECK_NAMES = ("config", "storage", "disk", "model", "cameras", "broker", "clock")


def run_checks(config_path: Path | None, options: Options) -> Iterable[Check]:
    config, check = check_config(config_path)
    yield check
    if config is None:
        for name in CHECK_NAMES[1:]:
            yield Check(name, "skip", "needs a valid config")
        return
    skip = options.skip
    if "storage" not in skip:
        yield check_storage(config)
    if "disk" not in skip:
        yield check_disk(config, options.min_free_mb)
    if "model" not in skip:
        yield check_model(config)
    if "cameras" not in skip:
        yield from check_cameras(config, options.wait)
    if "broker" not in skip:
        yield from check_broker(config, options.expect_version, options.wait)
    if "clock" not in skip:
        yield check_clock()


MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


@click.command("doctor")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/etc/edge-agent/agent.yaml"), show_default=True, help="The agent's configuration.")
@click.option("--expect-version", default=None,
              help="Also require the running agent to report this version, online, on its MQTT status topic.")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="Seconds to keep retrying camera and version checks (after a restart).")
@click.option("--min-free-mb", type=float, default=DEFAULT_MIN_FREE_MB, show_default=True,
              help="Fail when the data disk has less free space.")
@click.option("--skip", "skip", multiple=True, type=click.Choice(CHECK_NAMES[1:]), help="Leave a check out.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
def doctor(config_path: Path, expect_version: str | None, wait: float, min_free_mb: float,
           skip: tuple[str, ...], as_json: bool) -> None:
    """Check config, cameras, model, disk, broker and clock; print each problem with its fix.

    Exits 1 when a check fails (warnings do not fail).
    """
    options = Options(expect_version=expect_version, wait=wait, min_free_mb=min_free_mb, skip=frozenset(skip))
    checks: list[Check] = []
    if not as_json:
        click.echo(f"edge-agent {__version__} doctor: {config_path}")
    for check in run_checks(config_path, options):
        checks.append(check)
        if not as_json:
            click.echo(f"  {MARKS[check.status]}  {check.name:14} {check.detail}")
            if check.fix and check.status in ("fail", "warn"):
                click.echo(f"  {'':4}  {'':14} fix: {check.fix}")
    failed = [c for c in checks if c.failed]
    if as_json:
        click.echo(json.dumps({"version": __version__, "ok": not failed, "checks": [asdict(c) for c in checks]}))
    else:
        click.echo(f"{len(failed)} problem{'s' if len(failed) != 1 else ''} found." if failed else "all checks passed.")
    click.get_current_context().exit(1 if failed else 0)
