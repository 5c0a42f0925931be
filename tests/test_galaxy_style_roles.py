"""Ten roles written the way public Galaxy roles are (vars per OS family, validate:, handlers that
restart, services started and enabled, include_tasks by distribution, templates from facts) build
unchanged, leave nothing of the build host in the image, and the image boots with their services."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from hotsauce.output.sbom import SBOM_NAME
from hotsauce.output.set_diff import sbom_packages
from tests.disk_boots import boot
from tests.images import mounted_root_image, run_hotsauce

pytestmark = pytest.mark.integration

ROLES = Path(__file__).parent / "galaxy_style_roles" / "roles"
HOSTNAME = "galaxy-web"
SERVICES = ("ssh", "nginx", "chrony")

BUILD_YAML = f"""\
base:
  debian: {{}}
hostname: {HOSTNAME}
modules:
  - hostname
  - users
  - sudoers
  - sshd_hardening
  - nginx_site
  - chrony
  - sysctl_tuning
  - swapfile
  - motd
  - journald
  - running_module
  - running_firewall
users_list:
  - name: deploy
    groups: [ops]
    ssh_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHotSauceGalaxyStyleTestKey deploy@test"]
sshd_allow_groups: [ops]
"""
# From the sandbox's own roles (tests/sandbox_roles): a module loaded now and at boot, and a firewall
# flushed, filled and saved for boot. sysctl -p, swapon, modprobe and the firewall's commands act on
# the sandbox during the build; what they leave in the image takes effect when it boots.
SANDBOX_ROLES = Path(__file__).parent / "sandbox_roles"
RUNNING_SYSTEM_ROLES = ("running_module", "running_firewall")


def test_there_are_at_least_ten_roles_in_the_set() -> None:
    roles = [p for p in ROLES.iterdir() if (p / "tasks" / "main.yml").is_file()]
    assert len(roles) >= 10
    assert all(f"  - {role.name}\n" in BUILD_YAML for role in roles)


@pytest.fixture(scope="module")
def built_set(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("galaxy-style")
    shutil.copytree(ROLES, project / "roles")
    for role in RUNNING_SYSTEM_ROLES:
        shutil.copytree(SANDBOX_ROLES / role, project / "roles" / role)
    (project / "build.yaml").write_text(BUILD_YAML)
    result = run_hotsauce("build", "-s", "2G", "-o", "out", cwd=project)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project / "out"


def host_addresses() -> list[str]:
    shown = subprocess.run(["ip", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                           check=False).stdout
    return re.findall(r"inet6? ([0-9a-f.:]+)/", shown)


def files_naming(root: Path, text: str, *folders: str) -> list[str]:
    """Files under the image's folders that hold `text` as a whole word."""
    grep = subprocess.run(["grep", "-rlwF", "--", text, *(str(root / f) for f in folders)],
                          capture_output=True, text=True, check=False)
    return grep.stdout.split()


def test_nothing_of_the_build_host_is_templated_into_the_image(built_set: Path, tmp_path: Path) -> None:
    machine_id = Path("/etc/machine-id").read_text().strip()
    host_name = socket.gethostname()
    with mounted_root_image(built_set / "root.qcow2", tmp_path) as root:
        if machine_id:
            assert files_naming(root, machine_id, ".") == []
        # A short host name ("vm") is a word in many files: look where names are written.
        named: tuple[str, ...] = ("etc/motd", "etc/hostname", "etc/hosts", "etc/ssh/sshd_config", "etc/nginx",
                                  "var/www")
        if len(host_name) >= 6:
            named = ("etc", "var/www")
        if host_name != HOSTNAME:
            assert files_naming(root, host_name, *named) == []
        for address in host_addresses():
            assert files_naming(root, address, "etc", "var/www") == [], address
        motd = (root / "etc/motd").read_text()
        assert motd.startswith(f"{HOSTNAME} ({HOSTNAME}) - Debian 12"), motd
        assert "address: assigned at boot" in motd and "virtualization: none" in motd
        assert f"<h1>{HOSTNAME}</h1>" in (root / "var/www/hotsauce/index.html").read_text()
        assert f"127.0.1.1\t{HOSTNAME}.example.test {HOSTNAME}" in (root / "etc/hosts").read_text()


INSTALLED_DIGEST = ("dpkg-query -W -f '${db:Status-Status} ${Package}:${Architecture} ${Version}\\n' "
                    "| grep '^installed ' | LC_ALL=C sort | sha256sum | cut -c1-64")


def digest_of_installed(packages: dict[str, str]) -> str:
    """What INSTALLED_DIGEST prints for these packages (NAME:ARCH -> version)."""
    lines = sorted(f"installed {name} {version}" for name, version in packages.items())
    return hashlib.sha256("".join(line + "\n" for line in lines).encode()).hexdigest()


def run_of_the_base(tarball: Path) -> list[str]:
    listed = subprocess.run(["tar", "--zstd", "-tf", str(tarball)], capture_output=True, text=True, check=True)
    return sorted(name.removeprefix("./").rstrip("/") for name in listed.stdout.splitlines()
                  if name.startswith("./run/") and name != "./run/")


def test_what_starting_the_services_made_in_run_is_not_left_in_the_image(
    built_set: Path, debian_rootfs_tarball: Path, tmp_path: Path
) -> None:
    with mounted_root_image(built_set / "root.qcow2", tmp_path) as root:
        assert not (root / "run/sshd").exists()
        left = sorted(str(p.relative_to(root)) for p in (root / "run").rglob("*"))
        assert left == run_of_the_base(debian_rootfs_tarball)
        assert "PermitRootLogin no" in (root / "etc/ssh/sshd_config").read_text()
        assert "/swapfile none swap sw 0 0" in (root / "etc/fstab").read_text()


@pytest.mark.boot
def test_the_image_boots_with_the_roles_services_running_and_settings_in_effect(
    built_set: Path, tmp_path: Path
) -> None:
    checks = {
        "systemctl is-active " + " ".join(SERVICES): "\n".join(["active"] * len(SERVICES)),
        "pgrep -x sshd >/dev/null && sshd -T | grep -i '^permitrootlogin'": "permitrootlogin no",
        "sysctl -n vm.swappiness": "13",
        "swapon --show=NAME --noheadings": "/swapfile",
        "hostname": HOSTNAME,
        "id -nG deploy": "deploy ops",
        "sudo -l -U deploy | grep -c NOPASSWD": "1",
        "cat /etc/systemd/journald.conf.d/50-hotsauce.conf | grep Storage": "Storage=persistent",
        "grep -c '^dummy ' /proc/modules": "1",
        "nft list tables | grep -c hotsauce_test": "1",
    }
    # The set's SBOM lists exactly the packages dpkg knows as installed in the booted image.
    checks[INSTALLED_DIGEST] = digest_of_installed(sbom_packages(json.loads((built_set / SBOM_NAME).read_text())))
    arguments = [part for command in checks for part in ("--check", command)]
    verdict = boot(built_set, tmp_path, *arguments)
    found = {check["command"]: (check["status"], check["output"].strip()) for check in verdict["checks"]}
    assert found == {command: (0, expected) for command, expected in checks.items()}, verdict["checks"]
