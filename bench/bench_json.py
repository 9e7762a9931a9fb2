"""Is orjson worth a dependency? jsonlines with json vs orjson on pipe-sized alerts.

Measures the pipe's encode (jsonlines.Writer with the dumps hook) and decode
(jsonlines.Reader with the loads hook) for 200,000 typical alert objects, with the
standard library's json and with orjson, in one run. Prints objects/s and the ratio.

Then banpipe's own pipe on the same objects (CPU time, best of 3): ``pipe.encode`` per
object and ``pipe.PipeReader`` (feed, finish, objects) on the bytes, from the
checkout's lib/ or from ``--lib DIR`` (another checkout's, to measure side by side).

    .venv/bin/python bench/bench_json.py [--lib OTHER/lib]
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import jsonlines
import orjson

ALERT = {
    "v": 1,
    "ts": "2026-11-28T09:58:01.104233",
    "gid": 1,
    "sid": 2003,
    "rev": 8,
    "msg": "ET SCAN Potential SSH Scan OUTBOUND",
    "classification": "Attempted Information Leak",
    "priority": 2,
    "proto": "TCP",
    "src": "203.0.113.7",
    "sport": 52626,
    "dst": "198.51.100.2",
    "dport": 22,
    "action": None,
    "refs": [],
    "format": "snort2-fast",
}
N = 200_000


def std_dumps(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def fast_dumps(obj):
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def bench_encode(dumps):
    objs = [dict(ALERT, sport=i % 65536) for i in range(N)]
    buf = io.BytesIO()
    w = jsonlines.Writer(buf, dumps=dumps)
    t = time.perf_counter()
    for o in objs:
        w.write(o)
    return N / (time.perf_counter() - t), buf.getvalue()


def bench_decode(loads, data):
    lines = data.splitlines()
    r = jsonlines.Reader(lines, loads=loads)
    t = time.perf_counter()
    n = sum(1 for _ in r)
    assert n == N
    return N / (time.perf_counter() - t)


def bench_pipe() -> tuple[float, float]:
    """banpipe.pipe's encode and PipeReader, objects/s in CPU time (best of 3)."""
    from banpipe import pipe

    objs = [dict(ALERT, sid=2000 + i % 500, src=f"192.0.2.{i % 250}") for i in range(N)]
    encode = pipe.encode

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.process_time()
            fn()
            times.append(time.process_time() - t)
        return N / min(times)

    data = b"".join(encode(o) for o in objs)

    def decode() -> None:
        reader = pipe.PipeReader()
        reader.feed(data)
        reader.finish()
        assert sum(1 for _ in reader.objects()) == N

    return best(lambda: [encode(o) for o in objs]), best(decode)


def main():
    args = sys.argv[1:]
    lib = args[1] if args[:1] == ["--lib"] and len(args) == 2 else None
    sys.path.insert(0, lib or str(Path(__file__).resolve().parents[1] / "lib"))
    enc_std, data = bench_encode(std_dumps)
    enc_fast, data2 = bench_encode(fast_dumps)
    assert data == data2, "orjson must produce the same bytes"
    dec_std = bench_decode(json.loads, data)
    dec_fast = bench_decode(orjson.loads, data)
    print(f"{'':10} {'json':>12} {'orjson':>12} {'ratio':>7}")
    print(f"{'encode/s':10} {enc_std:12,.0f} {enc_fast:12,.0f} {enc_fast / enc_std:6.2f}x")
    print(f"{'decode/s':10} {dec_std:12,.0f} {dec_fast:12,.0f} {dec_fast / dec_std:6.2f}x")
    enc_pipe, dec_pipe = bench_pipe()
    print(f"banpipe.pipe (CPU): encode {enc_pipe:,.0f}/s, PipeReader {dec_pipe:,.0f}/s")


if __name__ == "__main__":
    main()
