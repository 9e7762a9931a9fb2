"""The null backend: prints what it would do, one line per action, and touches nothing.

It keeps the entries in memory so that ``check()`` agrees with what was blocked, which lets
banctl run its full ledger/repair logic in a dry run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO

from banpipe.config import FirewallConfig

from . import FirewallState, Runner, validate_addresses


class NullBackend:
    name = "null"

    def __init__(
        self,
        settings: FirewallConfig,
        runner: Runner | None = None,
        *,
        stream: TextIO | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream if stream is not None else sys.stderr
        self.entries: set[str] = set()
        self.ready = False

    def _say(self, line: str) -> None:
        print(f"null: {line}", file=self.stream, flush=True)

    def init(self) -> None:
        if not self.ready:
            self._say(f"init chain {self.settings.chain} hooks {','.join(self.settings.hooks)}")
            self.ready = True

    def block(self, addrs: Iterable[str]) -> None:
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        for a in v4 + v6:
            if a not in self.entries:
                self.entries.add(a)
                self._say(f"block {a}")

    def release(self, addrs: Iterable[str]) -> None:
        v4, v6 = validate_addresses(addrs, ipv6=self.settings.ipv6)
        for a in v4 + v6:
            if a in self.entries:
                self.entries.discard(a)
                self._say(f"release {a}")

    def flush(self) -> None:
        self._say(f"flush {len(self.entries)} entries")
        self.entries.clear()

    def check(self) -> FirewallState:
        problems = [] if self.ready else ["not initialised"]
        return FirewallState(set(self.entries), {}, self.ready, problems)

    def close(self, teardown: bool = True) -> None:
        if teardown:
            self._say(f"teardown chain {self.settings.chain}")
            self.entries.clear()
            self.ready = False


BACKEND = NullBackend
