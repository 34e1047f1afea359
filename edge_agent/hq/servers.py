"""Private PostgreSQL and RabbitMQ servers on loopback ports (tests, benchmarks, demos).

Like ``edge_agent.mosquitto``: each server lives in its own temporary directory,
listens on 127.0.0.1 only and is started and stopped by the caller. Nothing here
is used in production; HQ runs its own database and broker cluster.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from ..mosquitto import free_port, port_open


def _wait_port(port: int, process: subprocess.Popen | None, what: str, log: Path | None, wait: float) -> None:
    deadline = time.time() + wait
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with status {process.returncode}: {detail}")
        if port_open("127.0.0.1", port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {wait:.0f} s")


def _postgres_bin() -> Path:
    """Debian keeps the server programs out of PATH, in /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(versions[-1]).parent


class Postgres:
    """A private PostgreSQL cluster: ``initdb`` into a temporary directory, one loopback port.

    PostgreSQL refuses to run as root; when we are root the server runs as the
    ``postgres`` system user (created by the Debian package).
    """

    def __init__(self, port: int | None = None, workdir: Path | None = None, user: str = "hq") -> None:
        self.bin = _postgres_bin()
        self.port = port or free_port()
        self.user = user
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-agent-pg-"))
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "postgres.log"
        self.process: subprocess.Popen | None = None
        self._run_as: dict = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            self._run_as = {"user": account.pw_uid, "group": account.pw_gid}
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            self.workdir.chmod(0o700)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if (self.datadir / "PG_VERSION").exists():
            return
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", self.user, "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            check=True, capture_output=True, cwd=self.workdir, **self._run_as,
        )

    def start(self, wait: float = 30.0) -> Postgres:
        self.init()
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                 "-c", "max_connections=200", "-c", "shared_buffers=64MB"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, **self._run_as,
            )
        _wait_port(self.port, self.process, "postgres", self.logfile, wait)
        self._wait_ready(wait)
        return self

    def _wait_ready(self, wait: float) -> None:
        import psycopg

        deadline = time.time() + wait
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: SIGINT (abort transactions, clean shutdown); ``immediate``: SIGQUIT
        (no checkpoint: crash recovery at the next start); ``kill``: SIGKILL the postmaster."""
        if self.process and self.process.poll() is None:
            if mode == "kill":
                self.process.kill()
            else:
                self.process.send_signal({"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if mode == "kill":
            # Children (backends) of a SIGKILLed postmaster exit on their own once they
            # notice; wait until the port is free so a restart can bind it.
            deadline = time.time() + 15
            while port_open("127.0.0.1", self.port) and time.time() < deadline:
                time.sleep(0.1)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()


RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


class RabbitNode:
    """One node of a :class:`RabbitCluster` (its own name, ports and data dir)."""

    def __init__(self, cluster: RabbitCluster, index: int) -> None:
        self.cluster = cluster
        self.name = f"{cluster.name_prefix}{index}@localhost"
        self.amqp_port = free_port()
        self.mqtt_port = free_port()
        self.dist_port = free_port()
        self.dir = cluster.workdir / f"node{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logfile = self.dir / "stdout.log"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {
            **self.cluster.base_env(),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
        }

    def write_config(self) -> None:
        peers = "\n".join(f"cluster_formation.classic_config.nodes.{i + 1} = {node.name}"
                          for i, node in enumerate(self.cluster.nodes))
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n"
            "cluster_formation.peer_discovery_backend = classic_config\n"
            f"{peers}\n"
            # Keep a small box from blocking publishers on the default 40 % watermark.
            "vm_memory_high_watermark.relative = 0.6\n"
            "disk_free_limit.absolute = 200MB\n"
        )
        (self.dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    def start(self) -> None:
        self.write_config()
        with open(self.logfile, "ab") as log:
            self.process = subprocess.Popen([RABBITMQ_SERVER], env=self.env(), stdout=log,
                                            stderr=subprocess.STDOUT, cwd=self.dir)

    def wait(self, timeout: float = 90.0) -> None:
        _wait_port(self.amqp_port, self.process, f"rabbitmq {self.name}", self.logfile, timeout)
        _wait_port(self.mqtt_port, self.process, f"rabbitmq {self.name}", self.logfile, timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        result = subprocess.run([RABBITMQCTL, "-n", self.name, *args], env=self.cluster.base_env(),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")
        return result.stdout

    def stop(self) -> None:
        """A clean node stop (``rabbitmqctl stop``), then wait for the process to end."""
        if self.process and self.process.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class RabbitCluster:
    """N RabbitMQ nodes on 127.0.0.1 forming one cluster, MQTT plugin enabled on each.

    The Debian wrapper switches to the ``rabbitmq`` user, so the server script is
    run directly; a private ``epmd`` on its own port keeps node names from
    clashing with any other Erlang on the machine, and one cookie file joins them.
    Nodes discover each other from the config (``classic_config``), so they are
    started together and form the cluster without ``rabbitmqctl join_cluster``.
    """

    def __init__(self, nodes: int = 2, workdir: Path | None = None) -> None:
        if not Path(RABBITMQ_SERVER).exists():
            raise FileNotFoundError("RabbitMQ is not installed (apt-get install rabbitmq-server)")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-agent-rabbit-"))
        self.home = self.workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex())
            cookie.chmod(0o400)
        self.epmd_port = free_port()
        self.name_prefix = f"edge{os.getpid()}x{self.epmd_port}n"
        self.epmd: subprocess.Popen | None = None
        self.nodes: list[RabbitNode] = []
        self.nodes = [RabbitNode(self, i + 1) for i in range(nodes)]

    def base_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.home),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ALLOW_INPUT": "",
        }

    def start(self, timeout: float = 120.0) -> RabbitCluster:
        self.epmd = subprocess.Popen(["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                                     env=self.base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.epmd_port, self.epmd, "epmd", None, 10)
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait(timeout)
        self.wait_clustered(timeout)
        return self

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        node = via or next(n for n in self.nodes if n.running)
        out = node.ctl("eval", "rabbit_nodes:all_running().")
        return sorted(part.strip(" []'\n") for part in out.strip().strip("[]").split(",") if part.strip(" []'\n"))

    def wait_clustered(self, timeout: float = 120.0) -> None:
        want = sorted(node.name for node in self.nodes if node.running)
        deadline = time.time() + timeout
        while True:
            try:
                if self.running_nodes() == want:
                    return
            except RuntimeError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"RabbitMQ nodes did not form a cluster: want {want}")
            time.sleep(0.5)

    def restart_node(self, index: int, timeout: float = 120.0) -> None:
        node = self.nodes[index]
        node.start()
        node.wait(timeout)
        self.wait_clustered(timeout)

    @property
    def amqp_urls(self) -> list[str]:
        return [f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/%2F" for node in self.nodes]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        if self.epmd and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(10)
        self.epmd = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.remove()
