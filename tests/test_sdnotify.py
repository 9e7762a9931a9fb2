"""sd_notify(3)'s datagram, sent to a socket the test binds (as systemd would)."""

from __future__ import annotations

import socket

import pytest

from banpipe.sdnotify import READY, notify, notify_address


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, None),
        ("", None),
        ("/run/systemd/notify", "/run/systemd/notify"),
        ("@sd-notify/42", b"\0sd-notify/42"),
        ("vsock:2:1234", None),
        ("relative/path", None),
    ],
)
def test_notify_address(value, address):
    assert notify_address(value) == address


def test_not_run_by_systemd_sends_nothing():
    assert notify(READY, environ={}) is False


def test_ready_reaches_a_path_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        assert notify(READY, environ={"NOTIFY_SOCKET": path}) is True
        server.settimeout(5)
        assert server.recv(64) == b"READY=1"


def test_ready_reaches_an_abstract_socket(tmp_path):
    name = f"banpipe-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(b"\0" + name.encode())
        assert notify(READY, environ={"NOTIFY_SOCKET": "@" + name}) is True
        server.settimeout(5)
        assert server.recv(64) == b"READY=1"


def test_a_socket_that_is_gone_raises(tmp_path):
    with pytest.raises(OSError):
        notify(READY, environ={"NOTIFY_SOCKET": str(tmp_path / "absent")})
