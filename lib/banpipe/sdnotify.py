"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to the
socket named in ``$NOTIFY_SOCKET``.

A ``Type=notify`` unit counts as started only once its process says ``READY=1``; units
ordered ``After=`` it wait until then. wanwatch uses it so that banpipe.service starts
only when the WAN state file holds our addresses: an alert judged before that would be
taken for one against somebody else's host and dropped.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

READY = "READY=1"


def notify_address(value: str | None) -> str | bytes | None:
    """The address ``$NOTIFY_SOCKET`` names: a path, or an abstract name (``@name``);
    None when unset or of a kind we do not speak (``vsock:``)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


def notify(message: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``message`` (e.g. :data:`READY`) to systemd. False when not run by a
    ``Type=notify`` unit; OSError when the socket cannot be reached."""
    address = notify_address(environ.get("NOTIFY_SOCKET"))
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True
