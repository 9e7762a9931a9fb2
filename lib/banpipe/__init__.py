"""banpipe: Snort/Suricata alerts to firewall bans, as small tools joined by pipes."""

__version__ = "0.1.0"
