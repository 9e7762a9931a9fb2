"""Session fixtures for the deploy tests: work directory, cached rootfs, wheelhouse."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from deploy_harness import (
    build_wheelhouse,
    cached_rootfs,
    find_tool,
    python_version,
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
        # rm is several times faster than shutil.rmtree on ~20,000 files per rootfs copy.
        # It runs on after the session: on a busy disk it took longer than pytest's
        # per-test timeout, which then failed a run whose tests had all passed.
        subprocess.Popen(
            ["rm", "-rf", "--one-file-system", str(path)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@pytest.fixture(scope="session")
def base_rootfs(deploy_work) -> Path:
    for tool in ("mmdebstrap", "systemd-nspawn", "chroot", "nsenter", "ip", "journalctl"):
        find_tool(tool)
    return cached_rootfs()


@pytest.fixture(scope="session")
def wheelhouse(deploy_work, base_rootfs) -> Path:
    return build_wheelhouse(deploy_work / "wheelhouse", python_version(base_rootfs))
