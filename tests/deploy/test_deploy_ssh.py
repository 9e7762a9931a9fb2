"""The role over plain SSH, the way most Ansible users deploy, into a booted gateway.

The other booted tests drive the container through nsenter; here Ansible connects as
the README's first deploy does: ssh to the gateway's address as a sudo user
(`become`), with a known host key, ansible/ansible.cfg in force (pipelining, no
interpreter-discovery warning) and no ansible_python_interpreter set. First
`--check` on the fresh host, then the real deploy, then a rerun that changes nothing.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from deploy_harness import (
    ALERT_FILE,
    WAN_ADDR,
    WAN_IFACE,
    Container,
    Netns,
    ansible_playbook,
    assert_play_ok,
    copy_rootfs,
    provision_gateway,
    require,
    run,
    write_inventory,
)

# The first deploy module to run: its first test may build the cached rootfs (mmdebstrap,
# 295 s over a slow mirror here) and the wheelhouse, more than the default 300 s.
pytestmark = [pytest.mark.deploy, pytest.mark.root, pytest.mark.timeout(1200)]


class SshGateway:
    def __init__(self, work, root, netns, container, key, known_hosts):
        self.work = work
        self.root = root
        self.netns = netns
        self.container = container
        self.key = key
        self.known_hosts = known_hosts

    def inventory(self, wheelhouse, name: str, known_hosts=None):
        return write_inventory(
            self.work / f"ssh-{name}.json",
            "gw-ssh",
            {
                "ansible_host": WAN_ADDR,
                "ansible_user": "admin",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={known_hosts or self.known_hosts} "
                    "-o StrictHostKeyChecking=yes -o BatchMode=yes"
                ),
                "banpipe_wheelhouse": str(wheelhouse),
                "banpipe_wan_interface": WAN_IFACE,
                "banpipe_alert_file": ALERT_FILE,
                # the README's advice: never ban the network you manage it from
                "banpipe_filter_whitelist": ["192.0.2.0/24"],
            },
        )

    def play(self, inventory, *extra):
        return ansible_playbook(inventory, self.work, *extra, netns=self.netns.name)


@pytest.fixture(scope="module")
def ssh_gateway(deploy_work, base_rootfs):
    for tool in ("ssh", "ssh-keygen"):
        require(shutil.which(tool) is not None, f"{tool} (openssh-client) is missing")
    name = f"bpssh{os.getpid()}"
    netns = Netns(name).create()
    root = copy_rootfs(base_rootfs, deploy_work / "ssh-gateway")
    provision_gateway(root, name)
    key = deploy_work / "ssh-key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "banpipe-test", "-f", str(key)])
    # A sudo user with our key, as on a typical server (root login over SSH is off).
    run(["chroot", str(root), "useradd", "-m", "-s", "/bin/bash", "admin"])
    sudoers = root / "etc" / "sudoers.d" / "admin"
    sudoers.write_text("admin ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    ssh_dir = root / "home" / "admin" / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text((key.parent / (key.name + ".pub")).read_text())
    run(["chroot", str(root), "chown", "-R", "admin:admin", "/home/admin/.ssh"])
    # The host key, taken from the image: what `ssh-keyscan` plus checking the
    # fingerprint gives an admin.
    host_key = (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known_hosts = deploy_work / "known_hosts"
    known_hosts.write_text(f"{WAN_ADDR} {' '.join(host_key)}\n")
    ct = Container(root, name, netns, deploy_work / f"{name}-console.log").boot()
    try:
        deadline = time.monotonic() + 30
        while True:  # sshd listens a moment after the system reports running
            probe = run(
                ["ip", "netns", "exec", name, "ssh", "-i", str(key), "-o", "BatchMode=yes",
                 "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=3",
                 f"admin@{WAN_ADDR}", "sudo", "-n", "true"],
                check=False, timeout=30,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.5)
        yield SshGateway(deploy_work, root, netns, ct, key, known_hosts)
    finally:
        ct.kill()
        netns.delete()


def test_an_unknown_host_key_is_refused(ssh_gateway, wheelhouse, tmp_path):
    """The README's first error, as a negative control: without the host key step."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = ssh_gateway.play(ssh_gateway.inventory(wheelhouse, "nokey", known_hosts=empty))
    assert result.rc != 0 and result.unreachable == 1
    assert "Host key verification failed" in result.output


def test_check_mode_on_the_fresh_gateway_over_ssh(ssh_gateway, wheelhouse):
    result = ssh_gateway.play(ssh_gateway.inventory(wheelhouse, "check"), "--check")
    assert_play_ok(result)
    assert result.changed > 0
    assert "discovered Python interpreter" not in result.output  # ansible.cfg in force
    assert not (ssh_gateway.root / "opt" / "banpipe").exists()


def test_deploy_over_ssh_as_a_sudo_user_and_a_rerun_changes_nothing(ssh_gateway, wheelhouse):
    inventory = ssh_gateway.inventory(wheelhouse, "deploy")
    first = ssh_gateway.play(inventory)
    assert_play_ok(first)
    assert "discovered Python interpreter" not in first.output
    ct = ssh_gateway.container
    for unit in ("banpipe.service", "wanwatch.service"):
        state = ct.run("systemctl", "is-active", unit, check=False).stdout.strip()
        assert state == "active", (unit, state)
    page = ct.run("sh", "-c", "test -s /usr/local/share/man/man1/banctl.1 && echo yes").stdout
    assert page.strip() == "yes"
    again = ssh_gateway.play(inventory)
    assert_play_ok(again)
    assert again.changed == 0, f"changed on rerun: {again.changed_tasks}"
