"""The uplink against a real mosquitto: ordered drain, contract payloads, bounded
in-flight, jittered reconnects, HQ commands, TLS, passwords and ACLs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.config import MqttConfig
from edge_agent.counting import Crossing
from edge_agent.feed import live_event_listener
from edge_agent.hq.tail import MemorySink, Tail
from edge_agent.mosquitto import Mosquitto, free_port
from edge_agent.contract import validator_for
from edge_agent.rollup import Identity, close_minutes, close_periods
from edge_agent.storage import Store
from edge_agent.uplink import Backoff, Uplink

REPO = Path(__file__).resolve().parent.parent
IDENTITY = Identity("o1", "s1", "d1")
BASE = "smartstore/v1/o1/s1/d1"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()


def wait_until(predicate, timeout=20.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def mqtt_config(port, **overrides) -> MqttConfig:
    settings = {"org": "o1", "store_id": "s1", "device_id": "d1", "reconnect_min_seconds": 0.2,
                "reconnect_max_seconds": 1.0, **overrides}
    return MqttConfig(port=port, **settings)


def fill(store: Store, minutes=30, cameras=("door", "aisle")) -> int:
    """Crossings over ``minutes`` minutes, all closed into rollups (minutes + hours)."""
    entries = []
    for m in range(minutes):
        for camera in cameras:
            ts = T0 + m * 60 + 5
            entries.append((camera, ts, [Crossing("main", m, "in", ts), Crossing("main", m + 1000, "out", ts + 1)]))
    store.record_many(entries)
    close_minutes(store, IDENTITY, {c: ["main"] for c in cameras}, now=T0 + 86400)
    close_periods(store, IDENTITY, {c: ["main"] for c in cameras}, "UTC", now=T0 + 86400)
    return store.pending_count()


def tail(port, **kwargs) -> Tail:
    hq = Tail("127.0.0.1", port, ["smartstore/v1/+/+/+/#"], MemorySink(), validate=True, **kwargs).start()
    assert hq.connected.wait(10)
    time.sleep(0.2)  # subscription acknowledged
    return hq


def test_backoff_grows_with_jitter_and_resets():
    backoff = Backoff(1.0, 60.0, random.Random(7))
    waits = [backoff.next() for _ in range(10)]
    steps = [min(60.0, 2 ** i) for i in range(10)]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps))
    assert waits[-1] >= 30.0
    many = [Backoff(1.0, 60.0).next() for _ in range(200)]  # a fleet's first retries: spread, not lockstep
    assert max(many) - min(many) > 0.3 and len({round(w, 3) for w in many}) > 150
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0


def test_reconnect_attempts_are_spaced_by_the_jittered_backoff(tmp_path):
    """paho's own wait is fixed doubling; ours must show up in real attempts."""
    store = Store(tmp_path / "a.db")
    uplink = Uplink(mqtt_config(free_port(), reconnect_min_seconds=0.1, reconnect_max_seconds=0.4), store, IDENTITY)
    attempts = []
    original = uplink.client.reconnect

    def counted():
        attempts.append(time.monotonic())
        return original()

    uplink.client.reconnect = counted
    uplink.start()
    assert wait_until(lambda: len(attempts) >= 9, timeout=15)
    uplink.stop()
    gaps = [b - a for a, b in zip(attempts, attempts[1:])][:8]
    # Steps 0.1, 0.2, 0.4, 0.4, …: each wait within [step/2, step] (+ scheduling slack).
    steps = [min(0.4, 0.1 * 2 ** i) for i in range(len(gaps))]
    assert all(step / 2 - 0.02 <= gap <= step + 0.5 for gap, step in zip(gaps, steps)), gaps
    assert len({round(g, 2) for g in gaps[3:]}) > 1, "waits at the cap must differ (jitter)"
    assert uplink.health()["connect_failures"] >= 9 and "Connection refused" in uplink.health()["last_error"]
    store.close()


