"""Session fixtures for the deploy tests: work directory, cached rootfs, wheelhouse."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from deploy_harness import (
    build_wheelhouse,
    cached_rootfs,
    find_tool,
    python_version,
    require,
    require_root,
)


@pytest.fixture(scope="session")
def deploy_work() -> Path:
    """Scratch space under /var/tmp (rootfs copies are ~300 MB each), readable by
    nobody for systemd --test. BANPIPE_DEPLOY_KEEP=1 keeps it for a post-mortem."""
    require_root()
    path = Path(tempfile.mkdtemp(prefix="banpipe-deploy-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    if os.environ.get("BANPIPE_DEPLOY_KEEP"):
        print(f"\nkept deploy work directory {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def base_rootfs(deploy_work) -> Path:
    for tool in ("mmdebstrap", "systemd-nspawn", "chroot", "nsenter", "ip", "journalctl"):
        find_tool(tool)
    return cached_rootfs()


@pytest.fixture(scope="session")
def wheelhouse(deploy_work, base_rootfs) -> Path:
    here = "{}.{}".format(*sys.version_info[:2])
    target = python_version(base_rootfs)
    require(
        here == target,
        f"the wheelhouse needs the target's Python {target} (binary wheels), this is {here}",
    )
    return build_wheelhouse(deploy_work / "wheelhouse")
