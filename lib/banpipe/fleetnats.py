"""banshare's NATS side: the connection, the stream and the durable consumer.

``Connection.connect()`` keeps trying (backoff from 0.5 s to 30 s, with jitter) until
it is connected or banshare stops, then creates the stream and this gateway's durable
push consumer if they are missing. An outage is said once, the reconnection once;
``online`` is set while connected (the publisher waits on it), ``wake`` on every
(re)connection (there may be decisions to catch up on).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import ssl
from typing import Any

from banpipe import cli, fleet
from banpipe.config import FleetConfig

CONNECT_BACKOFF = (0.5, 30.0)  # first and longest wait between connection attempts


def tls_context(cfg: FleetConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert or any(s.startswith("tls://") for s in cfg.servers)):
        return None
    try:
        ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
        if cfg.tls_cert:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        raise cli.ToolError(f"[fleet] tls: {exc}", cli.EX_CONFIG)
    return ctx


class Connection:
    """One gateway's connection to the fleet's NATS servers, and its outages."""

    def __init__(
        self,
        nats: Any,
        cfg: FleetConfig,
        name: str,
        report: cli.Reporter,
        *,
        stop: asyncio.Event,
        online: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        self.nats = nats
        self.cfg = cfg
        self.name = name
        self.subject = fleet.subject(cfg.stream, name)
        self.report = report
        self.stop, self.online, self.wake = stop, online, wake
        self.nc: Any = None
        self.js: Any = None
        self.outage = False
        self.closing = False  # an orderly stop: losing the connection is no outage
        self.attempts = 0  # reconnection attempts in the current outage

    async def connect(self) -> int | None:
        """Connect (retrying with backoff until stopped) and set up the stream and our
        consumer; the publish cursor (the highest local decision id the stream holds),
        None when stopped first."""
        cfg = self.cfg
        options: dict[str, Any] = {
            "servers": list(cfg.servers),
            "name": f"banshare-{self.name}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 2,
            "disconnected_cb": self._disconnected,
            "reconnected_cb": self._reconnected,
            "error_cb": self._error,
        }
        if "reconnect_to_server_handler" in inspect.signature(self.nats.connect).parameters:
            options["reconnect_to_server_handler"] = self._next_server  # nats-py >= 2.16
        tls = tls_context(cfg)
        if tls is not None:
            options["tls"] = tls
        if cfg.credentials:
            options["user_credentials"] = cfg.credentials
        wait = CONNECT_BACKOFF[0]
        while not self.stop.is_set():
            try:
                # nats-py keeps trying the servers inside connect() (reporting through
                # error_cb); a stop must not wait for it.
                connecting = asyncio.ensure_future(self.nats.connect(**options))
                stopping = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not connecting.done():
                    connecting.cancel()
                    with contextlib.suppress(BaseException):
                        await connecting
                    return None
                self.nc = connecting.result()
                self.js = self.nc.jetstream()
                cursor = await self._setup()
            except Exception as exc:  # noqa: BLE001 - any failure here is an outage
                if self.nc is not None:
                    with contextlib.suppress(Exception):
                        await self.nc.close()
                    self.nc = None
                self._down(f"{type(exc).__name__}: {exc}".rstrip(": "))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait * random.uniform(0.8, 1.2))
                wait = min(wait * 2, CONNECT_BACKOFF[1])
                continue
            self._up(self.nc.connected_url)
            return cursor
        return None

    async def _setup(self) -> int:
        """Stream and durable consumer (created if missing); the publish cursor."""
        api, js, cfg = self.nats.js.api, self.js, self.cfg
        try:
            await js.stream_info(cfg.stream)
        except self.nats.js.errors.NotFoundError:
            await js.add_stream(
                name=cfg.stream,
                subjects=[f"{cfg.stream}.*"],
                max_age=float(cfg.keep) or None,
                num_replicas=int(cfg.replicas),
                storage=api.StorageType.FILE,
                duplicate_window=120.0,
            )
        try:
            await js.consumer_info(cfg.stream, self.name)
        except self.nats.js.errors.NotFoundError:
            await js.add_consumer(
                cfg.stream,
                api.ConsumerConfig(
                    durable_name=self.name,
                    deliver_subject=self.deliver_subject,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    ack_wait=30.0,
                    max_ack_pending=20_000,
                    num_replicas=int(cfg.replicas),
                ),
            )
        try:
            last = await js.get_last_msg(cfg.stream, self.subject)
            return fleet.decode(last.data).id
        except self.nats.js.errors.NotFoundError:
            return 0

    def _next_server(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        """nats-py's reconnect hook: the servers in turn, the first try at once, then
        waits growing from 0.5 s to 30 s (with jitter) while the outage lasts."""
        self.attempts += 1
        first, longest = CONNECT_BACKOFF
        wait = 0.0 if self.attempts == 1 else min(first * 2 ** (self.attempts - 2), longest)
        return servers[self.attempts % len(servers)], wait * random.uniform(0.8, 1.2)

    @property
    def deliver_subject(self) -> str:
        """Where the durable push consumer delivers the other gateways' decisions."""
        return f"_banshare.{self.cfg.stream}.{self.name}"

    def _down(self, why: str) -> None:
        self.online.clear()
        if not self.outage and not self.closing:
            self.outage = True
            self.report.error(
                "nats",
                f"unreachable ({why}); local banning goes on, retrying with backoff",
                "outage",
            )

    def _up(self, url: Any) -> None:
        where = f"{url.scheme}://{url.netloc}" if url is not None else "server"
        if self.outage:
            self.report.say("nats", f"reconnected to {where}; catching up")
        else:
            self.report.say("nats", f"connected to {where}")
        self.outage = False
        self.attempts = 0
        self.online.set()
        self.wake.set()

    async def _disconnected(self) -> None:
        self._down("connection lost")

    async def _reconnected(self) -> None:
        self._up(self.nc.connected_url if self.nc is not None else None)

    async def _error(self, exc: Exception) -> None:
        # The client reports every failed (re)connection attempt; _down() says it once.
        if self.nc is None:
            self._down(f"{type(exc).__name__}: {exc}".rstrip(": "))
            return
        if not self.outage:
            self.report.error("nats", f"{type(exc).__name__}: {exc}", "nats")

    async def close(self) -> None:
        """An orderly stop: losing the connection now is no outage."""
        self.closing = True
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 2)
