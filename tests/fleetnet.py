"""A fleet of gateways for banshare tests and benchmarks: real namespaces, real NATS.

    with Fleet("t", gateways=("a", "b", "c"), nodes=1) as f:   # tests/ is on sys.path
        f.start_banshare("a"); f.start_banshare("b")
        f.banctl("a", "ban", "203.0.113.50", "--for", "1h")
        f.wait(lambda: "203.0.113.50" in f.entries("b"))

A hub namespace holds a bridge (192.0.2.1/24) and the ``nats-server -js`` processes
(one, or a 3-node JetStream cluster on ports 4222-4224), each with its store in a
temporary directory. Each gateway is a namespace joined to the bridge by a veth pair
(192.0.2.11, .12, ...), with its own banpipe.toml, ledger, nftables firewall, banctl
and banshare, all run from this checkout. ``close()`` kills every process it started
and deletes the namespaces; nothing is done in the host's own namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from netns import Namespace, unique_base
from toolpaths import BIN, LIB

HUB = "192.0.2.1"
CLIENT_PORT = 4222
ROUTE_PORT = 6222


class Fleet:
    def __init__(
        self,
        purpose: str = "f",
        *,
        gateways: Sequence[str] = ("a", "b", "c"),
        nodes: int = 1,
        replicas: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        base = unique_base(purpose)
        self.dir = Path(tempfile.mkdtemp(prefix="banshare-"))
        self.hub = Namespace(base + "h")
        self.names = list(gateways)
        self.ns = {g: Namespace(f"{base}{g}") for g in gateways}
        self.nodes = nodes
        self.replicas = replicas or nodes
        self.extra = extra or {}
        self.servers: dict[int, subprocess.Popen] = {}
        self.banshare: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, PYTHONPATH=str(LIB), PYTHONUNBUFFERED="1")

    # -- set-up and tear-down ----------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        hub = self.hub
        hub.create()
        hub.run(["ip", "link", "set", "lo", "up"])
        hub.run(["ip", "link", "add", "br0", "type", "bridge"])
        hub.run(["ip", "addr", "add", f"{HUB}/24", "dev", "br0"])
        hub.run(["ip", "link", "set", "br0", "up"])
        for i, g in enumerate(self.names):
            ns = self.ns[g]
            ns.create()
            ns.run(["ip", "link", "set", "lo", "up"])
            hub.run(["ip", "link", "add", f"v{g}", "type", "veth", "peer", "name", "eth0",
                     "netns", ns.name])  # fmt: skip
            hub.run(["ip", "link", "set", f"v{g}", "master", "br0", "up"])
            ns.run(["ip", "addr", "add", f"192.0.2.{11 + i}/24", "dev", "eth0"])
            ns.run(["ip", "link", "set", "eth0", "up"])
            self._write_config(g)
        for n in range(self.nodes):
            self.start_server(n)

    def _write_config(self, g: str) -> None:
        home = self.dir / g
        home.mkdir()
        servers = ", ".join(f'"nats://{HUB}:{CLIENT_PORT + n}"' for n in range(self.nodes))
        text = (
            f'[network]\nwan_state = ""\n{self.extra.get(g, "")}\n'
            f'[firewall]\nbackend = "nftables"\n\n'
            f'[banctl]\nledger = "{home}/ledger.sqlite3"\n\n'
            f'[fleet]\nservers = [{servers}]\nname = "gw-{g}"\nreplicas = {self.replicas}\n'
        )
        (home / "banpipe.toml").write_text(text)

    def close(self) -> None:
        for p in [*self.banshare.values(), *self.servers.values()]:
            if p.poll() is None:
                p.kill()
            p.wait()
        for ns in [*self.ns.values(), self.hub]:
            ns.delete()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- NATS servers --------------------------------------------------------------------

    def start_server(self, n: int) -> None:
        store = self.dir / f"nats{n}"
        argv = ["nats-server", "-js", "-sd", str(store), "-a", HUB, "-p", str(CLIENT_PORT + n),
                "-n", f"n{n}"]  # fmt: skip
        if self.nodes > 1:
            routes = ",".join(f"nats://{HUB}:{ROUTE_PORT + m}" for m in range(self.nodes) if m != n)
            argv += ["--cluster_name", "banpipe", "--cluster", f"nats://{HUB}:{ROUTE_PORT + n}",
                     "--routes", routes]  # fmt: skip
        log = open(self.dir / f"nats{n}.log", "ab")  # noqa: SIM115 - owned by the process
        self.servers[n] = self.hub.popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def kill_server(self, n: int) -> None:
        p = self.servers.pop(n)
        p.send_signal(signal.SIGKILL)
        p.wait()

    # -- gateways ------------------------------------------------------------------------

    def config(self, g: str) -> str:
        return str(self.dir / g / "banpipe.toml")

    def banctl(self, g: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, str(BIN / "banctl"), "--config", self.config(g), *args]
        proc = subprocess.run(
            [*self.ns[g].prefix, *argv], capture_output=True, text=True, env=self.env
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"banctl {' '.join(args)} on {g}: {proc.stderr}")
        return proc

    def start_banshare(self, g: str) -> None:
        err = open(self.dir / f"banshare-{g}.err", "ab")  # noqa: SIM115 - owned by the process
        argv = [sys.executable, str(BIN / "banshare"), "--config", self.config(g)]
        self.banshare[g] = self.ns[g].popen(
            argv, stdout=subprocess.DEVNULL, stderr=err, env=self.env
        )

    def stop_banshare(self, g: str) -> int:
        p = self.banshare.pop(g)
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=30)

    def stderr(self, g: str) -> str:
        path = self.dir / f"banshare-{g}.err"
        return path.read_text() if path.exists() else ""

    def entries(self, g: str) -> set[str]:
        """The addresses in gateway ``g``'s nftables sets, read from the kernel by the
        backend's own ``check()``."""
        from banpipe.firewall import FirewallConfig, SubprocessRunner, make_backend

        fw = make_backend("nftables", FirewallConfig(), SubprocessRunner(self.ns[g].prefix))
        return set(fw.check().entries)

    def wait(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Poll until ``predicate()`` holds; False after ``timeout`` (not a timing test:
        the deadline only keeps a broken build from hanging)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()
