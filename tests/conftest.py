"""Shared fixtures: the corpus location, a fixed clock, the checkout's bin/ and lib/."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import settings

from toolpaths import BIN, CORPUS, LIB, ROOT  # noqa: F401 - re-exported for fixtures

if str(LIB) not in sys.path:
    sys.path.insert(0, str(LIB))

# Tests never time anything: hypothesis's default 200 ms deadline per example turned a
# busy machine into failures ("DeadlineExceeded: Test took 339.05ms", banctl's
# never-bans property, with other test runs and deploy tests on the same 2 cores).
settings.register_profile("banpipe", deadline=None)
settings.load_profile("banpipe")


@pytest.fixture
def corpus_dir() -> Path:
    """../shared/corpus read in place; skipped only where the folder is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not present at {CORPUS} (a clone outside banpipe's CI)")
    return CORPUS


@pytest.fixture
def fixed_now() -> datetime:
    return datetime(2026, 11, 28, 12, 0, 0)


@pytest.fixture
def tool_env() -> dict[str, str]:
    """Environment for running bin/ tools as real processes from the checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(LIB) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pytest_collection_modifyitems(config, items):
    """Root-only tests skip without root, except in CI where that is a failure."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        return  # let them fail loudly: CI runs as root
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
