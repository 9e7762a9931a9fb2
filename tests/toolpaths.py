"""Where things are, for tests that run the tools as real processes.

A module of its own (not conftest) so that test files can import it by name whatever
other conftest.py files pytest collects.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
BIN = ROOT / "bin"
CORPUS = ROOT.parent / "shared" / "corpus"
