"""The role without booting: lint, argument specs against the config schema, and the role
applied into a real Debian rootfs through the chroot connection, its units checked by
systemd's own parser (systemd-analyze verify, systemd --test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_harness import (
    ANSIBLE_DIR,
    ROLE,
    SITE,
    WAN_IFACE,
    ansible_env,
    ansible_playbook,
    assert_play_ok,
    copy_rootfs,
    find_tool,
    provision_gateway,
    require,
    run,
    write_inventory,
)

from banpipe import config as bpconfig
from banpipe.convert import choices_of

pytestmark = pytest.mark.deploy


def load_yaml(path: Path):
    try:
        import yaml  # comes with ansible-core
    except ImportError:
        require(False, "PyYAML (installed with ansible) is missing")
    return yaml.safe_load(path.read_text())


# --- lint and specs (no root needed) ---------------------------------------------------


def test_playbook_syntax_check(tmp_path):
    proc = run(
        [find_tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", str(SITE)],
        check=False,
        env=ansible_env(tmp_path),
        cwd=ANSIBLE_DIR,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile(tmp_path):
    env = ansible_env(tmp_path)
    proc = run(
        [find_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor", "."],
        check=False,
        env=env,
        cwd=ANSIBLE_DIR,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _role_var(section: str, key: str) -> str:
    if (section, key) == ("wanwatch", "interface"):
        return "banpipe_wan_interface"  # the role's switch for wanwatch.service
    return f"banpipe_{section}_{key}"


def test_every_config_key_is_a_documented_role_variable_with_the_same_default():
    defaults = load_yaml(ROLE / "defaults" / "main.yml")
    specs = load_yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs), "defaults/main.yml and argument_specs differ"
    for section, (cls, converters) in bpconfig.SCHEMA.items():
        builtin = cls()
        for key, convert in converters.items():
            name = _role_var(section, key)
            assert name in defaults, f"[{section}] {key} has no role variable {name}"
            value = defaults[name]
            assert specs[name]["default"] == value, f"{name}: argument_specs default differs"
            converted = None if value is None else convert(value)
            assert converted == getattr(builtin, key), (
                f"{name}: role default {value!r} is not config.py's {getattr(builtin, key)!r}"
            )


def test_argument_specs_list_the_choices_config_py_allows():
    """One list of backends (config.BACKENDS), hooks, on_stop values...: the role's
    argument specs offer exactly what config.py accepts, for every key with choices."""
    specs = load_yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    checked = set()
    for section, (_cls, converters) in bpconfig.SCHEMA.items():
        for key, convert in converters.items():
            name = _role_var(section, key)
            allowed = choices_of(convert)
            assert specs[name].get("choices") == (None if allowed is None else list(allowed)), (
                f"{name}: argument_specs choices are not config.py's {allowed}"
            )
            checked.add(name)
    assert "banpipe_firewall_backend" in checked
    assert list(choices_of(bpconfig.SCHEMA["firewall"][1]["backend"])) == list(bpconfig.BACKENDS)


def test_argument_specs_reject_a_bad_choice(tmp_path):
    """argument_specs really guard the role: a wrong on_stop fails before any task."""
    inventory = write_inventory(
        tmp_path / "inv.json",
        "nowhere",
        {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "banpipe_ban_on_stop": "sometimes",
        },
    )
    result = ansible_playbook(inventory, tmp_path, "--check")
    assert result.rc != 0
    assert "banpipe_ban_on_stop" in result.output and "sometimes" in result.output


def test_preflight_refuses_a_path_that_would_need_quoting(tmp_path):
    inventory = write_inventory(
        tmp_path / "inv.json",
        "nowhere",
        {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "banpipe_alert_file": "/var/log/snort/alert; rm -rf /",
        },
    )
    result = ansible_playbook(inventory, tmp_path, "--check")
    assert result.rc != 0
    assert "must be an absolute path" in result.output


def _bool_variables() -> set[str]:
    specs = load_yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    return {name for name, spec in specs.items() if spec.get("type") == "bool"}


def _conditions(node):
    """Every `when:` expression and Jinja expression string in a task tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "when":
                yield from (value if isinstance(value, list) else [value])
            else:
                yield from _conditions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _conditions(item)
    elif isinstance(node, str):
        yield from re.findall(r"\{\{(.*?)\}\}", node, re.S)


