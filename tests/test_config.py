"""banpipe.toml: one schema, exact errors naming file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from banpipe.config import (
    Config,
    ConfigError,
    FirewallConfig,
    load_config,
    parse_config,
    section_keys,
)
from banpipe.convert import parse_duration

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "banpipe.toml"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "b.toml")
    return str(info.value)


def test_the_bundled_example_config_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.network.wan == ("198.51.100.2",)
    assert cfg.filter.reverse_markers == ("BLOCKED DESTINATION",)
    assert cfg.ban.base == 3600 and cfg.ban.extend == (300, 1800)


def test_empty_config_means_defaults():
    assert parse_config("", "b.toml") == Config(path="b.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[filter]\n\npriorty = [1]\n", "b.toml:3: [filter] unknown key 'priorty'"),
        ("[filtr]\n", "b.toml:1: unknown section [filtr]"),
        ("[filter]\npriorities = 1\n", "b.toml:2: [filter] priorities: expected a list, got int"),
        ("[filter]\nrequire_ours = 'yes'\n", "b.toml:2: [filter] require_ours: expected true"),
        ("[network]\nwan = ['198.51.100.300']\n", "b.toml:2: [network] wan: item 1: not an IP"),
        ("[filter]\nignore = ['1:2:3']\n", "b.toml:2: [filter] ignore: item 1: not a rule pattern"),
        ("[filter]\nignore = ['1:9-2']\n", "b.toml:2: [filter] ignore: item 1: empty SID range"),
        ("[ban]\nbase = '1q'\n", "b.toml:2: [ban] base: not a duration: '1q'"),
        ("[ban]\nextend = ['30m', '5m']\n", "b.toml:2: [ban] extend: MIN is larger than MAX"),
        ("[firewall]\nbackend = 'pf'\n", "b.toml:2: [firewall] backend: expected one of"),
        ("[firewall]\nchain = 'a b'\n", "b.toml:2: [firewall] chain: not a usable"),
        ("[ban]\nbase = \n", "b.toml:2: not valid TOML"),
        # What the firewall backends or the ban policy would refuse later is refused here,
        # at load, with its line: one declaration of each setting (issue 8).
        ("[firewall]\n\nlog_rate = '0/minute'\n", "b.toml:3: [firewall] log_rate: expected"),
        ("[firewall]\nlog_prefix = 'a\"b'\n", "b.toml:2: [firewall] log_prefix: expected"),
        ("[firewall]\nchain = 'INPUT'\n", "b.toml:2: [firewall] chain: 'INPUT' is a built-in"),
        ("[firewall]\nhooks = []\n", "b.toml:2: [firewall] hooks: at least one hook"),
        ("[firewall]\nhooks = ['INPUT', 'INPUT']\n", "b.toml:2: [firewall] hooks: a hook is"),
        ("[firewall]\nset_v4 = 'x'\nset_v6 = 'x'\n", "b.toml:3: [firewall] set_v6: must differ"),
        ("[firewall]\nmax_entries = 0\n", "b.toml:2: [firewall] max_entries: expected 1 to"),
        ("[ban]\nbase = 0\n", "b.toml:2: [ban] base: must be more than 0"),
        ("[ban]\nbase = '2d'\nmax = '1d'\n", "b.toml:3: [ban] max: must not be less than base"),
        ("[ban]\nmax = '1h'\nbase = '2h'\n", "b.toml:2: [ban] max: must not be less than base"),
        ("[ban]\nrecidive_factor = 0.5\n", "b.toml:2: [ban] recidive_factor: must be at least"),
        ("[ban]\nrecidive_factor = nan\n", "b.toml:2: [ban] recidive_factor: expected a number"),
        ("[ban]\nretention = inf\n", "b.toml:2: [ban] retention: duration must not be"),
        ("[ban]\n\nmax = '30m'\n", "b.toml:3: [ban] max: must not be less than base"),
    ],
)
def test_errors_name_file_line_and_key(text, message):
    assert error_of(text).startswith(message)


def test_unknown_key_suggests_the_near_name():
    assert "did you mean 'require_ours'" in error_of("[filter]\nrequire_our = true\n")


@pytest.mark.parametrize(
    "value, seconds",
    [
        (90, 90),
        (1.5, 1.5),
        ("90", 90),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("7d", 604800),
        ("2w", 1209600),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "h", "5x", "-5", "1h 2q", True, -1, "5m1"])
def test_bad_durations(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d12h", 129600), ("1w", 604800),
     ("1.5h", 5400), (" 2 h ", 7200)],
)  # fmt: skip
def test_command_line_durations(text, seconds):
    # The same syntax as in the file; a command line (banctl ban --for) wants more than 0.
    assert parse_duration(text, positive=True) == seconds


@pytest.mark.parametrize("text", ["", "h", "2x", "-5", "0", "1h-", "m5", "nan", "inf"])
def test_command_line_durations_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text, positive=True)


def test_durations_in_the_file_follow_the_command_line_rules():
    # `banctl ban --for 1H` always worked; `base = "1H"` was an error.
    cfg = parse_config('[ban]\nbase = "1H"\nmax = "2D 12h"\n')
    assert (cfg.ban.base, cfg.ban.max) == (3600, 216000)


def test_the_firewall_section_is_what_the_backends_take():
    from banpipe.firewall import FirewallConfig as Backends

    cfg = parse_config("[firewall]\nhooks = ['INPUT', 'OUTPUT']\nlog_rate = '2/second'\n")
    assert Backends is FirewallConfig and isinstance(cfg.firewall, FirewallConfig)
    assert cfg.firewall.hooks == ("INPUT", "OUTPUT")


def test_networks_are_canonical():
    cfg = parse_config("[network]\nnetworks = ['192.168.1.7/24', '2001:DB8:1::/48', '10.0.0.1']\n")
    assert cfg.network.networks == ("192.168.1.0/24", "2001:db8:1::/48", "10.0.0.1/32")


def test_missing_explicit_file_is_an_error_and_missing_default_is_not(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml")
    monkeypatch.setattr("banpipe.config.DEFAULT_PATH", tmp_path / "absent.toml")
    assert load_config(None) == Config()


def test_every_section_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for section, keys in section_keys().items():
        assert f"[{section}]" in readme, section
        body = readme.split(f"\n[{section}]", 1)[1].split("\n[", 1)[0]
        for key in keys:
            assert f"\n{key} = " in body, f"[{section}] {key} not documented in README"


@pytest.mark.parametrize(
    ("text", "near"),
    [
        ("[filter]\npriorty = [1]\n", "priorities"),  # the README's own example
        ("[filter]\npriority = [1]\n", "priorities"),
        ("[filter]\nno_prio = 'act'\n", "no_priority"),
        ("[filter]\nwhitelist_file = []\n", "whitelist_files"),
        ("[ban]\nretension = '1d'\n", "retention"),
    ],
)
def test_typo_hint_prefers_the_key_with_the_same_start(text, near):
    assert f"(did you mean '{near}'?)" in error_of(text)
