"""banshare: many gateways, one ban list, through NATS JetStream.

banshare publishes this gateway's ban decisions (ban, extension, unban, pin) from the
ledger and applies the other gateways' decisions to the local ledger and firewall.
banctl stays free of networking: every ban decision gets an id in the ledger
transaction that makes it (``decisions`` table), and banshare wakes on inotify events
for the ledger's ``-wal`` file and reads the decisions above the last one published.
No loop polls the database.

* Publishing: one subject per gateway, ``<stream>.<name>``, message id
  ``<name>:<decision id>``; after a restart banshare continues from the last decision
  the stream holds from this gateway, so nothing is sent twice or skipped.
* Applying: a durable push consumer named after the gateway (created if missing)
  replays whatever arrived while banshare or the gateway was down. Each burst is
  judged (banpipe.fleet.judge: protection always wins; accepted kinds; expired;
  cap), applied in one ledger transaction (``Ledger.apply_remote``: idempotent,
  a late older decision never undoes a newer one), put into the firewall in one
  call under the ledger's lock (as banctl's admin commands do), then acknowledged.
* The engine being down never stops local banning (banctl does not need banshare):
  banshare says so once, reconnects with backoff and catches up in both directions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import IO, Any

from banpipe import cli, ctlenv, fleet
from banpipe.config import ConfigError, FleetConfig, load_config
from banpipe.fleetnats import Connection
from banpipe.ledger import Decision, Ledger, LedgerError

TOOL = "banshare"
PUBLISH_BATCH = 500  # decisions published per round of acks
APPLY_BATCH = 2000  # remote decisions applied per ledger transaction
BURST = 32  # this many at once is a burst: linger for more (see _consumer)
LINGER_S = 0.02
LINGER_STEP_S = 0.002
HEADER_ID = "Nats-Msg-Id"
SETTLE_S = 2.0  # after a -wal event, how long a commit may take to become visible


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog=TOOL,
        description=(
            "Share ban decisions with other gateways through NATS JetStream: publish this "
            "gateway's bans, extensions, unbans and pins from the ledger, apply the "
            "others' to the local ledger and firewall."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Configured in the [fleet] section of banpipe.toml (servers, name, stream,\n"
            "accept, max_duration, ...). A remote ban of an address this gateway protects\n"
            "is refused and reported. `banctl unban` of a remote ban unbans it fleet-wide.\n"
            "Needs nats-py: pip install 'banpipe[fleet]'.\n"
            "\n"
            "Exit status: 0 stopped by SIGTERM/SIGINT, 64 usage, 69 nats-py missing or\n"
            "firewall unavailable, 70 internal error, 73 cannot open the ledger, 78 config\n"
            "error."
        ),
    )
    cli.add_common_arguments(p)
    ctlenv.add_options(p)
    return p


def main(
    argv: list[str] | None = None,
    stdin: IO[Any] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    _stdin, stdout, stderr = cli.resolve_streams(stdin, stdout, stderr)
    args, code = cli.parse_args(build_parser(), argv, stdout, stderr)
    if args is None:
        return code

    def body() -> int:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise cli.ToolError(str(exc), cli.EX_CONFIG)
        if not config.fleet.servers:
            where = config.path or "banpipe.toml"
            raise cli.ToolError(f"{where}: [fleet] servers: none configured", cli.EX_CONFIG)
        nats = _import_nats()
        env = ctlenv.Env.build(config, args, stdout, stderr, tool=TOOL)
        share = Share(env, config.fleet, nats)
        from banpipe.firewall import FirewallError

        try:
            asyncio.run(share.run())
        except LedgerError as exc:
            raise cli.ToolError(str(exc), cli.EX_CANTCREAT)
        except FirewallError as exc:
            raise cli.ToolError(f"firewall: {exc}", cli.EX_UNAVAILABLE)
        finally:
            env.close()
        return cli.EX_OK

    return cli.run_tool(TOOL, body, debug=args.debug, stderr=stderr)


def _import_nats() -> Any:
    try:
        import nats
        import nats.js.api  # noqa: F401 - the JetStream half is needed too
    except ImportError:
        raise cli.ToolError(
            "nats-py is not installed: pip install 'banpipe[fleet]' (or pip install nats-py)",
            cli.EX_UNAVAILABLE,
        )
    return nats


# --------------------------------------------------------------------------------------
# applying remote decisions (no networking: tested on its own)


class Applier:
    """Judges and applies bursts of remote decisions to the ledger and firewall."""

    def __init__(self, env: Any, ledger: Ledger, fw: Any, name: str, policy: fleet.Policy) -> None:
        self.env = env
        self.ledger = ledger
        self.fw = fw
        self.name = name
        self.policy = policy
        self.report: cli.Reporter = env.report
        self.protection = env.protection()
        self.counts: Counter[str] = Counter()

    def refresh_protection(self) -> None:
        self.protection = self.env.protection()

    def apply(self, messages: Sequence[tuple[object, bytes]]) -> list[str]:
        """Apply one burst of (place, message body); returns the addresses newly banned.

        Unusable bodies (reported at their place, e.g. ``BANPIPE.gw-a:17``, subject and
        stream sequence), refused and skipped decisions are counted; refusals are
        reported one line each: an admin wants to know who tried to ban what of ours.
        """
        now = self.env.clock()
        accepted: list[Decision] = []
        for place, body in messages:
            try:
                d = fleet.decode(body)
            except ValueError as exc:
                self.counts["bad"] += 1
                self.report.error(str(place), f"ignored: {exc}", "bad")
                continue
            if d.origin == self.name:
                continue  # our own, echoed by the stream
            judged, why = fleet.judge(d, now=now, policy=self.policy, protection=self.protection)
            if judged is None:
                kind = "refused" if why and why.startswith("refused") else "skipped"
                self.counts[kind] += 1
                if kind == "refused":
                    self.report.error(d.addr, f"{d.kind} from {d.origin} {why}", kind)
                continue
            accepted.append(judged)
        if not accepted:
            return []
        with self.ledger.locked():
            out = self.ledger.apply_remote(accepted, now, retention=self.env.retention)
            if out.block:
                self._firewall(self.fw.block, out.block)
            if out.release:
                self._firewall(self.fw.release, out.release)
        c = self.counts
        c["applied"] += len(out.block) + len(out.release) + out.changed
        c["banned"] += len(out.block)
        c["unbanned"] += len(out.release)
        c["duplicate"] += out.duplicate
        c["stale"] += out.stale
        return out.block

    def _firewall(self, action: Callable[[list[str]], None], addrs: list[str]) -> None:
        from banpipe.firewall import FirewallError

        try:
            action(addrs)
        except FirewallError:
            # Our structure may be gone (banctl apply stopped with on_stop = "remove"):
            # create it and try once more; the ledger holds the truth either way.
            try:
                self.fw.init()
                action(addrs)
            except FirewallError as exc:
                self.report.error("firewall", f"{exc}; banctl check --repair fixes it", "firewall")


# --------------------------------------------------------------------------------------
# the running banshare (its NATS connection: banpipe.fleetnats)


class Share:
    """The running banshare: one connection, a publisher and an applier."""

    def __init__(self, env: Any, cfg: FleetConfig, nats: Any) -> None:
        self.env = env
        self.cfg = cfg
        self.nats = nats
        self.report: cli.Reporter = env.report
        self.name = fleet.gateway_name(cfg.name)
        self.subject = fleet.subject(cfg.stream, self.name)
        self.ledger: Ledger = env.ledger()
        self.fw = env.firewall()
        policy = fleet.Policy(tuple(cfg.accept), float(cfg.max_duration))
        self.applier = Applier(env, self.ledger, self.fw, self.name, policy)
        self.stop: asyncio.Event | None = None  # the events are created in run() (its loop)
        self.wake: asyncio.Event | None = None
        self.online: asyncio.Event | None = None
        self.conn: Connection | None = None  # made in run(), with those events
        self.cursor = 0  # highest local decision id the stream holds
        self.published = 0

    async def run(self) -> None:
        from banpipe.watch import PathWatcher

        loop = asyncio.get_running_loop()
        self.stop, self.wake, self.online = asyncio.Event(), asyncio.Event(), asyncio.Event()
        conn = self.conn = Connection(
            self.nats, self.cfg, self.name, self.report,
            stop=self.stop, online=self.online, wake=self.wake,
        )  # fmt: skip
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        self.fw.init()
        cfg = self.env.config
        ledger_paths = {os.path.abspath(p) for p in (self.ledger.path + "-wal", self.ledger.path)}
        other = [cfg.network.wan_state, *cfg.filter.whitelist_files]
        watcher = PathWatcher([*ledger_paths, *[p for p in other if p]])

        def on_change() -> None:
            changed = watcher.changed()
            if changed & ledger_paths or not changed:
                self.wake.set()
            if changed - ledger_paths:
                self.applier.refresh_protection()

        loop.add_reader(watcher.fileno(), on_change)
        self.report.say(None, f"starting as {self.name} on {', '.join(self.cfg.servers)}")
        try:
            cursor = await conn.connect()
            if cursor is not None:
                self.cursor = cursor
                tasks = [
                    asyncio.create_task(self._publisher()),
                    asyncio.create_task(self._consumer()),
                ]
                stopper = asyncio.create_task(self.stop.wait())
                done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                for t in [*tasks, stopper]:
                    t.cancel()
                await asyncio.gather(*tasks, stopper, return_exceptions=True)
                for t in done:
                    if t is not stopper and not t.cancelled() and t.exception():
                        raise t.exception()  # type: ignore[misc]
        finally:
            loop.remove_reader(watcher.fileno())
            watcher.close()
            await conn.close()
            c = self.applier.counts
            self.report.say(
                None,
                f"stopped: {self.published} published, {c['banned']} banned, "
                f"{c['unbanned']} unbanned, {c['applied'] - c['banned'] - c['unbanned']} "
                f"changed, {c['refused']} refused, {c['skipped']} skipped, "
                f"{c['duplicate'] + c['stale']} repeated or stale, {c['bad']} bad",
            )

    # -- connection ------------------------------------------------------------------

    # -- publishing ------------------------------------------------------------------

    async def _publisher(self) -> None:
        """Publish local decisions above the cursor whenever the ledger changes.

        The -wal file is written before its commit becomes visible (the fsync of
        ``synchronous=FULL`` lies between), so a read right after the event can come too
        early. The publisher reads through its own connection, whose ``data_version``
        changes once another connection's commit is visible; until it has changed, or
        the settle time is over, it reads again with growing pauses (0.5 ms to 50 ms).
        """
        reader = Ledger.open(self.ledger.path, create=False)
        seen = reader.data_version()
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                delay, deadline = 0.0005, time.monotonic() + SETTLE_S
                while True:
                    await self.online.wait()
                    version = reader.data_version()
                    batch = reader.local_decisions(self.cursor, PUBLISH_BATCH)
                    if batch:
                        if not await self._publish(batch):
                            # An outage: the callbacks report it; retry once reconnected.
                            await asyncio.sleep(0.2)
                            continue
                        self.cursor = batch[-1].id
                        self.published += len(batch)
                        continue
                    if version != seen:
                        seen = version
                        break
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, 0.05)
        finally:
            reader.close()

    async def _publish(self, batch: Sequence[Decision]) -> bool:
        """Publish a batch and wait for all acks (published in order, acked together)."""
        js = self.conn.js
        futures = [
            js.publish(
                self.subject,
                fleet.encode(d, self.name),
                stream=self.cfg.stream,
                headers={HEADER_ID: fleet.msg_id(self.name, d.id)},
                timeout=5.0,
            )
            for d in batch
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            if not self.conn.outage:
                self.report.error("nats", f"publish failed: {failed[0]!r}; retrying", "nats")
            return False
        return True

    # -- applying --------------------------------------------------------------------

    async def _consumer(self) -> None:
        inbox: list[Any] = []
        arrived = asyncio.Event()

        async def deliver(msg: Any) -> None:
            inbox.append(msg)
            arrived.set()

        conn = self.conn
        await conn.nc.subscribe(conn.deliver_subject, cb=deliver, pending_msgs_limit=1_000_000)
        while True:
            await arrived.wait()
            arrived.clear()
            # A single decision goes at once; in a burst (a catch-up, a flood) wait a
            # moment for more, so that one transaction and one firewall call cover
            # hundreds instead of a few.
            lingered, size = 0.0, len(inbox)
            while BURST <= size < APPLY_BATCH and lingered < LINGER_S:
                await asyncio.sleep(LINGER_STEP_S)
                lingered += LINGER_STEP_S
                if len(inbox) == size:
                    break
                size = len(inbox)
            msgs = inbox[:APPLY_BATCH]
            del inbox[:APPLY_BATCH]
            if inbox:
                arrived.set()
            if not msgs:
                continue
            try:
                self.applier.apply([(_Place(m), m.data) for m in msgs])
            except LedgerError as exc:
                # Not acknowledged: JetStream delivers them again after ack_wait.
                self.report.error("ledger", f"{exc}; will retry", "ledger")
                continue
            for m in msgs:
                with contextlib.suppress(Exception):
                    await m.ack()


class _Place:
    """Where a message came from (``subject:stream sequence``), worked out only when an
    error line needs it: parsing the metadata of every message costs a catch-up time."""

    __slots__ = ("msg",)

    def __init__(self, msg: Any) -> None:
        self.msg = msg

    def __str__(self) -> str:
        try:
            return f"{self.msg.subject}:{self.msg.metadata.sequence.stream}"
        except Exception:  # noqa: BLE001 - not a JetStream message: the subject will do
            return str(self.msg.subject)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
