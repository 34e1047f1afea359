"""A disposable Debian 12 store box for the Ansible tests, on this machine.

A debootstrap root file system is booted with its own systemd as PID 1 in a new
PID and mount namespace (``unshare``; no Docker, no VM), and Ansible reaches it
over ssh on a loopback port, as it reaches a real box. The network namespace is
the host's, so the box's services listen on loopback ports the test chooses and
it can reach Debian's mirror for apt. The built root file system is cached
(``~/.cache/edge-agent/test-rootfs``) so later runs skip debootstrap.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from edge_agent.mosquitto import port_open

SUITE = "bookworm"
MIRROR = os.environ.get("EDGE_AGENT_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a freshly installed box has before Ansible: Python for Ansible, systemd,
# ssh and sudo. Everything else is the roles' job.
INCLUDE = ["python3", "python3-apt", "systemd", "systemd-sysv", "dbus", "openssh-server", "sudo"]
# Units that make no sense in a container (and would only log failures).
MASK = ["console-getty.service", "getty@tty1.service", "e2scrub_reap.service", "systemd-logind.service",
        "apt-daily.timer", "apt-daily-upgrade.timer", "systemd-timesyncd.service"]

BOOT_SCRIPT = """
set -e
R="$1"
mount --make-rprivate /
# systemd sets up its services' sandboxes (PrivateTmp=, ProtectSystem=, …) only when
# the root directory is a mount point of its own.
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount --rbind /dev "$R/dev"
mount --rbind /sys "$R/sys"
mount -o remount,bind,ro "$R/sys"
exec chroot "$R" /usr/bin/env -i container=edge-agent-test /lib/systemd/systemd --log-target=console --log-level=warning
"""


class TargetError(RuntimeError):
    pass


def quiet_port() -> int:
    """A free port below Linux's ephemeral range (32768+), for a service that starts
    minutes later: a port the kernel hands out for outgoing connections could be
    taken by then on a busy machine (and was, here)."""
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
                return port
        except OSError:
            continue
    raise TargetError("no free port between 20000 and 32000")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-agent" / "test-rootfs"


def build_rootfs(target: Path, log: Path, prefetch: list[str] = ()) -> float:
    """Copy the cached root file system to ``target`` (debootstrap it first if needed); seconds spent.

    ``prefetch``: packages whose .deb files are downloaded into the image's apt cache
    (not installed), so installing them later needs no download, as on a box made
    from an image with a warm apt cache.
    """
    started = time.monotonic()
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(INCLUDE)} {' '.join(prefetch)}".encode()).hexdigest()[:12]
    golden = cache_dir() / f"{SUITE}-{key}"
    if not (golden / ".complete").exists():
        partial = golden.with_name(golden.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, str(partial), MIRROR],
                stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise TargetError(f"debootstrap failed (rc {result.returncode}); see {log}")
        if prefetch:
            with log.open("ab") as out:
                result = subprocess.run(
                    ["chroot", str(partial), "apt-get", "install", "--download-only", "--yes", "--quiet",
                     "--no-install-recommends", *prefetch],
                    stdout=out, stderr=subprocess.STDOUT, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                               "DEBIAN_FRONTEND": "noninteractive"})
            if result.returncode != 0:
                raise TargetError(f"downloading {prefetch} failed (rc {result.returncode}); see {log}")
        for unit in MASK:
            link = partial / "etc/systemd/system" / unit
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
        (partial / ".complete").write_text("")
        shutil.rmtree(golden, ignore_errors=True)
        partial.rename(golden)
        for stale in golden.parent.glob(f"{SUITE}-*"):  # images made for another package list
            if stale != golden:
                shutil.rmtree(stale, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", f"{golden}/.", str(target)], check=True)
    (target / ".complete").unlink(missing_ok=True)
    return time.monotonic() - started


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class BootedTarget:
    """The root file system at ``root`` running its own systemd, reached over ssh."""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.ssh_port = quiet_port()
        self.key = workdir / "id_ed25519"
        self.process: subprocess.Popen | None = None
        self.console = workdir / "console.log"

    def prepare(self) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        (self.root / "etc/ssh/sshd_config.d/test.conf").write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUseDNS no\n")
        subprocess.run(["chroot", str(self.root), "ssh-keygen", "-A"], check=True, capture_output=True)
        (self.root / "etc/hostname").write_text("store-test-box1\n")

    def boot(self, timeout: float = 60.0) -> None:
        with self.console.open("wb") as out:
            # If the test process dies without cleaning up, unshare is killed and takes
            # the box's PID 1, and so every process of the box, with it (--kill-child).
            self.process = subprocess.Popen(
                ["unshare", "--fork", "--pid", "--mount", "--propagation", "private", "--kill-child=SIGKILL",
                 "bash", "-c", BOOT_SCRIPT, "boot", str(self.root)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TargetError(f"the target's systemd exited: {self.console.read_text()[-2000:]}")
            if port_open("127.0.0.1", self.ssh_port):
                result = self.ssh("systemctl is-system-running --wait", check=False, timeout=60)
                if result.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise TargetError(f"the target did not come up within {timeout:.0f} s: {self.console.read_text()[-2000:]}")

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["ssh", "-q", "-i", str(self.key), "-p", str(self.ssh_port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise TargetError(f"{command!r} failed on the target (rc {result.returncode}):\n"
                              f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def init_pid(self) -> int | None:
        if self.process is None:
            return None
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def shutdown(self) -> None:
        """Kill the target's PID 1: the kernel ends every process in its namespace, and its mounts go with it."""
        pid = self.init_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