def test_boolean_variables_always_go_through_the_bool_filter():
    """`-e banpipe_shutdown_ordering=false` is the string "false": a bare `when:` on it
    fails (or is true). Every use of a bool variable must convert it."""
    bools = _bool_variables()
    assert "banpipe_shutdown_ordering" in bools
    unsafe = []
    files = [*ROLE.glob("tasks/*.yml"), *ROLE.glob("handlers/*.yml"), *ROLE.glob("vars/*.yml")]
    for path in files:
        for expr in _conditions(load_yaml(path)):
            for name in bools:
                for m in re.finditer(rf"\b{name}\b(?!\s*\|\s*bool)", str(expr)):
                    unsafe.append(f"{path.name}: {expr!r}")
    for path in ROLE.glob("templates/*.j2"):
        for name in bools:
            for expr in re.findall(r"\{[{%](.*?)[%}]\}", path.read_text(), re.S):
                if re.search(rf"\b{name}\b(?!\s*\|\s*bool)", expr):
                    unsafe.append(f"{path.name}: {expr.strip()}")
    assert not unsafe, "\n".join(unsafe)


def test_meta_main_names_the_platforms_and_the_ansible_version():
    meta = load_yaml(ROLE / "meta" / "main.yml")["galaxy_info"]
    assert meta["min_ansible_version"]
    names = {p["name"]: p["versions"] for p in meta["platforms"]}
    assert "bullseye" not in names["Debian"]  # Debian 11's Python 3.9 < requires-python


# --- into a rootfs through chroot --------------------------------------------------------


@pytest.fixture(scope="module")
def static_root(deploy_work, base_rootfs, wheelhouse):
    root = copy_rootfs(base_rootfs, deploy_work / "static")
    provision_gateway(root, "bp-static")
    inventory = write_inventory(
        deploy_work / "static-inventory.json",
        "bp-static",
        {
            "ansible_connection": "community.general.chroot",
            "ansible_host": str(root),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "banpipe_wheelhouse": str(wheelhouse),
            "banpipe_wan_interface": WAN_IFACE,
            "banpipe_ids_unit": "snort.service",
        },
    )
    first = ansible_playbook(inventory, deploy_work)
    assert_play_ok(first)
    return root, inventory, first


def task_status(output: str, task: str) -> str:
    """The first word after the task's header: ok, changed, skipping, fatal."""
    m = re.search(rf"TASK \[banpipe : {re.escape(task)}\][^\n]*\n(\w+)", output)
    assert m, f"task {task!r} not in the output"
    return m.group(1)


@pytest.mark.root
def test_check_mode_on_a_fresh_host_passes_and_changes_nothing(
    deploy_work, base_rootfs, wheelhouse
):
    """`ansible-playbook --check` on a host banpipe was never on (the handler used to fail:
    "Could not find the requested service wanwatch.service"), with a boolean given as
    the string "false" on the command line, as `-e` does."""
    root = copy_rootfs(base_rootfs, deploy_work / "fresh-check")
    provision_gateway(root, "bp-check")
    inventory = write_inventory(
        deploy_work / "fresh-check-inventory.json",
        "bp-check",
        {
            "ansible_connection": "community.general.chroot",
            "ansible_host": str(root),
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
            "banpipe_wheelhouse": str(wheelhouse),
            "banpipe_wan_interface": WAN_IFACE,
        },
    )
    result = ansible_playbook(
        inventory, deploy_work, "--check", "-e", "banpipe_shutdown_ordering=false"
    )
    assert_play_ok(result)
    assert result.changed > 0  # it says what it would do...
    assert not (root / "opt" / "banpipe").exists()  # ...and does nothing
    assert not (root / "etc" / "systemd" / "system" / "banpipe.service").exists()
    assert task_status(result.output, "Install the shutdown-ordering drop-in") == "skipping"
    assert (
        task_status(result.output, "Remove the shutdown-ordering drop-in when it is not wanted")
        == "ok"
    )


@pytest.mark.root
def test_chroot_run_installs_tools_units_and_config(static_root):
    root, _, _ = static_root
    for tool in ("fasttail", "alertfilter", "banctl", "wanwatch"):
        link = root / "usr/local/bin" / tool
        assert link.is_symlink() and os.readlink(link) == f"/opt/banpipe/bin/{tool}"
        run(["chroot", str(root), f"/usr/local/bin/{tool}", "--help"])
    run(["chroot", str(root), "bash", "-n", "/usr/local/libexec/banpipe/pipeline"])
    for unit in ("banpipe.service", "wanwatch.service"):
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink()
    for tool in ("fasttail", "alertfilter", "banctl", "wanwatch"):
        page = root / "usr/local/share/man/man1" / f"{tool}.1"
        assert page.read_text().startswith(f".TH {tool.upper()} 1 ")
        completion = root / "usr/local/share/bash-completion/completions" / tool
        assert f"complete -F _banpipe_{tool} {tool}" in completion.read_text()
    assert (root / "etc/systemd/system/banpipe.service.d/10-shutdown-order.conf").is_file()
    head = (root / "etc/banpipe/banpipe.toml").read_text().splitlines()[:3]
    assert head == ["#", "# Ansible managed", "#"]


