"""Services "started" in a build: what a real start creates is there, nothing runs, /run is left empty."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.services import UNIT_FOLDERS_AWK, policy_rc_d, systemctl_wrapper
from tests.image_root import extracted_root, in_root, processes_in

DEMO_UNIT = """\
[Unit]
Description=a daemon that must never run in a build
RuntimeDirectory=not-in-the-service-section

[Service]
ExecStart=/bin/sleep infinity
User=nobody
Group=nogroup
RuntimeDirectory=demo demo-two
RuntimeDirectoryMode=0750
StateDirectory=demo/deep
LogsDirectory=demo
# CacheDirectory=commented-out

[Install]
WantedBy=multi-user.target
"""

DEMO_DROP_IN = """\
[Service]
RuntimeDirectory=
RuntimeDirectory=demo-from-drop-in
CacheDirectory=demo
CacheDirectoryMode=0700
"""

TEMPLATE_UNIT = """\
[Service]
ExecStart=/bin/sleep infinity
RuntimeDirectory=worker-%i
"""

TMPFILES = """\
d /run/demo-tmpfiles 0711 root root -
d /var/lib/demo-tmpfiles 0700 nobody nogroup -
d /etc/demo-tmpfiles-not-a-start-folder 0755 root root -
"""


def folder_lines(unit_text: str, unit: str = "demo.service") -> list[str]:
    stem = unit.removesuffix(".service")
    prefix, _, instance = stem.partition("@")
    awk = subprocess.run(
        ["awk", "-v", f"unit={unit}", "-v", f"stem={stem}", "-v", f"prefix={prefix}", "-v",
         f"instance={instance}", UNIT_FOLDERS_AWK],
        input=unit_text, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return awk.stdout.splitlines()


def test_a_units_folders_owner_and_modes_are_read_from_its_service_section_only() -> None:
    lines = folder_lines(DEMO_UNIT)
    assert lines[0] == "owner nobody nogroup"
    assert sorted(lines[1:]) == [
        "dir /run 0750 demo",
        "dir /run 0750 demo-two",
        "dir /var/lib 0755 demo/deep",
        "dir /var/log 0755 demo",
    ]


def test_a_drop_in_resets_and_extends_the_units_folders_as_systemd_reads_it() -> None:
    lines = folder_lines(DEMO_UNIT + DEMO_DROP_IN)
    assert "dir /run 0750 demo-from-drop-in" in lines
    assert "dir /var/cache 0700 demo" in lines
    assert not any(line.startswith("dir /run 0750 demo ") or line == "dir /run 0750 demo" for line in lines)


def test_a_template_units_specifiers_take_the_instance_name() -> None:
    assert folder_lines(TEMPLATE_UNIT, "worker@blue.service") == ["owner - -", "dir /run 0755 worker-blue"]


@pytest.mark.parametrize("script", [systemctl_wrapper("/usr/bin/systemctl.hotsauce-saved"), policy_rc_d()])
def test_the_scripts_put_in_the_image_are_valid_posix_sh(script: str, tmp_path: Path) -> None:
    path = tmp_path / "script"
    path.write_text(script)
    checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


# --- in a real Debian root -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with extracted_root(debian_rootfs_tarball, tmp_path_factory.mktemp("services")) as root:
        units = root / "etc/systemd/system"
        (units / "demo.service").write_text(DEMO_UNIT)
        (units / "demo.service.d").mkdir()
        (units / "demo.service.d/10-more.conf").write_text(DEMO_DROP_IN)
        (root / "usr/lib/systemd/system/worker@.service").write_text(TEMPLATE_UNIT)
        (root / "usr/lib/tmpfiles.d/demo.conf").write_text(TMPFILES)
        yield root


def owner_and_mode(path: Path) -> tuple[str, str, str]:
    stat = subprocess.run(["stat", "-c", "%U %G %a", str(path)], capture_output=True, text=True, check=True)
    user, group, mode = stat.stdout.split()
    return user, group, mode


@pytest.mark.integration
def test_a_started_unit_gets_its_folders_and_tmpfiles_and_run_is_empty_after(root: Path) -> None:
    run_before = sorted(p.name for p in (root / "run").iterdir())
    with build_chroot(root):
        started = in_root(root, "systemctl", "start", "demo")
        assert started.returncode == 0, started.stderr
        assert in_root(root, "systemctl", "restart", "worker@blue.service").returncode == 0
        assert owner_and_mode(root / "run/demo-from-drop-in") == ("nobody", "nogroup", "750")
        assert not (root / "run/demo").exists()  # the drop-in reset the unit's list
        assert owner_and_mode(root / "var/cache/demo") == ("nobody", "nogroup", "700")
        assert owner_and_mode(root / "var/lib/demo/deep") == ("nobody", "nogroup", "755")
        assert owner_and_mode(root / "var/lib/demo") == ("root", "root", "755")
        assert (root / "run/worker-blue").is_dir()
        assert owner_and_mode(root / "run/demo-tmpfiles") == ("root", "root", "711")
        assert owner_and_mode(root / "var/lib/demo-tmpfiles") == ("nobody", "nogroup", "700")
        assert not (root / "etc/demo-tmpfiles-not-a-start-folder").exists()
        assert processes_in(root) == []
    assert sorted(p.name for p in (root / "run").iterdir()) == run_before
    assert (root / "var/lib/demo/deep").is_dir()  # /var is the image's: a start's state stays


@pytest.mark.integration
def test_a_start_a_package_asks_for_is_refused_yet_prepared(root: Path) -> None:
    with build_chroot(root):
        asked = in_root(root, "/usr/sbin/policy-rc.d", "--quiet", "demo.service", "start")
        assert asked.returncode == 101
        assert (root / "run/demo-from-drop-in").is_dir()
        assert in_root(root, "/usr/sbin/policy-rc.d", "worker@red.service", "stop").returncode == 101
        assert not (root / "run/worker-red").exists()


@pytest.mark.integration
def test_enable_now_prepares_and_plain_enable_does_not(root: Path) -> None:
    with build_chroot(root):
        assert in_root(root, "systemctl", "enable", "demo.service").returncode == 0
        assert not (root / "run/demo-from-drop-in").exists()
        assert in_root(root, "systemctl", "enable", "--now", "demo.service").returncode == 0
        assert (root / "run/demo-from-drop-in").is_dir()
    assert (root / "etc/systemd/system/multi-user.target.wants/demo.service").is_symlink()


def test_facts_name_the_image_and_replace_what_setup_read_from_the_build_host() -> None:
    from hotsauce.modules.ansible_plugins.modules import setup as facts

    assert facts.name_facts("web1.example.test") == {
        "hostname": "web1", "nodename": "web1.example.test", "fqdn": "web1.example.test", "domain": "example.test",
    }  # fmt: skip
    # Setup's own shapes on a machine without a network: a role's loop or `.address | default()` still runs.
    assert facts.NO_HOST_VALUES["default_ipv4"] == facts.NO_HOST_VALUES["default_ipv6"] == {}
    assert facts.NO_HOST_VALUES["all_ipv4_addresses"] == facts.NO_HOST_VALUES["all_ipv6_addresses"] == []
    assert facts.NO_HOST_VALUES["virtualization_type"] == "none"


def test_only_facts_that_were_gathered_are_replaced() -> None:
    """A narrower gather_subset or a filter still holds: nothing is added that setup left out."""
    from hotsauce.modules.ansible_plugins.modules import setup as facts

    gathered = {"ansible_distribution": "Debian", "ansible_default_ipv4": {"address": "192.0.2.9"}}
    assert facts.with_image_facts(gathered) == {"ansible_distribution": "Debian", "ansible_default_ipv4": {}}
