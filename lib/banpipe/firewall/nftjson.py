"""``nft -j list`` output read back: a set's elements, our rules as short texts.

What ``NftablesBackend.check()`` and ``parse()`` read when there is no netlink channel
(and what the golden tests feed ``parse()``).
"""

from __future__ import annotations

from . import canonical


def json_elements(items: list[dict]) -> tuple[set[str], list[str]]:
    """The entries of the listed sets in ``items``, and a problem text for each element
    that is no canonical entry."""
    members: set[str] = set()
    bad: list[str] = []
    for i in items:
        for elem in i.get("set", {}).get("elem", []):
            if isinstance(elem, dict) and "elem" in elem:
                elem = elem["elem"].get("val")
            if isinstance(elem, dict) and isinstance(elem.get("prefix"), dict):
                elem = f"{elem['prefix'].get('addr')}/{elem['prefix'].get('len')}"
            addr = canonical(elem) if isinstance(elem, str) else None
            if addr is None:
                bad.append(f"nftables: set {i['set'].get('name')}: not an address: {elem}")
            else:
                members.add(addr)
    return members, bad


def normalize_rule(rule: str) -> str:
    """``chain_rules()`` text spelled as ``rule_text`` reads it back."""
    return rule.replace(" limit rate ", " limit ")


def rule_text(rule: dict) -> str:
    """A short text for the rules we write (``ip saddr @v4 limit 6/minute log``), so the
    chain can be compared with what it should hold; anything else reads as ``?``."""
    parts = []
    for expr in rule.get("expr", []):
        if "match" in expr:
            m = expr["match"]
            payload = (
                m.get("left", {}).get("payload", {}) if isinstance(m.get("left"), dict) else {}
            )
            if m.get("op") == "==" and payload.get("field") == "saddr":
                parts.append(f"{payload.get('protocol')} saddr {m.get('right')}")
            else:
                parts.append("?")
        elif "limit" in expr:
            lim = expr["limit"]
            parts.append(f"limit {lim.get('rate')}/{lim.get('per')}")
        elif "log" in expr:
            prefix = (expr["log"] or {}).get("prefix")
            parts.append("log" if prefix is None else f'log prefix "{prefix}"')
        elif "drop" in expr:
            parts.append("drop")
        else:
            parts.append("?")
    return " ".join(parts)
