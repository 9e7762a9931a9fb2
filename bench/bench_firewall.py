"""Benchmark the firewall backends in a throwaway network namespace (needs root).

For each backend: a burst of N new addresses through one ``block()`` call (time until the
call returns, after which ``check()`` must list every one of them), then a restore of M
addresses (``init()`` + one bulk ``block()``, as banctl does at start) and the teardown
(``close()``); also ``check()`` and a single-address ``block()`` on the full firewall.
Prints a table; targets and figures are in bench/README.md ("Firewall backends").

Addresses are documentation addresses only: all 762 host addresses of 192.0.2.0/24,
198.51.100.0/24 and 203.0.113.0/24 first, then IPv6 addresses from 2001:db8::/32.

    /opt/bpvenv/bin/python bench/bench_firewall.py [--burst 10000] [--restore 100000]
        [--backends ipset,nftables,iptables] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from banpipe.firewall import FirewallSettings, SubprocessRunner, make_backend  # noqa: E402

V4_NETS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
V6_NET = ipaddress.ip_network("2001:db8:ba::/48")


def addresses(n: int, offset: int = 0) -> list[str]:
    """n distinct documentation addresses, starting at the offset-th one."""

    def gen() -> Iterator[str]:
        for net in V4_NETS:
            yield from (str(a) for a in ipaddress.ip_network(net).hosts())
        base = int(V6_NET.network_address)
        for i in itertools.count(1):
            yield str(ipaddress.IPv6Address(base + i))

    return list(itertools.islice(gen(), offset, offset + n))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_backend(name: str, ns: str, burst: int, restore: int) -> dict[str, float]:
    runner = SubprocessRunner(["ip", "netns", "exec", ns])
    backend = make_backend(name, FirewallSettings(), runner)
    out: dict[str, float] = {}
    try:
        backend.init()
        # Something already present, as on a live gateway: the burst lands on top of it.
        backend.block(addresses(100, offset=burst + restore))
        burst_addrs = addresses(burst)
        out["burst"] = timed(lambda: backend.block(burst_addrs))
        state = backend.check()
        missing = set(burst_addrs) - state.entries
        if missing or not state.structure_ok:
            raise SystemExit(f"{name}: burst incomplete: {len(missing)} missing {state.problems}")
        backend.close()

        restore_addrs = addresses(restore)

        def do_restore() -> None:
            backend.init()
            backend.block(restore_addrs)

        out["restore"] = timed(do_restore)
        t0 = time.perf_counter()
        state = backend.check()
        out["check"] = time.perf_counter() - t0
        if len(state.entries) != restore:
            raise SystemExit(f"{name}: restore holds {len(state.entries)} of {restore}")
        # One more ban on top of the full firewall: banctl's everyday call.
        one = addresses(1, offset=restore + burst + 100)
        out["one"] = timed(lambda: backend.block(one))
        out["teardown"] = timed(backend.close)
    finally:
        backend.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--restore", type=int, default=100_000)
    ap.add_argument("--backends", default="ipset,nftables,iptables")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_firewall: needs root", file=sys.stderr)
        return 77
    ns = f"bpbench{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for name in args.backends.split(","):
            for _ in range(args.repeat):
                results.setdefault(name, []).append(
                    bench_backend(name, ns, args.burst, args.restore)
                )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    cols = ("burst", "restore", "check", "one", "teardown")
    print(
        f"median of {args.repeat}; burst = {args.burst:,} new addresses in one block(); "
        f"restore = init + block({args.restore:,}); check = check() after restore; "
        "one = block() of 1 new address on top of that"
    )
    print(f"{'backend':<10}" + "".join(f"{c + ' s':>12}" for c in cols))
    for name, runs in results.items():
        med = {c: statistics.median(r[c] for r in runs) for c in cols}
        print(f"{name:<10}" + "".join(f"{med[c]:>12.3f}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
