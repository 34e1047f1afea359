"""deploy/ansible, tested by running it.

Lint and syntax checks, the example inventory rendered into valid configs, then
the site playbook run for real against a disposable Debian 12 box booted with its
own systemd on this machine (tests/ansible_target.py): the box ends up running
the agent under the hardened unit, a second run changes nothing, the installed
agent answers ``edge-agent doctor``, the store broker enforces its ACL, a killed
agent is restarted, and a deliberately broken release fails its health check and
is rolled back. The tests in this module run in order on one box.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.parser import text_string_to_metric_families

from edge_agent import __version__
from edge_agent.mosquitto import Mosquitto

from ansible_target import BootedTarget, build_rootfs, quiet_port

REPO = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO / "deploy" / "ansible"
BIN = Path(sys.executable).parent
VAULT_PASSWORD = ANSIBLE_DIR / "vault-password.example"
BROKEN_VERSION = __version__ + ".post1"  # a later release that cannot load its model
HOST = "store-test-box1"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                   r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)

pytestmark = pytest.mark.deploy


def ansible_env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-local"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASSWORD),
    }


def run_tool(argv: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ANSIBLE_DIR, env=ansible_env(tmp), capture_output=True, text=True,
                          timeout=timeout)


class PlaybookRun:
    def __init__(self, result: subprocess.CompletedProcess, log: Path) -> None:
        self.rc = result.returncode
        self.output = result.stdout + result.stderr
        log.write_text(self.output)
        self.recap = {m.group(1): dict(zip(("ok", "changed", "unreachable", "failed", "skipped", "rescued",
                                            "ignored"), map(int, m.groups()[1:])))
                      for m in RECAP.finditer(self.output)}

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]


# -- no target needed ------------------------------------------------------------------------
def test_ansible_lint_and_syntax_check(tmp_path):
    lint = run_tool([str(BIN / "ansible-lint"), "--nocolor", "--offline"], tmp_path)  # no update check, no galaxy
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in lint.stdout + lint.stderr
    for playbook in ("site.yml", "update.yml", "rollback.yml", "render-configs.yml"):
        check = run_tool([str(BIN / "ansible-playbook"), "--syntax-check", playbook], tmp_path)
        assert check.returncode == 0, f"{playbook}: {check.stdout[-3000:]}{check.stderr[-3000:]}"


def test_example_inventory_renders_valid_configs(tmp_path):
    """Two stores from the committed example inventory (secrets from its vault) become
    one valid agent config per box, with each camera on its own box."""
    inventory = run_tool([str(BIN / "ansible-inventory"), "--list"], tmp_path)
    assert inventory.returncode == 0, inventory.stderr[-3000:]
    groups = json.loads(inventory.stdout)
    assert groups["stores"]["children"] == ["store_0042", "store_0117"]
    assert groups["store_0042"]["hosts"] == ["store-0042-box1", "store-0042-box2"]
    assert groups["store_brokers"]["hosts"] == ["store-0042-box1", "store-0117-box1"]

    out = tmp_path / "configs"
    out.mkdir()
    run = run_tool([str(BIN / "ansible-playbook"), "render-configs.yml", "-e", f"edge_agent_render_dir={out}"],
                   tmp_path)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    configs = {}
    for path in sorted(out.glob("*.yaml")):
        check = subprocess.run([sys.executable, "-m", "edge_agent", "config", "validate", str(path)],
                               cwd=REPO, capture_output=True, text=True)
        assert check.returncode == 0, f"{path.name}: {check.stdout}{check.stderr}"
        configs[path.stem] = yaml.safe_load(path.read_text())
    assert sorted(configs) == ["store-0042-box1", "store-0042-box2", "store-0117-box1"]
    assert [c["id"] for c in configs["store-0042-box1"]["cameras"]] == ["entrance"]
    assert [c["id"] for c in configs["store-0042-box2"]["cameras"]] == ["aisle-3"]
    assert [c["id"] for c in configs["store-0117-box1"]["cameras"]] == ["door"]
    box2 = configs["store-0042-box2"]
    assert box2["mqtt"]["username"] == "store-0042-box2" and box2["mqtt"]["store_id"] == "store-0042"
    assert box2["mqtt"]["password"] == "example-hq-password-42-2"  # decrypted from the vault
    assert box2["detector"]["backend"] == "onnxruntime"  # host_vars override
    assert "example-camera-42@" in box2["cameras"][0]["source"]
    assert all("box" not in camera for c in configs.values() for camera in c["cameras"])


# -- a real box --------------------------------------------------------------------------------
def _require_root_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("booting a test box needs root (debootstrap, unshare, mounts)")
    missing = [tool for tool in ("debootstrap", "unshare", "ssh", "chronyd") if shutil.which(tool) is None
               and not Path("/usr/sbin", tool).exists()]
    if missing:
        pytest.fail(f"missing tools for the Ansible target: {missing} (scripts/test-apt-packages.txt installs them)")


def _build_release(source: Path, out: Path, model: Path | None = None) -> None:
    argv = ["bash", str(source / "deploy/ansible/build-release.sh"), "--out", str(out)]
    if model is not None:
        argv += ["--model", str(model)]
    result = subprocess.run(argv, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def releases(tmp_path_factory, model_path):
    """Release archives built with build-release.sh: this checkout, and a broken later release."""
    _require_root_tools()
    out = tmp_path_factory.mktemp("build")
    _build_release(REPO, out, model=model_path)
    broken = tmp_path_factory.mktemp("broken-source")
    for name in ("edge_agent", "models", "deploy"):
        shutil.copytree(REPO / name, broken / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "build"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, broken / name)
    for name in ("pyproject.toml", "edge_agent/__init__.py"):
        path = broken / name
        path.write_text(path.read_text().replace(f'"{__version__}"', f'"{BROKEN_VERSION}"', 1))
    # Installs, passes `config validate`, starts... and cannot load any model.
    with (broken / "edge_agent/detect.py").open("a") as handle:
        handle.write("\n\ndef load_detector(model_path, config):\n"
                     "    raise DetectorError('deliberately broken release for the rollback test')\n")
    _build_release(broken, out)
    return out


@pytest.fixture(scope="module")
def hq_broker(tmp_path_factory):
    with Mosquitto(workdir=tmp_path_factory.mktemp("hq-broker"), extra="user root") as broker:
        yield broker


@pytest.fixture(scope="module")
def ntp_server(tmp_path_factory):
    """The store's NTP server: chronyd serving its clock on a loopback port; it never sets this machine's clock."""
    _require_root_tools()
    workdir = tmp_path_factory.mktemp("ntp")
    port = quiet_port()
    (workdir / "chrony.conf").write_text(
        f"port {port}\nbindaddress 127.0.0.1\ncmdport 0\nlocal stratum 8\nallow 127.0.0.1\n"
        f"pidfile {workdir}/chronyd.pid\n")
    chronyd = shutil.which("chronyd") or "/usr/sbin/chronyd"
    process = subprocess.Popen([chronyd, "-f", str(workdir / "chrony.conf"), "-x", "-d", "-u", "root"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    assert process.poll() is None, "chronyd did not start"
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def target(tmp_path_factory, shared_dir):
    _require_root_tools()
    workdir = tmp_path_factory.mktemp("target")
    root = workdir / "root"
    root.mkdir()
    # the packages the roles install, downloaded once into the cached image's apt cache
    packages = yaml.safe_load((ANSIBLE_DIR / "roles/base/vars/Debian.yml").read_text())["base_platform_packages"]
    build_rootfs(root, workdir / "debootstrap.log", prefetch=packages + ["mosquitto", "mosquitto-clients"])
    # The store's camera: the sample clip as a file source on the box.
    shutil.copy(shared_dir / "data" / "crosswalk_640x360.mp4", root / "srv" / "door-camera.mp4")
    box = BootedTarget(root, workdir)
    box.prepare()
    try:
        box.boot()
        yield box
    finally:
        box.shutdown()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory, target, releases, hq_broker, ntp_server):
    """One store with one box (the target), written the way the example inventory is."""
    inv = tmp_path_factory.mktemp("inventory")
    ports = {"store_broker": quiet_port(), "dashboard": quiet_port()}
    (inv / "group_vars").mkdir()
    (inv / "host_vars").mkdir()
    hosts = {"all": {"children": {
        "stores": {"children": {"store_test": {"hosts": {HOST: None}}}},
        "store_brokers": {"hosts": {HOST: None}},
    }}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "org": "testorg",
        "edge_agent_version": __version__,
        "hq_broker": {"host": "127.0.0.1", "port": hq_broker.port, "tls": False},
        "hq_broker_passwords": {HOST: "not-checked-by-the-test-broker"},
        "ntp_servers": [f"127.0.0.1:{ntp_server}"],
        "base_chrony_daemon_options": "-x",  # the box shares this machine's clock: never set it
        "edge_agent_release_archive": str(releases) + "/edge-agent-{{ edge_agent_release }}-"
                                                      "{{ ansible_facts['architecture'] }}.tar",
        "edge_agent_model_src": str(releases / "models" / "yolov8n_fp32.onnx"),
        "edge_agent_manifest": str(REPO / "models" / "manifest.yaml"),
        "edge_agent_health_wait": 60,
    }))
    (inv / "group_vars" / "store_test.yml").write_text(yaml.safe_dump({
        "store_id": "store-test",
        "store_timezone": "Asia/Shanghai",
        "vault_store_broker_agent_password": {"store-test": "local-agent-password"},
        "mosquitto_listeners": [{"address": "127.0.0.1", "port": ports["store_broker"]}],
        "store_cameras": [{
            "id": "door", "source": "/srv/door-camera.mp4", "loop": True, "fps_cap": 2,
            "lines": [{"id": "main", "points": [[0.5, 0.0], [0.5, 1.0]]}],
        }],
        "store_sensors": [
            {"id": "door-beam-1", "kind": "door_beam", "password": "beam-password-1"},
            {"id": "aisle-pir-1", "kind": "pir", "password": "pir-password-22"},
        ],
    }))
    (inv / "host_vars" / f"{HOST}.yml").write_text(yaml.safe_dump({
        "device_id": "box1",
        "ansible_host": "127.0.0.1",
        "ansible_port": target.ssh_port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(target.key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        "edge_agent_dashboard_host": "127.0.0.1",
        "edge_agent_dashboard_port": ports["dashboard"],
    }))
    return {"path": inv, "ports": ports, "workdir": tmp_path_factory.mktemp("runs")}


def playbook(inventory, name: str, *extra: str) -> PlaybookRun:
    log = inventory["workdir"] / f"{name}-{time.time():.0f}.log"
    result = run_tool([str(BIN / "ansible-playbook"), "-i", str(inventory["path"]), name, *extra],
                      inventory["workdir"], timeout=900)
    return PlaybookRun(result, log)


def status_seen(hq_broker, timeout: float = 20.0) -> dict:
    """The retained status message on the headquarters broker, as HQ sees it."""
    received: dict = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, *a: c.subscribe("smartstore/v1/testorg/store-test/box1/status", qos=1)

    def on_message(c, userdata, message):
        received.update(json.loads(message.payload))
        done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", hq_broker.port)
    client.loop_start()
    done.wait(timeout)
    client.loop_stop()
    client.disconnect()
    return received


def service(target: BootedTarget, unit: str, *properties: str) -> dict[str, str]:
    out = target.ssh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.mark.timeout(1200)
def test_site_playbook_sets_up_a_working_box(target, inventory, hq_broker):
    run = playbook(inventory, "site.yml")
    assert run.rc == 0 and run.recap[HOST]["failed"] == 0, run.tail()
    # the health check ran inside the playbook: doctor passed and the version was seen
    assert "the running agent reports " + __version__ in run.output

    for unit in ("edge-agent", "mosquitto", "chrony"):
        assert target.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() == "active", unit
    assert target.ssh("readlink /opt/edge-agent/current").stdout.strip() == f"/opt/edge-agent/releases/{__version__}"
    assert "ultralytics" not in target.ssh("/opt/edge-agent/current/bin/pip list").stdout.lower()  # lean box

    doctor = target.ssh("runuser -u edge-agent -- /opt/edge-agent/current/bin/edge-agent doctor "
                        "--config /etc/edge-agent/agent.yaml", check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    for check in ("config", "storage", "model", "camera door", "broker", "clock"):
        assert re.search(rf"^  ok    {check} ", doctor.stdout, re.M), doctor.stdout
    # free space is the host's, not the playbook's: a nearly full CI disk is a warning, never a failure
    assert re.search(r"^  (ok  |warn)  disk .* budget 1,024 MB", doctor.stdout, re.M), doctor.stdout
    assert "synchronised by chrony (7F000001" in doctor.stdout  # via the store's NTP server

    status = status_seen(hq_broker)
    assert status.get("state") == "online" and status.get("version") == __version__, status

    # hardened, watched service running as the unprivileged user
    state = service(target, "edge-agent", "User", "WatchdogUSec", "WatchdogTimestampMonotonic", "Type",
                    "ProtectSystem", "NoNewPrivileges", "PrivateTmp", "ReadWritePaths", "DevicePolicy",
                    "StatusText")
    assert state["User"] == "edge-agent" and state["Type"] == "notify"
    assert state["WatchdogUSec"] == "1min" and state["WatchdogTimestampMonotonic"] != "0", state
    assert state["ProtectSystem"] == "strict" and state["NoNewPrivileges"] == "yes" and state["PrivateTmp"] == "yes"
    assert state["ReadWritePaths"] == "/var/lib/edge-agent" and state["DevicePolicy"] == "closed"
    assert "cameras streaming" in state["StatusText"] or state["StatusText"] == "running"
    verify = target.ssh("systemd-analyze verify /etc/systemd/system/edge-agent.service", check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = target.ssh("systemd-analyze security --no-pager edge-agent.service").stdout
    exposure = float(re.search(r"Overall exposure level for edge-agent.service: ([\d.]+)", security).group(1))
    assert exposure <= 2.5, security[-3000:]
    pid = service(target, "edge-agent", "MainPID")["MainPID"]
    owner = target.ssh(f"stat -c %U /proc/{pid}").stdout.strip()
    assert owner == "edge-agent"
    # the service can write its data directory only
    uid = target.ssh("id -u edge-agent").stdout.strip()
    in_service = f"nsenter --target {pid} --mount --root -S {uid} -G {uid} --"
    denied = target.ssh(f"{in_service} touch /opt/edge-agent/x", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr
    target.ssh(f"{in_service} touch /var/lib/edge-agent/.write-test")
    target.ssh("rm /var/lib/edge-agent/.write-test")
    files = target.ssh("stat -c '%U:%G %a %n' /etc/edge-agent/agent.yaml /var/lib/edge-agent/models/yolov8n_fp32.onnx "
                       "/var/lib/edge-agent/agent.db /etc/mosquitto/edge-store.passwd").stdout.splitlines()
    assert files == ["root:edge-agent 640 /etc/edge-agent/agent.yaml",
                         "root:edge-agent 640 /var/lib/edge-agent/models/yolov8n_fp32.onnx",
                         "edge-agent:edge-agent 640 /var/lib/edge-agent/agent.db",
                         "mosquitto:mosquitto 600 /etc/mosquitto/edge-store.passwd"], files

    # Prometheus metrics from the box's dashboard port
    url = f"http://127.0.0.1:{inventory['ports']['dashboard']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    assert families["edge_agent_camera_up"].samples[0].value == 1.0
    assert families["edge_agent_uplink_connected"].samples[0].value == 1.0


@pytest.mark.timeout(600)
def test_second_run_changes_nothing(target, inventory):
    run = playbook(inventory, "site.yml")
    assert run.rc == 0, run.tail()
    assert run.recap[HOST]["changed"] == 0 and run.recap[HOST]["failed"] == 0, (
        run.recap, [line for line in run.output.splitlines() if line.startswith("changed:")])
    assert "RUNNING HANDLER" not in run.output


def test_store_broker_allows_each_node_only_its_own_topics(target, inventory):
    port = inventory["ports"]["store_broker"]

    def connect(user: str | None, password: str | None):
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        if user:
            client.username_pw_set(user, password)
        answer = {}
        connected = threading.Event()
        acks: dict[int, bool] = {}

        def on_connect(c, userdata, flags, reason_code, properties):
            answer["ok"] = not reason_code.is_failure
            answer["reason"] = str(reason_code)
            connected.set()

        client.on_connect = on_connect
        client.on_publish = lambda c, u, mid, reason_code, p: acks.__setitem__(mid, not reason_code.is_failure)
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert connected.wait(10)
        return client, answer, acks

    def publish(client, acks, topic):
        info = client.publish(topic, '{"state": "on"}', qos=1)
        deadline = time.time() + 10
        while info.mid not in acks and time.time() < deadline:
            time.sleep(0.02)
        return acks.get(info.mid)

    anonymous, answer, _ = connect(None, None)
    assert not answer["ok"], "anonymous access must be refused"
    anonymous.loop_stop()
    wrong, answer, _ = connect("door-beam-1", "not-the-password")
    assert not answer["ok"] and answer["reason"] in ("Bad user name or password", "Not authorized"), answer
    wrong.loop_stop()

    received = []
    agent, answer, _ = connect("edge-agent", "local-agent-password")
    assert answer["ok"], answer
    agent.on_message = lambda c, u, message: received.append(message.topic)
    agent.subscribe("sensors/#", qos=1)
    time.sleep(0.5)
    node, answer, acks = connect("door-beam-1", "beam-password-1")
    assert answer["ok"], answer
    assert publish(node, acks, "sensors/door-beam-1/state") is True
    assert publish(node, acks, "sensors/aisle-pir-1/state") is False  # another node's topic: not authorised
    deadline = time.time() + 5
    while not received and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for client in (node, agent):
        client.loop_stop()
        client.disconnect()
    assert received == ["sensors/door-beam-1/state"]


@pytest.mark.timeout(300)
def test_systemd_restarts_a_killed_agent(target):
    before = service(target, "edge-agent", "MainPID", "NRestarts")
    target.ssh(f"kill -9 {before['MainPID']}")
    deadline = time.time() + 120
    while time.time() < deadline:
        after = service(target, "edge-agent", "MainPID", "NRestarts", "ActiveState")
        if after["ActiveState"] == "active" and after["MainPID"] not in ("0", before["MainPID"]):
            break
        time.sleep(1)
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"], after
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1


@pytest.mark.timeout(1200)
def test_broken_release_fails_its_health_check_and_is_rolled_back(target, inventory, hq_broker):
    # A second store later in the rollout: never contacted once the canary fails (it
    # would show up unreachable if it were).
    later = inventory["workdir"] / "later-store.yml"
    later.write_text(yaml.safe_dump({"all": {"children": {"stores": {"children": {"store_later": {"hosts": {
        "store-later-box1": {"ansible_host": "127.0.0.1", "ansible_port": 1, "store_id": "store-later"}}}}}}}}))
    run = playbook(inventory, "update.yml", "-i", str(later), "-e", f"edge_agent_version={BROKEN_VERSION}")
    assert run.rc != 0 and run.recap[HOST]["failed"] == 1 and run.recap[HOST]["rescued"] == 1, run.tail()
    assert "store-later-box1" not in run.recap and "store-later-box1" not in run.output, run.tail()
    assert f"release {BROKEN_VERSION} failed its health check" in run.output, run.tail()
    assert f"rolled back to {__version__}, which is healthy again" in run.output, run.tail()

    assert target.ssh("readlink /opt/edge-agent/current").stdout.strip() == f"/opt/edge-agent/releases/{__version__}"
    assert target.ssh(f"test -f /opt/edge-agent/releases/{BROKEN_VERSION}/.edge-agent-release", check=False).returncode == 0
    assert target.ssh("systemctl is-active edge-agent", check=False).stdout.strip() == "active"
    status = status_seen(hq_broker)
    assert status.get("state") == "online" and status.get("version") == __version__, status
    doctor = target.ssh("runuser -u edge-agent -- /opt/edge-agent/current/bin/edge-agent doctor "
                        f"--expect-version {__version__} --wait 30", check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert not target.ssh("ls /etc/edge-agent").stdout.strip().count("~"), "configuration backups left behind"