def test_ordered_drain_and_every_payload_matches_the_contract(tmp_path, broker):
    store = Store(tmp_path / "a.db")
    store.event_listeners.append(live_event_listener(store, IDENTITY))
    pending = fill(store)
    hq = tail(broker.port)
    uplink = Uplink(mqtt_config(broker.port), store, IDENTITY)
    uplink.start()
    try:
        assert wait_until(lambda: store.pending_count() == 0)
        assert uplink.handle_command("ping", b'{"request_id": "p1"}')["ok"] is True
        assert wait_until(lambda: len(hq.sink.messages) >= pending + 2)  # + status + ping result
    finally:
        uplink.stop()
    assert wait_until(lambda: sum(b["state"] == "offline" for t, b in hq.sink.messages.values()
                                  if t.endswith("/status")) == 1)
    hq.stop()
    assert hq.stats["schema_errors"] == 0 and hq.stats["invalid"] == 0
    messages = list(hq.sink.messages.values())
    kinds = {topic.removeprefix(BASE + "/") for topic, _ in messages}
    assert kinds == {"status", "rollup/minute", "rollup/hour", "rollup/day", "event", "cmd/ping/result"}
    for _, body in messages:  # validated by tail already; once more explicitly
        validator_for(body).validate(body)
        assert body["device"] == "d1" and body["id"]
    # Ordered drain: outbox messages arrive in seq order on a healthy connection.
    seqs = [body["seq"] for topic, body in messages if not topic.endswith("/status")]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == pending + 1
    status = [body for topic, body in messages if topic.endswith("/status")]
    assert [s["state"] for s in status] == ["online", "offline"] and status[1]["reason"] == "stopped"
    assert status[1]["seq"] == store.last_seq()  # high-water mark: every outbox message made so far
    store.close()


def test_inflight_is_bounded_and_unacked_messages_are_resent(tmp_path):
    """Broker frozen (SIGSTOP): no PUBACKs. The uplink stops at max_inflight, marks
    nothing sent, and after the broker resumes everything arrives."""
    broker = Mosquitto(workdir=tmp_path / "broker").start()
    store = Store(tmp_path / "a.db")
    uplink = Uplink(mqtt_config(broker.port, max_inflight=10, keepalive=60), store, IDENTITY)
    hq = tail(broker.port)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.stats.connected)
        time.sleep(0.3)
        os.kill(broker.process.pid, signal.SIGSTOP)
        pending = fill(store)
        uplink._wake.set()
        time.sleep(1.5)
        assert uplink.health()["inflight"] == 10 and uplink.stats.published == 10
        assert store.pending_count() == pending  # nothing marked sent without its PUBACK
        os.kill(broker.process.pid, signal.SIGCONT)
        assert wait_until(lambda: store.pending_count() == 0, timeout=30)
        assert wait_until(lambda: sum(not t.endswith("/status") for t, _ in hq.sink.messages.values()) == pending)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
        uplink.stop()
        hq.stop()
        broker.stop()
        store.close()


