"""Network namespaces for real tests: an "attacker" and a "gateway" joined by a veth pair.

    from netns import NetnsPair, netns_pair, skip_unless_root   # tests/ is on sys.path

    with NetnsPair("fw") as pair:             # or use the `netns_pair` pytest fixture
        pair.gateway.run(["iptables", "-S"])  # runs inside the gateway namespace
        pair.ping("203.0.113.7")              # True when an echo reply comes back
        with pair.listen_tcp(8080):
            pair.tcp_probe("2001:db8:66::8", 8080)  # "open", "timeout" (dropped), "refused"

The attacker owns several documentation addresses on its veth (203.0.113.7, 203.0.113.8,
2001:db8:66::7, 2001:db8:66::8) so a test picks the source of each probe; the gateway has
198.51.100.2 and 2001:db8:1::2. Each side routes the other's prefix straight onto the link.
DAD is off in both namespaces (and addresses are added ``nodad``), so IPv6 works at once.
Probes are small Python programs run inside the attacker namespace: raw-socket ICMP echo
(no dependency on an installed ping) and a TCP connect bound to the chosen source.

Names are unique per process (``bp<purpose><pid>n<k>a`` / ``...g``); ``close()`` kills
the processes it started and deletes both namespaces, also when setup failed halfway.
Nothing is done in the host's own namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

ATTACKER_V4 = ("203.0.113.7", "203.0.113.8")
ATTACKER_V6 = ("2001:db8:66::7", "2001:db8:66::8")
GATEWAY_V4 = "198.51.100.2"
GATEWAY_V6 = "2001:db8:1::2"
ATTACKER_DEV = "att0"
GATEWAY_DEV = "gw0"

skip_unless_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (network namespaces)"
)

_counter = itertools.count(1)


def unique_base(purpose: str) -> str:
    """A namespace name stem unique to this process and call."""
    return f"bp{purpose}{os.getpid()}n{next(_counter)}"


class Namespace:
    """One named network namespace (``ip netns``) and commands run inside it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.created = False

    @property
    def prefix(self) -> list[str]:
        """The argv prefix that runs a command inside, e.g. for SubprocessRunner."""
        return ["ip", "netns", "exec", self.name]

    def create(self) -> None:
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.prefix, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in {self.name}: {' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix, *argv], **kw)

    def pids(self) -> list[int]:
        """The processes running inside (``ip netns pids``)."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=True
        ).stdout
        return [int(p) for p in out.split()]

    def delete(self) -> None:
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False


# Runs in the attacker namespace: one probe, prints its outcome on stdout.
_PROBE = r"""
import errno, os, select, socket, struct, sys, time
kind, src, dst, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
v6 = ":" in dst
fam = socket.AF_INET6 if v6 else socket.AF_INET
if kind == "tcp":
    # Not settimeout(): Python gives up without looking once the time is up, so a probe
    # descheduled on a loaded machine called an answered connect a drop (as below).
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setblocking(False)
    deadline = time.monotonic() + timeout
    err = s.connect_ex((dst, int(sys.argv[5])))
    if err in (errno.EINPROGRESS, errno.EAGAIN):
        left = max(0.0, deadline - time.monotonic())
        if not select.select([], [s], [], left)[1]:
            print("timeout")
            sys.exit(0)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == 0:
        print("open")
    elif err == errno.ECONNREFUSED:
        print("refused")
    else:
        print("error", err)
    sys.exit(0)
def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xFFFF)
    t += t >> 16
    return ~t & 0xFFFF
ident, payload = os.getpid() & 0xFFFF, b"banpipe-probe"
proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
s = socket.socket(fam, socket.SOCK_RAW, proto)
s.bind((src, 0))
req, rep = (128, 129) if v6 else (8, 0)
hdr = struct.pack("!BBHHH", req, 0, 0, ident, 1)
# The kernel fills in the ICMPv6 checksum itself (it covers a pseudo-header).
if not v6:
    hdr = struct.pack("!BBHHH", req, 0, csum(hdr + payload), ident, 1)
pkt = hdr + payload
s.sendto(pkt, (dst, 0))
deadline = time.monotonic() + timeout
while True:
    # Look at the socket even when the time is up: a probe descheduled after sendto()
    # on a loaded machine found its reply already waiting, and must not call it dropped.
    left = max(0.0, deadline - time.monotonic())
    if not select.select([s], [], [], left)[0]:
        print("timeout")
        break
    data, addr = s.recvfrom(2048)
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
    if len(icmp) >= 8 and icmp[0] == rep and struct.unpack("!H", icmp[4:6])[0] == ident:
        print("reply")
        break
"""

# Runs in the gateway namespace: accepts TCP on both families until killed.
_LISTENER = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"""


