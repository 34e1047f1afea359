"""systemd's service notification protocol (sd_notify), client side.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the unix socket
named in ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
It is small enough to write here: the PyPI ``sdnotify`` package has not had a
release since 2017, and ``systemd-python`` must be compiled against
libsystemd on every box.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notifications when started by systemd with ``Type=notify``; a no-op otherwise."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog_usec = None
        pid = os.getpid() if pid is None else pid
        # WATCHDOG_PID, when set, names the process the watchdog is meant for
        # (not a child that inherited the environment).
        watchdog_pid = environ.get("WATCHDOG_PID")
        if environ.get("WATCHDOG_USEC", "").isdigit() and (not watchdog_pid or watchdog_pid == str(pid)):
            watchdog_usec = int(environ["WATCHDOG_USEC"]) or None
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_seconds(self) -> float | None:
        return self.watchdog_usec / 1_000_000 if self.watchdog_usec else None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines, e.g. ``notify(READY=1, STATUS="running")``. True if sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, address)
            return True
        except OSError as exc:
            if not self._warned:  # once: a missing socket is not worth a log line per ping
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._warned = True
            return False

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
