"""Ban-duration policy: pure functions, explicit now and rng."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banpipe.bantime import (
    BanPolicy,
    extended_expiry,
    first_duration,
    format_expiry,
    format_remaining,
    initial_expiry,
    parse_duration,
)

NOW = 1_800_000_000.0
POLICY = BanPolicy(
    base=3600,
    extend_min=60,
    extend_max=600,
    max=86400,
    recidive_window=7 * 86400,
    recidive_factor=2,
)


class FixedRng:
    """Returns a fixed point of the range: 0.0 = low end, 1.0 = high end."""

    def __init__(self, where: float) -> None:
        self.where = where
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * self.where


def test_first_ban_lasts_base():
    assert initial_expiry(POLICY, NOW, 0) == NOW + 3600


@pytest.mark.parametrize(
    ("previous", "duration"),
    [(0, 3600), (1, 7200), (2, 14400), (4, 57600), (5, 86400), (50, 86400), (10_000, 86400)],
)
def test_recidive_factor_per_previous_ban_capped_by_max(previous, duration):
    assert first_duration(POLICY, previous) == duration


def test_factor_one_disables_recidive():
    p = BanPolicy(base=100, extend_min=0, extend_max=0, max=1000, recidive_factor=1)
    assert first_duration(p, 7) == 100


def test_extension_draws_from_the_configured_range():
    rng = FixedRng(0.5)
    assert extended_expiry(POLICY, NOW + 100, NOW, rng) == NOW + 100 + 330
    assert rng.calls == [(60, 600)]


def test_extension_is_capped_at_now_plus_max():
    near_cap = NOW + 86400 - 10
    assert extended_expiry(POLICY, near_cap, NOW, FixedRng(1.0)) == NOW + 86400


def test_extension_never_shortens_a_longer_ban():
    # a manual `--for 30d` is longer than max: a violation must not cut it down
    long = NOW + 30 * 86400
    assert extended_expiry(POLICY, long, NOW, FixedRng(1.0)) == long


def test_extension_of_a_lapsed_expiry_counts_from_now():
    assert extended_expiry(POLICY, NOW - 1000, NOW, FixedRng(0.0)) == NOW + 60


def test_permanent_stays_permanent():
    rng = FixedRng(0.5)
    assert extended_expiry(POLICY, None, NOW, rng) is None
    assert rng.calls == []


@given(
    expires=st.floats(min_value=NOW - 1e6, max_value=NOW + 1e7),
    where=st.floats(min_value=0, max_value=1),
)
def test_extension_properties(expires, where):
    got = extended_expiry(POLICY, expires, NOW, FixedRng(where))
    assert got >= expires
    assert got <= max(expires, NOW + POLICY.max)


def test_real_rng_stays_in_range():
    rng = random.Random(4)
    for _ in range(200):
        got = extended_expiry(POLICY, NOW + 10, NOW, rng)
        assert NOW + 70 <= got <= NOW + 610


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0},
        {"extend_min": 10, "extend_max": 5},
        {"base": 100, "max": 50},
        {"recidive_factor": 0.5},
    ],
)
def test_bad_policy_is_refused(kwargs):
    with pytest.raises(ValueError):
        BanPolicy(**kwargs)


def test_from_config_uses_the_ban_section():
    from banpipe.config import parse_config

    cfg = parse_config('[ban]\nbase = "10m"\nextend = ["1m", "2m"]\nmax = "1d"\n')
    p = BanPolicy.from_config(cfg.ban)
    assert (p.base, p.extend_min, p.extend_max, p.max) == (600, 60, 120, 86400)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d12h", 129600), ("1w", 604800),
     ("1.5h", 5400), (" 2 h ", 7200)],
)  # fmt: skip
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "-5", "0", "1h-", "m5", "nan", "inf"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (61, "1m01s"), (900, "15m"), (3660, "1h01m"), (90000, "1d01h")],
)
def test_format_remaining(seconds, text):
    assert format_remaining(seconds) == text


def test_format_expiry():
    assert format_expiry(None, NOW) == "permanent"
    assert format_expiry(NOW + 3600, NOW).endswith("(in 1h00m)")
    assert format_expiry(NOW - 1, NOW).endswith("(lapsed)")


def test_extensions_add_up_within_one_now_and_stop_at_the_cap():
    rng = FixedRng(0.5)
    assert extended_expiry(POLICY, NOW + 100, NOW, rng, 3) == NOW + 100 + 3 * 330
    assert rng.calls == [(60, 600)] * 3
    rng = FixedRng(1.0)
    assert extended_expiry(POLICY, NOW + 86400 - 700, NOW, rng, 5) == NOW + 86400
    assert len(rng.calls) == 2  # past the cap no draw can change anything