class NetnsPair:
    """An attacker and a gateway namespace joined by a veth pair (see the module doc)."""

    attacker_v4 = ATTACKER_V4
    attacker_v6 = ATTACKER_V6
    gateway_v4 = GATEWAY_V4
    gateway_v6 = GATEWAY_V6

    def __init__(self, purpose: str = "t") -> None:
        base = unique_base(purpose)
        self.attacker = Namespace(base + "a")
        self.gateway = Namespace(base + "g")
        self._procs: list[subprocess.Popen] = []

    # -- lifecycle ---------------------------------------------------------------------
    def setup(self) -> NetnsPair:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        att, gw = self.attacker, self.gateway
        for ns in (att, gw):
            ns.create()
            ns.run(["ip", "link", "set", "lo", "up"])
            # Before any link exists, so the veth ends and their addresses skip DAD too.
            for conf in ("all", "default"):
                ns.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{conf}.accept_dad=0"])
        # Created inside the attacker namespace with its peer placed straight in the
        # gateway: the host's namespace never sees either end.
        att.run(
            [
                "ip", "link", "add", ATTACKER_DEV, "type", "veth",
                "peer", "name", GATEWAY_DEV, "netns", gw.name,
            ]
        )  # fmt: skip
        for a in ATTACKER_V4:
            att.run(["ip", "addr", "add", f"{a}/24", "dev", ATTACKER_DEV])
        for a in ATTACKER_V6:
            att.run(["ip", "addr", "add", f"{a}/64", "dev", ATTACKER_DEV, "nodad"])
        gw.run(["ip", "addr", "add", f"{GATEWAY_V4}/24", "dev", GATEWAY_DEV])
        gw.run(["ip", "addr", "add", f"{GATEWAY_V6}/64", "dev", GATEWAY_DEV, "nodad"])
        for ns, dev in ((att, ATTACKER_DEV), (gw, GATEWAY_DEV)):
            ns.run(["ip", "link", "set", dev, "up"])
        # Different prefixes on each side: route the other side's prefix onto the link.
        att.run(["ip", "route", "add", "198.51.100.0/24", "dev", ATTACKER_DEV])
        att.run(["ip", "-6", "route", "add", "2001:db8:1::/64", "dev", ATTACKER_DEV])
        gw.run(["ip", "route", "add", "203.0.113.0/24", "dev", GATEWAY_DEV])
        gw.run(["ip", "-6", "route", "add", "2001:db8:66::/64", "dev", GATEWAY_DEV])
        self.wait_ready()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until both families answer from every attacker address (link up, NDP)."""
        deadline = time.monotonic() + timeout
        pending = [*ATTACKER_V4, *ATTACKER_V6]
        while pending:
            pending = [a for a in pending if not self.ping(a, timeout=0.5)]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"namespaces not reachable from {pending}")

    def close(self) -> None:
        for p in self._procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._procs.clear()
        self.attacker.delete()
        self.gateway.delete()

    def __enter__(self) -> NetnsPair:
        return self.setup()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- probes ------------------------------------------------------------------------
    def target(self, src: str) -> str:
        """The gateway address of the same family as ``src``."""
        return GATEWAY_V6 if ipaddress.ip_address(src).version == 6 else GATEWAY_V4

    def _probe(self, args: list[str], timeout: float) -> str:
        proc = self.attacker.run(
            [sys.executable, "-c", _PROBE, *args], timeout=timeout + 30, check=True
        )
        return proc.stdout.strip()

    def ping(self, src: str, dst: str | None = None, *, timeout: float = 1.0) -> bool:
        """One ICMP echo from attacker address ``src``; True when a reply came back."""
        dst = dst or self.target(src)
        return self._probe(["icmp", src, dst, str(timeout)], timeout) == "reply"

    def tcp_probe(
        self, src: str, port: int, dst: str | None = None, *, timeout: float = 1.0
    ) -> str:
        """TCP connect from ``src``: "open", "timeout" (dropped), "refused" or "error N"."""
        dst = dst or self.target(src)
        return self._probe(["tcp", src, dst, str(timeout), str(port)], timeout)

    @contextlib.contextmanager
    def listen_tcp(self, port: int = 8080) -> Iterator[subprocess.Popen]:
        """A TCP listener in the gateway on ``port`` (both families) while the block runs."""
        proc = self.gateway.popen(
            [sys.executable, "-c", _LISTENER, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._procs.append(proc)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            if not ready or proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"listener did not start: {proc.stderr.read()}")
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._procs.remove(proc)


@pytest.fixture(name="ns")
def netns_one() -> Iterator[Namespace]:
    """``ns``: one fresh namespace (``bpone<pid>``), deleted after the test."""
    n = Namespace(f"bpone{os.getpid()}")
    n.create()
    try:
        yield n
    finally:
        n.delete()


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    """A fresh attacker/gateway pair, deleted after the test."""
    with NetnsPair("t") as pair:
        yield pair


def spy(monkeypatch, cls, name, measure, seen=None) -> list:
    """``seen`` (a new list by default), which gets ``measure(*args, **kw)`` of every
    call of the method ``cls.name`` from now on; the call itself goes through."""
    seen = [] if seen is None else seen
    real = getattr(cls, name)

    def spying(self, *args, **kw):
        seen.append(measure(*args, **kw))
        return real(self, *args, **kw)

    monkeypatch.setattr(cls, name, spying)
    return seen