def test_commands_answer_and_malformed_ones_get_errors(tmp_path, broker):
    store = Store(tmp_path / "a.db")
    fill(store, minutes=10, cameras=("door",))
    store.mark_sent(range(1, store.last_seq() + 1))
    hq = tail(broker.port)
    uplink = Uplink(mqtt_config(broker.port), store, IDENTITY)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.stats.connected)
        time.sleep(0.3)

        def send(name, raw):
            info = hq.client.publish(f"{BASE}/cmd/{name}", raw, qos=1)
            info.wait_for_publish(5)

        def result(name, request_id):
            key = f"o1/s1/d1/cmd/{name}/{request_id}"
            assert wait_until(lambda: key in hq.sink.messages), f"no result for {key}"
            return hq.sink.messages[key][1]

        send("ping", json.dumps({"request_id": "p1"}))
        assert result("ping", "p1")["result"]["pong"] is True
        send("resend", json.dumps({"request_id": "r1", "from": "2026-11-25T10:02:00Z", "to": "2026-11-25T10:05:00Z",
                                   "kinds": ["minute"]}))
        assert result("resend", "r1")["result"]["requeued"] == 3
        # The re-sent rollups go out again with their original ids and payloads.
        minutes = lambda: {b["id"].rsplit("/", 1)[1] for t, b in hq.sink.messages.values() if t.endswith("/minute")}
        assert wait_until(lambda: minutes() == {f"2026-11-25T10:0{i}:00.000Z" for i in (2, 3, 4)})
        assert wait_until(lambda: store.pending_count() == 0)
        malformed = {
            "bad-json": ("resend", b"{not json"),
            "not-object": ("ping", b"[1, 2]"),
            "binary": ("ping", bytes(range(256))),
            "missing-range": ("resend", json.dumps({"request_id": "r2"}).encode()),
            "bad-time": ("resend", json.dumps({"request_id": "r3", "from": "yesterday"}).encode()),
            "naive-time": ("resend", json.dumps({"request_id": "r4", "from": "2026-11-25T10:00:00"}).encode()),
            "unknown-key": ("ping", json.dumps({"request_id": "r5", "reboot": True}).encode()),
            "unknown-command": ("format-disk", json.dumps({"request_id": "r6"}).encode()),
            "huge": ("ping", json.dumps({"request_id": "r7", "x": "a" * 100_000}).encode()),
            "deep": ("ping", b"[" * 100_000 + b"]" * 100_000),
            "empty": ("ping", b""),
            "bad-request-id": ("ping", json.dumps({"request_id": "../../etc"}).encode()),
            "no-handler": ("reload-config", json.dumps({"request_id": "r8"}).encode()),
        }
        for name, raw in malformed.values():
            send(name, raw)
        from edge_agent.commands import request_id_of

        for label, (name, raw) in malformed.items():
            body = result(name, request_id_of(raw))
            assert body["ok"] is False and body["error"], label
        errors = {label: result(name, request_id_of(raw))["error"] for label, (name, raw) in malformed.items()}
        assert "not JSON" in errors["bad-json"] and "JSON object" in errors["not-object"]
        assert "give a time range" in errors["missing-range"] and "need a zone" in errors["naive-time"]
        assert "unknown command 'format-disk'" in errors["unknown-command"]
        assert "bytes; at most" in errors["huge"] and "reboot" in errors["unknown-key"]
        assert "not available" in errors["no-handler"]
        # Still alive and answering; the same request id is answered once.
        send("ping", json.dumps({"request_id": "p2"}))
        assert result("ping", "p2")["ok"] is True
        send("ping", json.dumps({"request_id": "p2"}))
        time.sleep(0.5)
        assert uplink.stats.commands == len(malformed) + 4
        assert uplink.health()["commands_rejected"] == len(malformed)
        # A flood of garbage is answered up to a rate, the rest counted, never a crash.
        for i in range(60):
            send("ping", b"garbage %d" % i)
        assert wait_until(lambda: uplink.stats.commands >= len(malformed) + 64)
        assert uplink.health()["commands_dropped"] > 0 and uplink._thread.is_alive()
    finally:
        uplink.stop()
        hq.stop()
        store.close()
    assert hq.stats["schema_errors"] == 0