@pytest.mark.root
def test_rendered_config_loads_to_the_builtin_defaults(static_root):
    """Role defaults written out and read back by the deployed banpipe give config.py's
    defaults (the interface aside)."""
    root, _, _ = static_root
    script = (
        "from dataclasses import asdict; from banpipe.config import load_config, Config\n"
        "c = asdict(load_config('/etc/banpipe/banpipe.toml')); d = asdict(Config())\n"
        "c.pop('path'); d.pop('path'); c['wanwatch']['interface'] = None\n"
        "assert c == d, (c, d); print('same')\n"
    )
    out = run(["chroot", str(root), "/opt/banpipe/bin/python", "-c", script])
    assert out.stdout.strip() == "same"


@pytest.mark.root
def test_chroot_rerun_changes_nothing(static_root, deploy_work):
    _, inventory, _ = static_root
    again = ansible_playbook(inventory, deploy_work)
    assert_play_ok(again)
    assert again.changed == 0, f"changed on rerun: {again.changed_tasks}"


@pytest.mark.root
def test_a_rerun_repairs_a_broken_installation(static_root, deploy_work):
    """banpipe gone from the virtualenv (or another version there): the role reinstalls
    exactly the wheelhouse's wheel, and only then reports a change."""
    root, inventory, _ = static_root
    site = next((root / "opt/banpipe/lib").glob("python3*/site-packages"))
    for path in site.glob("banpipe*"):
        shutil.rmtree(path)
    assert run(["chroot", str(root), "/usr/local/bin/banctl", "--help"], check=False).returncode
    repaired = ansible_playbook(inventory, deploy_work)
    assert_play_ok(repaired)
    assert "banpipe : Install banpipe and its dependencies from the wheelhouse" in (
        repaired.changed_tasks
    )
    run(["chroot", str(root), "/usr/local/bin/banctl", "--help"])


@pytest.mark.root
def test_systemd_analyze_verify_is_silent(static_root):
    """verify exits 0 on unknown keys and bad values, so any output is a failure."""
    root, _, _ = static_root
    proc = run(
        [
            "systemd-analyze",
            "verify",
            f"--root={root}",
            "banpipe.service",
            "wanwatch.service",
        ],
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", (
        proc.stdout + proc.stderr
    )


@pytest.mark.root
def test_systemd_analyze_verify_check_can_fail(static_root, deploy_work):
    """The check above is not vacuous: a typo in a copy of our unit shows up on stderr
    (while verify still exits 0)."""
    root, _, _ = static_root
    unit = (root / "etc/systemd/system/banpipe.service").read_text()
    broken = root / "etc/systemd/system/banpipe-typo.service"
    broken.write_text(unit.replace("KillMode=mixed", "KillMode=mixd"))
    try:
        proc = run(
            ["systemd-analyze", "verify", f"--root={root}", "banpipe-typo.service"], check=False
        )
    finally:
        broken.unlink()
    assert "mixd" in proc.stderr, proc.stdout + proc.stderr


def _unit_dump(root: Path, unit: str) -> str:
    env = dict(
        os.environ,
        SYSTEMD_UNIT_PATH=f"{root}/etc/systemd/system:{root}/lib/systemd/system",
        SYSTEMD_LOG_LEVEL="err",
    )
    proc = subprocess.run(
        [
            "timeout",
            "-k",
            "5",
            "30",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/lib/systemd/systemd",
            "--test",
            "--system",
            "--unit=multi-user.target",
            "--no-pager",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    found = re.search(rf"-> Unit {re.escape(unit)}:\n(.*?)(?=\n-> Unit |\Z)", proc.stdout, re.S)
    assert found, f"{unit} not in systemd --test output:\n{proc.stdout[-3000:]}{proc.stderr}"
    return found.group(1)


@pytest.mark.root
def test_systemd_merges_the_shutdown_drop_in(static_root):
    """systemd's own parser: the drop-in is merged, banpipe is ordered after the network,
    the IDS and wanwatch, and needs its state and alert mounts."""
    root, _, _ = static_root
    dump = _unit_dump(root, "banpipe.service")
    for expected in (
        "DropIn Path: " + str(root / "etc/systemd/system/banpipe.service.d/10-shutdown-order.conf"),
        "After: network.target",
        "After: network-online.target",
        "Wants: network-online.target",
        "After: snort.service",
        "After: wanwatch.service",
        "RequiresMountsFor: /var/lib/banpipe",
        "RequiresMountsFor: /var/log/snort",
        "KillMode: mixed",
    ):
        assert expected in dump, f"{expected!r} missing:\n{dump}"
    wan = _unit_dump(root, "wanwatch.service")
    assert "Before: banpipe.service" in wan
