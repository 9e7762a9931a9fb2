"""What banctl's commands and its daemon share: config, ledger, firewall, protection.

One ``Env`` is built per run of ``banctl`` from the config file and the command line;
the ledger and the firewall backend are opened on first use, so a read-only command
on a fresh machine creates nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from banpipe import cli, sources
from banpipe.bantime import BanPolicy
from banpipe.config import Config
from banpipe.ledger import Ledger, LedgerError
from banpipe.protect import Protection

Clock = cli.Clock


def add_options(p: argparse.ArgumentParser, *, again: bool = False) -> None:
    """``--ledger`` and ``--backend``, the options of every tool that opens the ledger
    and the firewall (banctl, banshare); ``again`` on a subcommand's parser, so both are
    accepted after the subcommand too without overriding what came before it."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {}
    p.add_argument(
        "--ledger", metavar="FILE", help="ledger file (default from [banctl] ledger)", **extra
    )
    p.add_argument(
        "--backend",
        choices=("iptables", "ipset", "nftables", "null"),
        help="firewall backend (default from [firewall] backend)",
        **extra,
    )


@dataclass
class Env:
    """What every command needs; built once per run from config and options."""

    config: Config
    ledger_path: str
    backend: str
    stdout: IO[str]
    stderr: IO[str]
    clock: Clock
    rng: Any
    runner: Any
    report: cli.Reporter
    _ledger: Ledger | None = None
    _fw: Any = None

    @classmethod
    def build(
        cls,
        config: Config,
        args: argparse.Namespace,
        stdout: IO[str],
        stderr: IO[str],
        *,
        tool: str,
        clock: Clock | None = None,
        rng: Any = None,
        runner: Any = None,
    ) -> Env:
        """The Env of one run from the config and ``--ledger``/``--backend``;
        ``clock``, ``rng`` and ``runner`` are for tests (defaults: real ones)."""
        return cls(
            config=config,
            ledger_path=args.ledger or config.banctl.ledger,
            backend=args.backend or config.firewall.backend,
            stdout=stdout,
            stderr=stderr,
            clock=clock or time.time,
            # Seeded from os.urandom once; per-draw urandom cost 2 us per alert in a flood.
            rng=rng if rng is not None else random.Random(),
            runner=runner,
            report=cli.Reporter(tool, stderr),
        )

    @property
    def policy(self) -> BanPolicy:
        try:
            return BanPolicy.from_config(self.config.ban)
        except ValueError as exc:
            raise cli.ToolError(f"[ban]: {exc}", cli.EX_CONFIG)

    @property
    def retention(self) -> float:
        return float(self.config.ban.retention)

    def existing_ledger(self) -> Ledger | None:
        """The ledger, or None when there is none yet: a read-only command (list, show,
        check) on a fresh machine creates nothing."""
        if self._ledger is None and not os.path.exists(self.ledger_path):
            return None
        return self.ledger()

    def ledger(self) -> Ledger:
        if self._ledger is None:
            try:
                self._ledger = Ledger.open(self.ledger_path)
            except LedgerError as exc:
                raise cli.ToolError(str(exc), cli.EX_CANTCREAT)
        return self._ledger

    def firewall(self) -> Any:
        if self._fw is None:
            from banpipe.firewall import FirewallError, make_backend

            try:
                settings = self.config.firewall.settings()
            except ValueError as exc:
                raise cli.ToolError(f"[firewall]: {exc}", cli.EX_CONFIG)
            try:
                self._fw = make_backend(self.backend, settings, self.runner, stream=self.stderr)
            except FirewallError as exc:
                raise cli.ToolError(f"firewall: {exc}", cli.EX_UNAVAILABLE)
        return self._fw

    def wan_addresses(self) -> set[str]:
        return set(sources.wan_addresses(self.config, self.report))

    def protection(self, wan: Iterable[str] | None = None) -> Protection:
        """Protection from the config and its sources now (banpipe.sources); ``wan``:
        the WAN state's addresses, when the caller has just read them."""
        return sources.load(self.config, self.report, strict=False, wan=wan).protection()

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None
