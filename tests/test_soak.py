"""Short versions of bench/soak.py: kill -9, rotations and a full disk under load.

The same code as the soak suite, fewer rounds: the real processes, banctl in a throwaway
network namespace with nftables, a writer appending alerts all the while. The full
runs and their figures are in bench/README.md ("Durability soak").
"""

from __future__ import annotations

import sys

import pytest

from toolpaths import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402

pytestmark = pytest.mark.root


@pytest.fixture
def netns():
    ns = soak.Netns("t")
    yield ns
    ns.close()


def assert_exact(verdict: dict) -> None:
    assert verdict["lost"] == 0 and verdict["duplicated"] == 0, verdict
    assert verdict["recorded"] == verdict["written"] > 0, verdict
    assert verdict["firewall_matches_ledger"] == 1, verdict


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_of_any_stage_or_the_group_loses_and_repeats_nothing(tmp_path, netns, seed):
    assert_exact(soak.kill_soak(tmp_path, netns, kills=6, rate=500, backend="nftables", seed=seed))


def test_rotations_of_every_kind_with_restarts_lose_and_repeat_nothing(tmp_path, netns):
    assert_exact(
        soak.rotate_soak(tmp_path, netns, rotations=12, rate=500, backend="nftables", seed=3)
    )


def test_full_and_read_only_ledger_keep_the_firewall_and_lose_nothing(tmp_path, netns):
    verdict = soak.disk_soak(tmp_path, netns, rate=500, backend="nftables")
    assert_exact(verdict)
    assert verdict["entries_before"] > 0, verdict
    assert verdict["entries_lost_while_full"] == 0, verdict
    assert verdict["entries_lost_while_read_only"] == 0, verdict
    assert verdict["banctl_status_read_only"] == 73, verdict
    assert verdict["said_full"] == 1, verdict
