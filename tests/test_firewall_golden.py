"""Golden-command tests: the exact argv and stdin each firewall backend issues.

A RecordingRunner stands in for the commands; listing commands are answered with text
captured from real iptables 1.8.9 (nf_tables), ipset 7.17 and nftables 1.0.6 runs in a
network namespace on the project machine.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import socket
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banpipe.firewall import (
    CommandNotFound,
    FirewallConfig,
    FirewallError,
    RecordingRunner,
    SubprocessRunner,
    canonical,
    conntrack_sources,
    make_backend,
    validate_addresses,
)

# --- real listings ------------------------------------------------------------------------

EMPTY = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n"

IPT_V4 = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N BANPIPE
-A INPUT -j BANPIPE
-A FORWARD -j BANPIPE
-A BANPIPE -s 203.0.113.7/32 -j DROP
-A BANPIPE -s 203.0.113.9/32 -j DROP
"""
IPT_V6 = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N BANPIPE
-A INPUT -j BANPIPE
-A FORWARD -j BANPIPE
-A BANPIPE -s 2001:db8:66::7/128 -j DROP
"""
IPT_V4_CHAIN = """\
-N BANPIPE
-A BANPIPE -s 203.0.113.7/32 -j DROP
-A BANPIPE -s 203.0.113.9/32 -j DROP
"""
IPT_V6_CHAIN = """\
-N BANPIPE
-A BANPIPE -s 2001:db8:66::7/128 -j DROP
"""
IPT_V4_CHAIN_LOG = """\
-N BANPIPE
-A BANPIPE -s 203.0.113.7/32 -m limit --limit 6/min -j LOG --log-prefix "banpipe: "
-A BANPIPE -s 203.0.113.7/32 -j DROP
-A BANPIPE -s 203.0.113.9/32 -m limit --limit 6/min -j LOG --log-prefix "banpipe: "
-A BANPIPE -s 203.0.113.9/32 -j DROP
"""
# Two copies of one DROP (written by hand), a network rule, only the INPUT jump.
IPT_V4_DUP = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N BANPIPE
-A INPUT -j BANPIPE
-A BANPIPE -s 203.0.113.7/32 -j DROP
-A BANPIPE -s 203.0.113.7/32 -j DROP
-A BANPIPE -s 203.0.113.8/32 -j DROP
-A BANPIPE -s 192.0.2.0/24 -j ACCEPT
"""
# After an external `iptables -F BANPIPE`.
IPT_V4_FLUSHED = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N BANPIPE
-A INPUT -j BANPIPE
-A FORWARD -j BANPIPE
"""

IPSET_V4_LISTING = """\
-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N BANPIPE
-A INPUT -j BANPIPE
-A FORWARD -j BANPIPE
-A BANPIPE -m set --match-set banpipe4 src -j DROP
-A BANPIPE -m set --match-set banpipe4net src -j DROP
"""
IPSET_V6_LISTING = IPSET_V4_LISTING.replace("banpipe4", "banpipe6")
IPSET_LOG_RULE = (
    '-m set --match-set banpipe4 src -m limit --limit 6/min -j LOG --log-prefix "banpipe: "'
)
IPSET_V4_LISTING_LOG = IPSET_V4_LISTING.replace(
    "-A BANPIPE -m set --match-set banpipe4 src",
    f"-A BANPIPE {IPSET_LOG_RULE}\n-A BANPIPE -m set --match-set banpipe4 src",
    1,
)
IPSET_SAVE_V4 = """\
create banpipe4 hash:ip family inet hashsize 65536 maxelem 1048576 bucketsize 12 initval 0x9a31977d
add banpipe4 203.0.113.7
add banpipe4 203.0.113.9
"""
IPSET_SAVE_V6 = """\
create banpipe6 hash:ip family inet6 hashsize 65536 maxelem 1048576 bucketsize 12 initval 0x6d98ffa6
add banpipe6 2001:db8:66::7
"""
IPSET_SAVE_V4_NET = (
    "create banpipe4net hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 "
    "initval 0x1c2d3e4f\nadd banpipe4net 198.51.100.0/24\n"
)
IPSET_SAVE_V6_NET = (
    "create banpipe6net hash:net family inet6 hashsize 1024 maxelem 1048576 bucketsize 12 "
    "initval 0x5e6f7a8b\n"
)
IPSET_SAVE_V6_WRONG = (
    "create banpipe6 hash:net family inet6 hashsize 1024 maxelem 65536 bucketsize 12 "
    "initval 0x510d5569\n"
)
IPSET_MISSING = subprocess.CompletedProcess(
    [], 1, "", "ipset v7.17: The set with the given name does not exist\n"
)

# `nft -j list table inet banpipe` output (captured after init + block), re-indented.
NFT_TABLE = """\
{
 "nftables": [
  {
   "metainfo": {
    "version": "1.0.6",
    "release_name": "Lester Gooch #5",
    "json_schema_version": 1
   }
  },
  {
   "table": {
    "family": "inet",
    "name": "banpipe",
    "handle": 1
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v4",
    "table": "banpipe",
    "type": "ipv4_addr",
    "handle": 1,
    "size": 1048576,
    "elem": [
     "203.0.113.7",
     "203.0.113.9"
    ]
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v4net",
    "table": "banpipe",
    "type": "ipv4_addr",
    "handle": 2,
    "size": 1048576,
    "flags": [
     "interval"
    ],
    "elem": [
     {
      "prefix": {
       "addr": "198.51.100.0",
       "len": 24
      }
     }
    ]
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v6",
    "table": "banpipe",
    "type": "ipv6_addr",
    "handle": 3,
    "size": 1048576,
    "elem": [
     "2001:db8:66::7"
    ]
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v6net",
    "table": "banpipe",
    "type": "ipv6_addr",
    "handle": 4,
    "size": 1048576,
    "flags": [
     "interval"
    ],
    "elem": [
     {
      "prefix": {
       "addr": "2001:db8:1::",
       "len": 64
      }
     }
    ]
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "banpipe",
    "name": "input",
    "handle": 5,
    "type": "filter",
    "hook": "input",
    "prio": -10,
    "policy": "accept"
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "banpipe",
    "name": "forward",
    "handle": 10,
    "type": "filter",
    "hook": "forward",
    "prio": -10,
    "policy": "accept"
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 6,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 7,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 8,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 9,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 11,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 12,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 13,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 14,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  }
 ]
}
"""
# The same after init with log = true (no elements).
NFT_TABLE_LOG = """\
{
 "nftables": [
  {
   "metainfo": {
    "version": "1.0.6",
    "release_name": "Lester Gooch #5",
    "json_schema_version": 1
   }
  },
  {
   "table": {
    "family": "inet",
    "name": "banpipe",
    "handle": 2
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v4",
    "table": "banpipe",
    "type": "ipv4_addr",
    "handle": 1,
    "size": 1048576
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v4net",
    "table": "banpipe",
    "type": "ipv4_addr",
    "handle": 2,
    "size": 1048576,
    "flags": [
     "interval"
    ]
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v6",
    "table": "banpipe",
    "type": "ipv6_addr",
    "handle": 3,
    "size": 1048576
   }
  },
  {
   "set": {
    "family": "inet",
    "name": "v6net",
    "table": "banpipe",
    "type": "ipv6_addr",
    "handle": 4,
    "size": 1048576,
    "flags": [
     "interval"
    ]
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "banpipe",
    "name": "input",
    "handle": 5,
    "type": "filter",
    "hook": "input",
    "prio": -10,
    "policy": "accept"
   }
  },
  {
   "chain": {
    "family": "inet",
    "table": "banpipe",
    "name": "forward",
    "handle": 14,
    "type": "filter",
    "hook": "forward",
    "prio": -10,
    "policy": "accept"
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 6,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 7,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 8,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 9,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 10,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 11,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 12,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "input",
    "handle": 13,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 15,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 16,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 17,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 18,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip",
         "field": "saddr"
        }
       },
       "right": "@v4net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 19,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 20,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6"
      }
     },
     {
      "drop": null
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 21,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "limit": {
       "rate": 6,
       "burst": 5,
       "per": "minute"
      }
     },
     {
      "log": {
       "prefix": "banpipe: "
      }
     }
    ]
   }
  },
  {
   "rule": {
    "family": "inet",
    "table": "banpipe",
    "chain": "forward",
    "handle": 22,
    "expr": [
     {
      "match": {
       "op": "==",
       "left": {
        "payload": {
         "protocol": "ip6",
         "field": "saddr"
        }
       },
       "right": "@v6net"
      }
     },
     {
      "drop": null
     }
    ]
   }
  }
 ]
}
"""
NFT_MISSING = subprocess.CompletedProcess(
    [], 1, "", "Error: No such file or directory\nlist table inet banpipe\n"
)

IPT_RESTORE = ("iptables-restore", "-w", "--noflush")
IP6T_RESTORE = ("ip6tables-restore", "-w", "--noflush")


def calls(runner: RecordingRunner) -> list[tuple[tuple[str, ...], str | None]]:
    return [(c.argv, c.input) for c in runner.calls]


def backend(name, responses=None, **kw):
    runner = RecordingRunner(responses if responses is not None else {})
    return make_backend(name, FirewallConfig(**kw), runner), runner


# --- runners ------------------------------------------------------------------------------


def test_recording_runner_records_and_answers():
    r = RecordingRunner({("a", "b"): "out", "c d": subprocess.CompletedProcess([], 2, "", "bad")})
    assert r(["a", "b"], input="in").stdout == "out"
    assert r(["x"]).stdout == ""
    with pytest.raises(FirewallError, match=r"c d: exit 2: bad"):
        r(["c", "d"])
    assert r(["c", "d"], check=False).returncode == 2
    assert calls(r) == [(("a", "b"), "in"), (("x",), None), (("c", "d"), None), (("c", "d"), None)]


def test_subprocess_runner_passes_input_and_reports_stderr():
    r = SubprocessRunner()
    assert r(["cat"], input="hello\n").stdout == "hello\n"
    with pytest.raises(FirewallError, match=r"sh -c .*: exit 3: it broke"):
        r(["sh", "-c", "echo it broke >&2; exit 3"])
    assert r(["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(CommandNotFound):
        r(["banpipe-no-such-program"])
    assert SubprocessRunner(["env", "X=1"])(["sh", "-c", 'echo "$X"']).stdout == "1\n"


# --- validation and settings --------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "203.0.113.07",
        "2001:DB8::7",
        "2001:db8:0:0:0:0:0:7",
        "fe80::1%eth0",
        "203.0.113.7/24",  # host bits: the range is 203.0.113.0/24 (a range is fine)
        "203.0.113.0/024",
        "2001:db8::/129",
        "203.0.113.7/32",
        " 203.0.113.7",
        "203.0.113.7\n-A INPUT -j ACCEPT",
        "203.0.113.7; rm -rf /",
        "",
        "banpipe",
        7,
        None,
    ],
)
@pytest.mark.parametrize("name", ["iptables", "ipset", "nftables", "null"])
def test_invalid_address_rejected_before_any_command(name, bad):
    fw, runner = backend(name)
    for call in (fw.block, fw.release):
        with pytest.raises(FirewallError):
            call(["203.0.113.7", bad])
    assert runner.calls == []


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses())
def test_every_canonical_address_is_accepted_as_is(ip):
    ip = getattr(ip, "ipv4_mapped", None) or ip  # an IPv4-mapped address is IPv4 (address.py)
    text = str(ip)
    v4, v6 = validate_addresses([text])
    assert v4 + v6 == [text]
    assert canonical(text) == text
    assert canonical(f"{text}/{ip.max_prefixlen}") == text


@settings(max_examples=300, deadline=None)
@given(st.ip_addresses(v=6))
def test_listing_spellings_map_to_the_python_canonical_form(ip):
    # Firewalls print addresses through libc; check() must report Python's spelling.
    libc = socket.inet_ntop(socket.AF_INET6, ip.packed)
    assert canonical(f"{libc}/128") == str(ip.ipv4_mapped or ip)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789abcdefABCDEF:.%/ -")))
def test_only_canonical_address_text_gets_through(text):
    try:
        v4, v6 = validate_addresses([text])
    except FirewallError:
        return
    assert v4 + v6 == [text]
    if "/" in text:  # a range: canonical network text, more than one address
        net = ipaddress.ip_network(text)
        assert str(net) == text and net.prefixlen < net.max_prefixlen
        assert not (net.version == 6 and net.subnet_of(ipaddress.ip_network("::ffff:0:0/96")))
    else:
        assert str(ipaddress.ip_address(text)) == text


def test_one_string_is_not_an_address_list():
    with pytest.raises(FirewallError, match="not one string"):
        validate_addresses("203.0.113.7")


@pytest.mark.parametrize("name", ["iptables", "ipset", "nftables", "null"])
def test_ipv6_disabled_rejects_v6_and_touches_only_v4(name):
    fw, runner = backend(name, {"iptables -w -S": EMPTY}, ipv6=False)
    with pytest.raises(FirewallError, match="IPv6 is disabled"):
        fw.block(["203.0.113.7", "2001:db8:66::7"])
    assert runner.calls == []
    fw.init()
    assert all(
        "ip6tables" not in c.argv[0] and "inet6" not in (c.input or "") for c in runner.calls
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"chain": "BAN PIPE"},
        {"chain": "INPUT"},
        {"hooks": ("INPUT", "PREROUTING")},
        {"hooks": ()},
        {"hooks": ("INPUT", "INPUT")},
        {"set_v4": "x;y"},
        {"set_v4": "same", "set_v6": "same"},
        {"table": "-t"},
        {"log_prefix": 'a"b'},
        {"log_prefix": "x" * 30},
        {"log_prefix": "a\nb"},
        {"log_rate": "6/fortnight"},
        {"log_rate": "0/minute"},
    ],
)
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        FirewallConfig(**kw)


def test_settings_accept_a_list_of_hooks():
    assert FirewallConfig(hooks=["INPUT"]).hooks == ("INPUT",)


def test_unknown_backend():
    with pytest.raises(FirewallError, match="unknown firewall backend 'pf'"):
        make_backend("pf", FirewallConfig(), RecordingRunner())


# --- null ---------------------------------------------------------------------------------


def test_null_prints_each_action_and_keeps_state():
    out = io.StringIO()
    fw = make_backend("null", FirewallConfig(), RecordingRunner(), stream=out)
    assert fw.check().structure_ok is False
    fw.init()
    fw.block(["203.0.113.7", "2001:db8:66::7", "203.0.113.7"])
    fw.block(["203.0.113.7"])
    fw.release(["203.0.113.7", "203.0.113.200"])
    state = fw.check()
    assert state.entries == {"2001:db8:66::7"} and state.structure_ok and not state.duplicates
    fw.flush()
    fw.close()
    assert out.getvalue().splitlines() == [
        "null: init chain BANPIPE hooks INPUT,FORWARD",
        "null: block 203.0.113.7",
        "null: block 2001:db8:66::7",
        "null: release 203.0.113.7",
        "null: flush 1 entries",
        "null: teardown chain BANPIPE",
    ]
    assert fw.check().entries == set()


# --- iptables -----------------------------------------------------------------------------


def test_iptables_init_creates_chain_and_jumps():
    fw, r = backend("iptables", {"iptables -w -S": EMPTY, "ip6tables -w -S": EMPTY})
    fw.init()
    script = "*filter\n:BANPIPE - [0:0]\n-I INPUT 1 -j BANPIPE\n-I FORWARD 1 -j BANPIPE\nCOMMIT\n"
    assert calls(r) == [
        (("iptables", "-w", "-S"), None),
        (IPT_RESTORE, script),
        (("ip6tables", "-w", "-S"), None),
        (IP6T_RESTORE, script),
    ]


def test_iptables_init_is_idempotent():
    fw, r = backend("iptables", {"iptables -w -S": IPT_V4, "ip6tables -w -S": IPT_V6})
    fw.init()
    assert calls(r) == [(("iptables", "-w", "-S"), None), (("ip6tables", "-w", "-S"), None)]


def test_iptables_hooks_configurable_and_stale_jump_removed():
    fw, r = backend(
        "iptables", {"iptables -w -S": IPT_V4, "ip6tables -w -S": EMPTY}, hooks=("INPUT", "OUTPUT")
    )
    fw.init()
    assert calls(r) == [
        (("iptables", "-w", "-S"), None),
        (IPT_RESTORE, "*filter\n-D FORWARD -j BANPIPE\n-I OUTPUT 1 -j BANPIPE\nCOMMIT\n"),
        (("ip6tables", "-w", "-S"), None),
        (
            IP6T_RESTORE,
            "*filter\n:BANPIPE - [0:0]\n-I INPUT 1 -j BANPIPE\n-I OUTPUT 1 -j BANPIPE\nCOMMIT\n",
        ),
    ]


def test_iptables_block_adds_only_missing_one_restore_per_family():
    fw, r = backend(
        "iptables",
        {"iptables -w -S BANPIPE": IPT_V4_CHAIN, "ip6tables -w -S BANPIPE": IPT_V6_CHAIN},
    )
    fw.block(["203.0.113.7", "2001:db8:66::8", "203.0.113.8", "2001:db8:66::7", "203.0.113.8"])
    assert calls(r) == [
        (("iptables", "-w", "-S", "BANPIPE"), None),
        (IPT_RESTORE, "*filter\n-A BANPIPE -s 203.0.113.8/32 -j DROP\nCOMMIT\n"),
        (("ip6tables", "-w", "-S", "BANPIPE"), None),
        (IP6T_RESTORE, "*filter\n-A BANPIPE -s 2001:db8:66::8/128 -j DROP\nCOMMIT\n"),
    ]


def test_iptables_block_of_present_addresses_changes_nothing():
    fw, r = backend("iptables", {"iptables -w -S BANPIPE": IPT_V4_CHAIN})
    fw.block(["203.0.113.9", "203.0.113.7"])
    assert calls(r) == [(("iptables", "-w", "-S", "BANPIPE"), None)]


def test_iptables_block_with_log_puts_log_before_drop():
    fw, r = backend(
        "iptables",
        {"iptables -w -S BANPIPE": "-N BANPIPE\n"},
        log=True,
        log_prefix="bp: ",
        log_rate="2/second",
    )
    fw.block(["203.0.113.8"])
    assert calls(r)[1] == (
        IPT_RESTORE,
        "*filter\n"
        '-A BANPIPE -s 203.0.113.8/32 -m limit --limit 2/sec -j LOG --log-prefix "bp: "\n'
        "-A BANPIPE -s 203.0.113.8/32 -j DROP\n"
        "COMMIT\n",
    )


def test_iptables_block_without_chain_fails():
    missing = subprocess.CompletedProcess(
        [], 1, "", "iptables v1.8.9 (nf_tables): chain `BANPIPE' in table `filter' is incompatible"
    )
    fw, r = backend("iptables", {"iptables -w -S BANPIPE": missing})
    with pytest.raises(FirewallError, match="iptables -w -S BANPIPE: exit 1: .*BANPIPE"):
        fw.block(["203.0.113.8"])
    assert len(r.calls) == 1


def test_iptables_release_deletes_every_rule_of_present_addresses():
    fw, r = backend("iptables", {"iptables -w -S BANPIPE": IPT_V4_CHAIN_LOG})
    fw.release(["203.0.113.7", "203.0.113.200"])
    assert calls(r) == [
        (("iptables", "-w", "-S", "BANPIPE"), None),
        (
            IPT_RESTORE,
            "*filter\n"
            '-D BANPIPE -s 203.0.113.7/32 -m limit --limit 6/min -j LOG --log-prefix "banpipe: "\n'
            "-D BANPIPE -s 203.0.113.7/32 -j DROP\n"
            "COMMIT\n",
        ),
    ]


def test_iptables_release_removes_duplicates_and_ignores_absent():
    chain = "".join(line + "\n" for line in IPT_V4_DUP.splitlines() if "BANPIPE -" in line)
    fw, r = backend("iptables", {"iptables -w -S BANPIPE": "-N BANPIPE\n" + chain})
    fw.release(["203.0.113.7"])
    assert calls(r)[1][1] == (
        "*filter\n"
        "-D BANPIPE -s 203.0.113.7/32 -j DROP\n-D BANPIPE -s 203.0.113.7/32 -j DROP\n"
        "COMMIT\n"
    )
    fw2, r2 = backend("iptables", {"iptables -w -S BANPIPE": IPT_V4_CHAIN})
    fw2.release(["203.0.113.200"])
    assert len(r2.calls) == 1


def test_iptables_flush():
    fw, r = backend("iptables")
    fw.flush()
    assert r.argvs == [["iptables", "-w", "-F", "BANPIPE"], ["ip6tables", "-w", "-F", "BANPIPE"]]


def test_iptables_check_parses_listing():
    fw, r = backend("iptables", {"iptables -w -S": IPT_V4, "ip6tables -w -S": IPT_V6})
    state = fw.check()
    assert state.entries == {"203.0.113.7", "203.0.113.9", "2001:db8:66::7"}
    assert state.duplicates == {} and state.structure_ok and state.problems == []
    assert r.argvs == [["iptables", "-w", "-S"], ["ip6tables", "-w", "-S"]]


def test_iptables_check_reports_duplicates_missing_jump_and_foreign_rules():
    fw, _ = backend("iptables", {"iptables -w -S": IPT_V4_DUP, "ip6tables -w -S": IPT_V6})
    state = fw.check()
    assert state.entries == {"203.0.113.7", "203.0.113.8", "2001:db8:66::7"}
    assert state.duplicates == {"203.0.113.7": 2}
    assert state.structure_ok is False
    assert "iptables: jump FORWARD -> BANPIPE missing" in state.problems
    assert any("foreign rule" in p and "192.0.2.0/24" in p for p in state.problems)


def test_iptables_check_after_external_flush_and_after_teardown():
    fw, _ = backend("iptables", {"iptables -w -S": IPT_V4_FLUSHED, "ip6tables -w -S": IPT_V6})
    state = fw.check()
    assert state.entries == {"2001:db8:66::7"} and state.structure_ok
    fw, _ = backend("iptables", {"iptables -w -S": EMPTY, "ip6tables -w -S": EMPTY})
    state = fw.check()
    assert state.entries == set() and state.structure_ok is False
    assert "iptables: chain BANPIPE missing" in state.problems


def test_iptables_close_removes_jumps_and_chain():
    fw, r = backend("iptables", {"iptables -w -S": IPT_V4, "ip6tables -w -S": EMPTY})
    fw.close()
    assert calls(r) == [
        (("iptables", "-w", "-S"), None),
        (
            IPT_RESTORE,
            "*filter\n-D INPUT -j BANPIPE\n-D FORWARD -j BANPIPE\n-F BANPIPE\n-X BANPIPE\nCOMMIT\n",
        ),
        (("ip6tables", "-w", "-S"), None),
    ]


def test_close_without_teardown_leaves_everything():
    for name in ("iptables", "ipset", "nftables"):
        fw, r = backend(name)
        fw.close(teardown=False)
        assert r.calls == []


# --- conntrack ----------------------------------------------------------------------------


# `conntrack -L` in the gateway namespace after a ping from 203.0.113.8 and 2001:db8:66::8
# and a TCP connect from 203.0.113.8.
CONNTRACK_L = (
    "icmp     1 29 src=203.0.113.8 dst=198.51.100.2 type=8 code=0 id=6107 src=198.51.100.2 "
    "dst=203.0.113.8 type=0 code=0 id=6107 mark=0 use=1\n"
    "icmpv6   58 29 src=2001:db8:66::8 dst=2001:db8:1::2 type=128 code=0 id=6108 "
    "src=2001:db8:1::2 dst=2001:db8:66::8 type=129 code=0 id=6108 mark=0 use=1\n"
    "tcp      6 119 TIME_WAIT src=203.0.113.8 dst=198.51.100.2 sport=57207 dport=8080 "
    "src=198.51.100.2 dst=203.0.113.8 sport=8080 dport=57207 [ASSURED] mark=0 use=1\n"
)
CT_NONE = subprocess.CompletedProcess(
    [], 1, "", "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"
)


def test_conntrack_sources_are_original_direction_only():
    assert conntrack_sources(CONNTRACK_L) == {"203.0.113.8", "2001:db8:66::8"}


def test_conntrack_flush_for_new_addresses_with_flows_only(caplog):
    fw, r = backend(
        "iptables",
        {
            "iptables -w -S BANPIPE": IPT_V4_CHAIN,
            "ip6tables -w -S BANPIPE": "-N BANPIPE\n",
            "conntrack -L": CONNTRACK_L,
            "conntrack -D -s 2001:db8:66::8": CT_NONE,  # gone meanwhile: exit 1 is fine
        },
        conntrack_flush=True,
    )
    with caplog.at_level(logging.WARNING, "banpipe.firewall"):
        # .7 is already blocked, .9 and ::9 have no flows.
        fw.block(["203.0.113.7", "203.0.113.8", "203.0.113.9", "2001:db8:66::8", "2001:db8:66::9"])
    assert r.argvs[4:] == [
        ["conntrack", "-L"],
        ["conntrack", "-D", "-s", "203.0.113.8"],
        ["conntrack", "-D", "-s", "2001:db8:66::8"],
    ]
    assert caplog.records == []


def test_conntrack_missing_warns_once_and_does_not_fail(caplog):
    def responses(argv, _input):
        if argv[0] == "conntrack":
            raise CommandNotFound("conntrack: command not found")
        return "-N BANPIPE\n" if argv[-1] == "BANPIPE" else None

    fw, r = backend("iptables", responses, conntrack_flush=True)
    with caplog.at_level(logging.WARNING, "banpipe.firewall"):
        fw.block(["203.0.113.7", "203.0.113.8"])
        fw.block(["203.0.113.9"])
    assert [a for a in r.argvs if a[0] == "conntrack"] == [["conntrack", "-L"]]
    assert len([rec for rec in caplog.records if "conntrack not found" in rec.message]) == 1


def test_conntrack_failures_warn_but_do_not_fail(caplog):
    broken = subprocess.CompletedProcess([], 2, "", "conntrack: Operation failed: denied\n")
    fw, _ = backend(
        "ipset",
        {"conntrack -L": CONNTRACK_L, "conntrack -D -s 203.0.113.8": broken},
        conntrack_flush=True,
    )
    fw2, _ = backend("ipset", {"conntrack -L": broken}, conntrack_flush=True)
    with caplog.at_level(logging.WARNING, "banpipe.firewall"):
        fw.block(["203.0.113.8"])
        fw2.block(["203.0.113.8"])
    assert [rec.getMessage().split(":")[0] for rec in caplog.records] == [
        "conntrack -D failed for 1 address(es), first 203.0.113.8",
        "conntrack -L failed",
    ]


@pytest.mark.parametrize("name", ["ipset", "nftables"])
def test_conntrack_off_means_no_listing_before_block(name):
    fw, r = backend(name)
    fw.block(["203.0.113.7"])
    assert len(r.calls) == 1


def test_ipset_conntrack_flush_reads_set_first():
    fw, r = backend(
        "ipset",
        {
            "ipset save banpipe4": IPSET_SAVE_V4,
            "ipset save banpipe6": IPSET_SAVE_V6,
            "conntrack -L": CONNTRACK_L,
        },
        conntrack_flush=True,
    )
    fw.block(["203.0.113.7", "203.0.113.8"])
    assert r.argvs == [
        ["ipset", "save", "banpipe4"],
        ["ipset", "restore"],
        ["conntrack", "-L"],
        ["conntrack", "-D", "-s", "203.0.113.8"],
    ]


def test_nftables_conntrack_flush_reads_set_first():
    listing = json.dumps(
        {"nftables": [{"set": {"name": "v6", "type": "ipv6_addr", "elem": ["2001:db8:66::7"]}}]}
    )
    fw, r = backend(
        "nftables",
        {"nft -j list set inet banpipe v6": listing, "conntrack -L": CONNTRACK_L},
        conntrack_flush=True,
    )
    fw.block(["2001:db8:66::7", "2001:db8:66::8"])
    assert r.argvs == [
        ["nft", "-j", "list", "set", "inet", "banpipe", "v6"],
        ["nft", "-f", "-"],
        ["conntrack", "-L"],
        ["conntrack", "-D", "-s", "2001:db8:66::8"],
    ]


# --- ipset --------------------------------------------------------------------------------

IPSET_CREATE = (
    "create -exist banpipe4 hash:ip family inet hashsize 65536 maxelem 1048576\n"
    "create -exist banpipe4net hash:net family inet hashsize 1024 maxelem 1048576\n"
    "create -exist banpipe6 hash:ip family inet6 hashsize 65536 maxelem 1048576\n"
    "create -exist banpipe6net hash:net family inet6 hashsize 1024 maxelem 1048576\n"
)


def test_ipset_init_creates_sets_chain_rule_and_jumps():
    fw, r = backend("ipset", {"iptables -w -S": EMPTY, "ip6tables -w -S": EMPTY})
    fw.init()
    assert calls(r) == [
        (("ipset", "restore"), IPSET_CREATE),
        (("iptables", "-w", "-S"), None),
        (
            IPT_RESTORE,
            "*filter\n:BANPIPE - [0:0]\n-I INPUT 1 -j BANPIPE\n-I FORWARD 1 -j BANPIPE\n"
            "-A BANPIPE -m set --match-set banpipe4 src -j DROP\n"
            "-A BANPIPE -m set --match-set banpipe4net src -j DROP\nCOMMIT\n",
        ),
        (("ip6tables", "-w", "-S"), None),
        (
            IP6T_RESTORE,
            "*filter\n:BANPIPE - [0:0]\n-I INPUT 1 -j BANPIPE\n-I FORWARD 1 -j BANPIPE\n"
            "-A BANPIPE -m set --match-set banpipe6 src -j DROP\n"
            "-A BANPIPE -m set --match-set banpipe6net src -j DROP\nCOMMIT\n",
        ),
    ]


def test_ipset_init_is_idempotent():
    fw, r = backend(
        "ipset", {"iptables -w -S": IPSET_V4_LISTING, "ip6tables -w -S": IPSET_V6_LISTING}
    )
    fw.init()
    assert [c.argv[0] for c in r.calls] == ["ipset", "iptables", "ip6tables"]


def test_ipset_init_turns_logging_on_by_rewriting_our_chain():
    fw, r = backend(
        "ipset",
        {"iptables -w -S": IPSET_V4_LISTING, "ip6tables -w -S": IPSET_V6_LISTING},
        log=True,
        hooks=("INPUT",),
    )
    fw.init()
    assert calls(r)[2] == (
        IPT_RESTORE,
        "*filter\n-D FORWARD -j BANPIPE\n-F BANPIPE\n"
        f"-A BANPIPE {IPSET_LOG_RULE}\n"
        "-A BANPIPE -m set --match-set banpipe4 src -j DROP\n"
        f"-A BANPIPE {IPSET_LOG_RULE.replace('banpipe4', 'banpipe4net')}\n"
        "-A BANPIPE -m set --match-set banpipe4net src -j DROP\nCOMMIT\n",
    )


def test_ipset_block_release_flush_are_one_restore_each():
    fw, r = backend("ipset")
    fw.block(["203.0.113.7", "2001:db8:66::7", "203.0.113.8", "203.0.113.7", "198.51.100.0/24"])
    fw.release(["2001:db8:66::7", "203.0.113.200", "2001:db8:1::/64"])
    fw.flush()
    assert calls(r) == [
        (
            ("ipset", "restore"),
            IPSET_CREATE + "add -exist banpipe4 203.0.113.7\nadd -exist banpipe4 203.0.113.8\n"
            "add -exist banpipe4net 198.51.100.0/24\nadd -exist banpipe6 2001:db8:66::7\n",
        ),
        (
            ("ipset", "restore"),
            IPSET_CREATE + "del -exist banpipe4 203.0.113.200\n"
            "del -exist banpipe6 2001:db8:66::7\ndel -exist banpipe6net 2001:db8:1::/64\n",
        ),
        (
            ("ipset", "restore"),
            "flush banpipe4\nflush banpipe4net\nflush banpipe6\nflush banpipe6net\n",
        ),
    ]


def test_ipset_custom_set_names():
    fw, r = backend("ipset", set_v4="ban4", set_v6="ban6")
    fw.block(["203.0.113.7", "2001:db8:66::7"])
    assert r.calls[0].input.splitlines() == [
        "create -exist ban4 hash:ip family inet hashsize 65536 maxelem 1048576",
        "create -exist ban4net hash:net family inet hashsize 1024 maxelem 1048576",
        "create -exist ban6 hash:ip family inet6 hashsize 65536 maxelem 1048576",
        "create -exist ban6net hash:net family inet6 hashsize 1024 maxelem 1048576",
        "add -exist ban4 203.0.113.7",
        "add -exist ban6 2001:db8:66::7",
    ]


def test_ipset_check_parses_save_and_listing():
    fw, r = backend(
        "ipset",
        {
            "ipset save banpipe4": IPSET_SAVE_V4,
            "ipset save banpipe4net": IPSET_SAVE_V4_NET,
            "ipset save banpipe6": IPSET_SAVE_V6,
            "ipset save banpipe6net": IPSET_SAVE_V6_NET,
            "iptables -w -S": IPSET_V4_LISTING,
            "ip6tables -w -S": IPSET_V6_LISTING,
        },
    )
    state = fw.check()
    assert state.entries == {"203.0.113.7", "203.0.113.9", "2001:db8:66::7", "198.51.100.0/24"}
    assert state.structure_ok and state.problems == [] and state.duplicates == {}
    assert r.argvs == [
        ["ipset", "save", "banpipe4"],
        ["ipset", "save", "banpipe4net"],
        ["ipset", "save", "banpipe6"],
        ["ipset", "save", "banpipe6net"],
        ["iptables", "-w", "-S"],
        ["ip6tables", "-w", "-S"],
    ]


def test_ipset_check_detects_missing_set_wrong_type_and_missing_rule():
    fw, _ = backend(
        "ipset",
        {
            "ipset save banpipe4": IPSET_MISSING,
            "ipset save banpipe6": IPSET_SAVE_V6_WRONG,
            "iptables -w -S": IPSET_V4_LISTING_LOG,
            "ip6tables -w -S": IPT_V4_FLUSHED,
        },
    )
    state = fw.check()
    assert state.entries == set() and state.structure_ok is False
    text = "\n".join(state.problems)
    assert "ipset: set banpipe4 missing" in text
    assert "banpipe6 is not hash:ip family inet6" in text
    assert "iptables: chain BANPIPE holds" in text  # a LOG rule while log is off
    assert "ip6tables: chain BANPIPE holds []" in text


def test_ipset_close_removes_rules_then_destroys_only_our_sets():
    fw, r = backend(
        "ipset",
        {
            "iptables -w -S": IPSET_V4_LISTING,
            "ip6tables -w -S": IPSET_V6_LISTING,
            "ipset list -n": "other\nbanpipe4\n",
        },
    )
    fw.close()
    teardown = (
        "*filter\n-D INPUT -j BANPIPE\n-D FORWARD -j BANPIPE\n-F BANPIPE\n-X BANPIPE\nCOMMIT\n"
    )
    assert calls(r) == [
        (("iptables", "-w", "-S"), None),
        (IPT_RESTORE, teardown),
        (("ip6tables", "-w", "-S"), None),
        (IP6T_RESTORE, teardown),
        (("ipset", "list", "-n"), None),
        (("ipset", "restore"), "destroy banpipe4\n"),
    ]


# --- nftables -----------------------------------------------------------------------------

NFT = ("nft", "-f", "-")
NFT_INIT = """\
add table inet banpipe
add set inet banpipe v4 { type ipv4_addr; size 1048576; }
add set inet banpipe v4net { type ipv4_addr; flags interval; size 1048576; }
add set inet banpipe v6 { type ipv6_addr; size 1048576; }
add set inet banpipe v6net { type ipv6_addr; flags interval; size 1048576; }
add chain inet banpipe input { type filter hook input priority filter - 10; policy accept; }
flush chain inet banpipe input
add rule inet banpipe input ip saddr @v4 drop
add rule inet banpipe input ip saddr @v4net drop
add rule inet banpipe input ip6 saddr @v6 drop
add rule inet banpipe input ip6 saddr @v6net drop
add chain inet banpipe forward { type filter hook forward priority filter - 10; policy accept; }
flush chain inet banpipe forward
add rule inet banpipe forward ip saddr @v4 drop
add rule inet banpipe forward ip saddr @v4net drop
add rule inet banpipe forward ip6 saddr @v6 drop
add rule inet banpipe forward ip6 saddr @v6net drop
add chain inet banpipe output { type filter hook output priority filter - 10; policy accept; }
flush chain inet banpipe output
delete chain inet banpipe output
"""


def test_nftables_init_is_one_transaction():
    fw, r = backend("nftables")
    fw.init()
    assert calls(r) == [(NFT, NFT_INIT)]


def chain_spec(hook):
    return f"type filter hook {hook} priority filter - 10; policy accept;"


def test_nftables_init_with_log_hooks_and_table():
    fw, r = backend("nftables", log=True, hooks=("FORWARD",), table="bp", ipv6=False)
    fw.init()
    assert calls(r) == [
        (
            NFT,
            "add table inet bp\n"
            "add set inet bp v4 { type ipv4_addr; size 1048576; }\n"
            "add set inet bp v4net { type ipv4_addr; flags interval; size 1048576; }\n"
            f"add chain inet bp input {{ {chain_spec('input')} }}\n"
            "flush chain inet bp input\n"
            "delete chain inet bp input\n"
            f"add chain inet bp forward {{ {chain_spec('forward')} }}\n"
            "flush chain inet bp forward\n"
            'add rule inet bp forward ip saddr @v4 limit rate 6/minute log prefix "banpipe: "\n'
            "add rule inet bp forward ip saddr @v4 drop\n"
            'add rule inet bp forward ip saddr @v4net limit rate 6/minute log prefix "banpipe: "\n'
            "add rule inet bp forward ip saddr @v4net drop\n"
            f"add chain inet bp output {{ {chain_spec('output')} }}\n"
            "flush chain inet bp output\n"
            "delete chain inet bp output\n"
            "add set inet bp v6 { type ipv6_addr; }\n"
            "delete set inet bp v6\n"
            "add set inet bp v6net { type ipv6_addr; flags interval; }\n"
            "delete set inet bp v6net\n",
        )
    ]


def test_nftables_block_release_flush_close():
    fw, r = backend("nftables")
    fw.block(["203.0.113.7", "2001:db8:66::7", "203.0.113.8", "203.0.113.7"])
    fw.release(["203.0.113.7"])
    fw.flush()
    fw.close()
    assert calls(r) == [
        (
            NFT,
            "add element inet banpipe v4 { 203.0.113.7, 203.0.113.8 }\n"
            "add element inet banpipe v6 { 2001:db8:66::7 }\n",
        ),
        (
            NFT,
            "add element inet banpipe v4 { 203.0.113.7 }\n"
            "delete element inet banpipe v4 { 203.0.113.7 }\n",
        ),
        (
            NFT,
            "flush set inet banpipe v4\nflush set inet banpipe v4net\n"
            "flush set inet banpipe v6\nflush set inet banpipe v6net\n",
        ),
        (NFT, "add table inet banpipe\ndelete table inet banpipe\n"),
    ]


def test_nftables_big_burst_is_still_one_transaction():
    fw, r = backend("nftables")
    fw.block([f"2001:db8:66::{i:x}" for i in range(1, 2501)])
    assert len(r.calls) == 1
    lines = r.calls[0].input.splitlines()
    assert len(lines) == 3 and lines[0].count(",") == 999 and lines[2].count(",") == 499


def test_nftables_check_parses_json():
    fw, r = backend("nftables", {"nft -j list table inet banpipe": NFT_TABLE})
    state = fw.check()
    assert state.entries == {
        "203.0.113.7",
        "203.0.113.9",
        "2001:db8:66::7",
        "198.51.100.0/24",
        "2001:db8:1::/64",
    }
    assert state.structure_ok and state.problems == [] and state.duplicates == {}
    assert r.argvs == [["nft", "-j", "list", "table", "inet", "banpipe"]]


def test_nftables_check_missing_table_and_wrong_rules():
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": NFT_MISSING})
    state = fw.check()
    assert state == type(state)(set(), {}, False, ["nftables: table inet banpipe missing"])
    # log=True but the chains hold only the drop rules.
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": NFT_TABLE}, log=True)
    state = fw.check()
    assert state.structure_ok is False and state.entries == {
        "203.0.113.7",
        "203.0.113.9",
        "2001:db8:66::7",
        "198.51.100.0/24",
        "2001:db8:1::/64",
    }
    assert any(p.startswith("nftables: chain input holds") for p in state.problems)


def test_nftables_check_with_log_rule():
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": NFT_TABLE_LOG}, log=True)
    state = fw.check()
    assert state.structure_ok, state.problems
    assert state.entries == set()
    # Each set's log rule comes right before its drop rule.
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": NFT_TABLE}, log=True)
    assert fw.check().structure_ok is False


def test_nftables_check_after_set_flush_and_missing_chain():
    table = json.loads(NFT_TABLE)
    items = table["nftables"]
    for i in items:
        if "set" in i:
            del i["set"]["elem"]
    items[:] = [i for i in items if i.get("chain", {}).get("name") != "forward"]
    items[:] = [i for i in items if i.get("rule", {}).get("chain") != "forward"]
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": json.dumps(table)})
    state = fw.check()
    assert state.entries == set() and state.structure_ok is False
    assert state.problems == ["nftables: chain forward missing"]


def test_check_raises_when_the_tool_itself_fails():
    denied = subprocess.CompletedProcess([], 1, "", "Error: Operation not permitted\n")
    fw, _ = backend("nftables", {"nft -j list table inet banpipe": denied})
    with pytest.raises(FirewallError, match="nft -j list table inet banpipe: exit 1: .*permitted"):
        fw.check()
    denied = subprocess.CompletedProcess([], 1, "", "ipset v7.17: Kernel error received: denied\n")
    fw, _ = backend("ipset", {"ipset save banpipe4": denied})
    with pytest.raises(FirewallError, match="ipset save banpipe4: exit 1: .*denied"):
        fw.check()