# -- TLS, passwords, ACLs -------------------------------------------------------------------
def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost, a device client certificate,
    and a second CA that signed nothing of ours."""
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj",
                 f"/CN={ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("device-d1", [])):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", *ext, cwd=d)
    return d


ACL = """user device-d1
topic readwrite smartstore/v1/o1/s1/d1/#
user hq
topic read smartstore/#
topic write smartstore/v1/+/+/+/cmd/+
"""


def tls_broker(tmp_path, pki, client_certs: bool) -> Mosquitto:
    work = tmp_path / "broker"
    work.mkdir()
    (work / "acl").write_text(ACL)
    (work / "passwd").touch()
    for user, password in (("device-d1", "s3cret-d1"), ("hq", "hq-pass")):
        subprocess.run(["mosquitto_passwd", "-b", str(work / "passwd"), user, password], check=True)
    os.chmod(work / "passwd", 0o600)
    extra = (f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
             f"password_file {work / 'passwd'}\nacl_file {work / 'acl'}\n")
    if client_certs:
        extra += "require_certificate true\nuse_identity_as_username true\n"
    return Mosquitto(workdir=work, allow_anonymous=False, extra=extra).start()


def tls_tail(port, pki, **kw):
    return tail(port, username="hq", password="hq-pass", ca_file=str(pki / "ca.crt"), **kw)


def test_tls_with_password_and_acl_refusals_stay_unsent(tmp_path, pki):
    broker = tls_broker(tmp_path, pki, client_certs=False)
    hq = tls_tail(broker.port, pki)
    store = Store(tmp_path / "a.db")
    pending = fill(store, minutes=5, cameras=("door",))
    tls = {"enabled": True, "ca_file": pki / "ca.crt"}
    uplink = Uplink(mqtt_config(broker.port, username="device-d1", password="s3cret-d1", tls=tls), store, IDENTITY)
    uplink.start()
    try:
        assert wait_until(lambda: store.pending_count() == 0)
        assert wait_until(lambda: sum(t.endswith("rollup/minute") for t, _ in hq.sink.messages.values()) == 5)
    finally:
        uplink.stop()
    assert pending == 7  # 5 minutes, the hour, the day
    # A device configured for another store: the ACL refuses; v5 tells us, nothing is marked sent.
    intruder_store = Store(tmp_path / "b.db")
    fill(intruder_store, minutes=3, cameras=("door",))
    wrong = Identity("o1", "s2", "d1")
    uplink = Uplink(mqtt_config(broker.port, username="device-d1", password="s3cret-d1", tls=tls, store_id="s2"),
                    intruder_store, wrong)
    with intruder_store.transaction() as db:
        db.execute("UPDATE outbox SET topic = replace(topic, '/s1/', '/s2/')")
    uplink.start()
    try:
        assert wait_until(lambda: uplink.stats.refused >= 5)
        assert intruder_store.pending_count() == 5
        assert "Not authorized" in uplink.health()["last_error"]
    finally:
        uplink.stop()
    # MQTT 3.1.1 has no reason codes: mosquitto acks the refused publish and drops it, so the
    # device cannot tell (documented in docs/mqtt-contract.md): such rows are marked sent.
    uplink = Uplink(mqtt_config(broker.port, username="device-d1", password="s3cret-d1", tls=tls, store_id="s2",
                                protocol="3.1.1"), intruder_store, wrong)
    uplink.start()
    try:
        assert wait_until(lambda: intruder_store.pending_count() == 0)
        assert uplink.stats.refused == 0
    finally:
        uplink.stop()
    time.sleep(0.3)
    assert not any("/s2/" in topic for topic, _ in hq.sink.messages.values())
    # A wrong password is refused at connect and reported.
    uplink = Uplink(mqtt_config(broker.port, username="device-d1", password="wrong", tls=tls), store, IDENTITY)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.stats.last_error and "refused the connection" in uplink.stats.last_error)
        assert not uplink.stats.connected
    finally:
        uplink.stop()
    hq.stop()
    broker.stop()
    store.close()
    intruder_store.close()


def test_tls_client_certificate_and_server_verification(tmp_path, pki):
    broker = tls_broker(tmp_path, pki, client_certs=True)
    store = Store(tmp_path / "a.db")
    fill(store, minutes=3, cameras=("door",))
    good = {"enabled": True, "ca_file": pki / "ca.crt", "cert_file": pki / "device-d1.crt",
            "key_file": pki / "device-d1.key"}
    # The server's certificate is checked against our CA: another CA must not connect.
    wrong_ca = Uplink(mqtt_config(broker.port, tls={**good, "ca_file": pki / "other-ca.crt"}), store, IDENTITY)
    wrong_ca.start()
    try:
        assert wait_until(lambda: wrong_ca.stats.connect_failures >= 1)
        assert "certificate verify failed" in wrong_ca.health()["last_error"]
        assert not wrong_ca.stats.connected
    finally:
        wrong_ca.stop()
    # No client certificate: the broker refuses the handshake.
    no_cert = Uplink(mqtt_config(broker.port, tls={"enabled": True, "ca_file": pki / "ca.crt"}), store, IDENTITY)
    no_cert.start()
    try:
        assert wait_until(lambda: no_cert.stats.connect_failures >= 1)
        time.sleep(0.5)
        assert not no_cert.stats.connected and store.pending_count() == 5
    finally:
        no_cert.stop()
    uplink = Uplink(mqtt_config(broker.port, tls=good), store, IDENTITY)
    uplink.start()
    try:
        assert wait_until(lambda: store.pending_count() == 0)
        assert uplink.health()["tls"] is True and uplink.stats.refused == 0
    finally:
        uplink.stop()
    broker.stop()
    store.close()


def test_missing_tls_files_are_reported_and_picked_up_later(tmp_path, pki, monkeypatch):
    """A config naming files not (yet) on the box loads (a controller validates configs for
    boxes); the uplink says which file is missing, the agent keeps counting, and it connects
    once the file appears."""
    from edge_agent import uplink as uplink_module
    from edge_agent.config import ConfigError, load_config

    monkeypatch.setattr(uplink_module, "FILE_RECHECK_SECONDS", 0.2)
    ca = tmp_path / "later" / "ca.pem"
    config = load_config(mqtt={"tls": {"enabled": True, "ca_file": str(ca)}})
    broker = tls_broker(tmp_path, pki, client_certs=False)
    store = Store(tmp_path / "a.db")
    fill(store, minutes=2, cameras=("door",))
    settings = {**config.mqtt.model_dump(), "port": broker.port, "username": "device-d1", "password": "s3cret-d1",
                "org": "o1", "store_id": "s1", "device_id": "d1"}
    uplink = Uplink(MqttConfig(**settings), store, IDENTITY)
    uplink.start()
    try:
        time.sleep(0.5)
        error = uplink.health()["last_error"]
        assert "mqtt.tls.ca_file" in error and "does not exist" in error and not uplink.stats.connected
        ca.parent.mkdir()
        ca.write_bytes((pki / "ca.crt").read_bytes())
        assert wait_until(lambda: store.pending_count() == 0)
    finally:
        uplink.stop()
        broker.stop()
        store.close()
    (tmp_path / "key.pem").write_text("x")
    with pytest.raises(ConfigError) as problem:
        load_config(mqtt={"tls": {"enabled": True, "key_file": str(tmp_path / "key.pem")}})
    assert "key_file needs cert_file" in str(problem.value)


def test_hq_tail_cli_deduplicates_into_jsonl(tmp_path, broker):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    out = tmp_path / "feed.jsonl"
    cmd = [sys.executable, "-m", "edge_agent", "hq", "tail", "--port", str(broker.port), "--store", "o1/s1",
           "--jsonl", str(out), "--client-id", "hq-test", "--quiet"]

    def start(*extra):
        proc = subprocess.Popen(cmd + list(extra), cwd=REPO, stderr=subprocess.PIPE, text=True)
        seen = []
        while not any("subscribed to smartstore/v1/o1/s1/+/#" in line for line in seen):
            seen.append(proc.stderr.readline())
            assert seen[-1], seen  # the tail exited before subscribing
        return proc, "".join(seen)

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    proc, _ = start("--count", "3", "--duration", "60")
    for i, message_id in enumerate(["a", "b", "a", "a", "b", "c"]):
        publisher.publish(f"{BASE}/rollup/minute", json.dumps({"id": message_id, "n": i}), qos=1).wait_for_publish(5)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["payload"]["id"] for line in lines] == ["a", "b", "c"]
    assert [line["payload"]["n"] for line in lines] == [0, 1, 5]  # the first copy is kept
    assert "new 3" in stderr and "duplicates 3" in stderr
    # While it is away, its persistent session collects the feed; a restarted tail gets it and
    # keeps de-duplicating against what the file holds. Foreign and broken messages are skipped.
    publisher.publish(f"{BASE}/rollup/minute", json.dumps({"id": "b", "n": 9}), qos=1).wait_for_publish(5)
    publisher.publish(f"{BASE}/health", b"not json", qos=1).wait_for_publish(5)
    publisher.publish("smartstore/v1/o1/s2/d1/health", json.dumps({"id": "other-store"}), qos=1).wait_for_publish(5)
    publisher.publish(f"{BASE}/rollup/minute", json.dumps({"id": "d", "n": 10}), qos=1).wait_for_publish(5)
    proc, early = start("--count", "1", "--duration", "60")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "new 1, duplicates 1, invalid 1" in stderr and "without an id" in early + stderr
    assert [json.loads(line)["payload"]["id"] for line in out.read_text().splitlines()] == ["a", "b", "c", "d"]
    publisher.loop_stop()
