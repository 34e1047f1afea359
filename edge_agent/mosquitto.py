"""Start a private mosquitto broker on a loopback port (demo, tests, simulations)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Mosquitto:
    """A mosquitto process with its own config dir; ``extra`` lines go into its config."""

    def __init__(self, port: int | None = None, extra: str = "", workdir: Path | None = None,
                 allow_anonymous: bool = True, persistence: bool = False) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edge-agent-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.allow_anonymous = allow_anonymous
        self.persistence = persistence
        self.process: subprocess.Popen | None = None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        persistence = (f"persistence true\npersistence_location {self.workdir}/\n" if self.persistence
                       else "persistence false\n")
        self.conf_path.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}\n"
            f"{persistence}"
            # As root, mosquitto would switch to user "mosquitto", who cannot read our
            # private files (password file, certificates, log in a 0700 temp dir).
            f"{'user root' + chr(10) if os.geteuid() == 0 and not self._extra_sets('user') else ''}"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"{self.extra}\n"
        )

    def _extra_sets(self, option: str) -> bool:
        return any(line.split()[:1] == [option] for line in self.extra.splitlines())

    def start(self, wait: float = 10.0) -> Mosquitto:
        self.write_config()
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + wait
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode(errors='replace')}")
            if port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        raise TimeoutError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
