"""The built-in roles, and a public-style daemon role, against a real Debian root in one run."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsauce.config import ModuleKind, ModuleRef
from hotsauce.modules.ansible_run import run_ansible_modules
from hotsauce.modules.builtins import builtin_folder
from hotsauce.modules.chroot import build_chroot
from hotsauce.modules.resolve import ResolvedModule
from tests.image_root import extracted_root, in_root, processes_in

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "ansible"
BOB_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHotsauceTestKeyOnlyForTests bob@example"
# A SHA-512 crypt hash of a throwaway password: it must never reach a log.
BOB_HASH = (
    "$6$hotsauce$Ny2gDp3BQYm.0CjDLcPu9b3m0PhTH3H5mQcUZ8J5zWCxCf0Zm"
    "VQO8cP0R4uZf0tYgZbq7c9iL2vY1jQf8K3mN/"
)
RPM_SPEC = """\
Name: hotsauce-hello
Version: 1.0
Release: 1
Summary: a package built by the hotsauce tests
License: Apache-2.0
BuildArch: noarch
AutoReqProv: no
%description
A file, nothing else.
%install
mkdir -p %{buildroot}/usr/share/hotsauce-hello
echo hello > %{buildroot}/usr/share/hotsauce-hello/hello
%files
/usr/share/hotsauce-hello/hello
"""


@dataclass
class RolesRun:
    root: Path
    log_dir: Path
    rpm_in_base: bool


def built_rpm(work: Path) -> Path:
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed")
    top = work / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / "hotsauce-hello.spec"
    spec.write_text(RPM_SPEC)
    subprocess.run(
        ["rpmbuild", "--quiet", "-bb", "--define", f"_topdir {top}", str(spec)], check=True
    )
    return next((top / "RPMS").rglob("*.rpm"))


def role(
    name: str, path: Path, index: int, variables: dict[str, object] | None = None
) -> ResolvedModule:
    return ResolvedModule(
        ModuleRef(ModuleKind.ROLE, name, variables or {}, index), ModuleKind.ROLE, path
    )


@pytest.fixture(scope="module")
def roles_run(
    debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RolesRun]:
    work = tmp_path_factory.mktemp("roles")
    build = work / "build"
    (build / "rpms").mkdir(parents=True)
    shutil.copy(built_rpm(work), build / "rpms")
    builtin = builtin_folder("roles")
    modules = [
        role("daemon", DATA / "roles/daemon", 0),
        role("install_packages", builtin / "install_packages", 1, {"packages": ["rpm"]}),
        role("install_rpms", builtin / "install_rpms", 2),
        role("add_user", builtin / "add_user", 3),
    ]
    cfg = {
        "add_users": [
            "alice",
            {
                "name": "bob",
                "ssh_authorized_keys": [BOB_KEY],
                "password_hash": BOB_HASH,
                "groups": ["adm"],
                "shell": "/bin/sh",
            },
        ],
        "rpms": ["rpms"],
        "hotsauce_build_dir": str(build),
    }
    with extracted_root(debian_rootfs_tarball, work) as root:
        rpm_in_base = in_root(root, "dpkg", "-s", "rpm").returncode == 0
        with build_chroot(root):
            run_ansible_modules(
                root,
                modules,
                cfg,
                roles_path=[builtin],
                collections_path=[],
                log_dir=work / "logs",
                emit=lambda _event: None,
            )
        yield RolesRun(root, work / "logs", rpm_in_base)


def passwd_entry(root: Path, name: str) -> list[str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} is not in /etc/passwd")


def test_add_user_creates_both_users_with_sudo_drop_ins_that_visudo_accepts(
    roles_run: RolesRun,
) -> None:
    root = roles_run.root
    assert passwd_entry(root, "alice")[6] == "/bin/bash"
    assert passwd_entry(root, "bob")[6] == "/bin/sh"
    for name in ("alice", "bob"):
        assert (
            f"{name} ALL=(ALL:ALL) NOPASSWD: ALL"
            in (root / f"etc/sudoers.d/90-hotsauce-{name}").read_text()
        )
    checked = in_root(root, "visudo", "-c")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "bob" in (root / "etc/group").read_text().split("\nadm:")[1].splitlines()[0]


def test_add_user_puts_the_ssh_key_in_place_with_the_right_owner_and_mode(
    roles_run: RolesRun,
) -> None:
    entry = passwd_entry(roles_run.root, "bob")
    ssh = roles_run.root / entry[5].lstrip("/") / ".ssh"
    keys = ssh / "authorized_keys"
    assert keys.read_text() == BOB_KEY + "\n"
    for path, mode in ((ssh, 0o700), (keys, 0o600)):
        status = path.stat()
        assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (
            int(entry[2]),
            int(entry[3]),
            mode,
        )
    assert not (roles_run.root / "home/alice/.ssh").exists()


def test_add_user_sets_the_password_hash_and_never_logs_it(roles_run: RolesRun) -> None:
    assert f"bob:{BOB_HASH}:" in (roles_run.root / "etc/shadow").read_text()
    logs = [p for p in roles_run.log_dir.rglob("*") if p.is_file()]
    assert any(p.parent.name == "job_events" for p in logs)
    for log in logs:
        assert BOB_HASH not in log.read_text(errors="replace"), log


def test_install_packages_installs_a_package_not_in_the_base_and_empties_the_apt_caches(
    roles_run: RolesRun,
) -> None:
    assert not roles_run.rpm_in_base
    assert in_root(roles_run.root, "dpkg", "-s", "rpm").returncode == 0
    cache = roles_run.root / "var/cache/apt"
    assert list(cache.glob("archives/*.deb")) == []
    assert list(cache.glob("*.bin")) == []


def test_install_rpms_installs_an_rpm_built_with_rpmbuild(roles_run: RolesRun) -> None:
    queried = in_root(roles_run.root, "rpm", "-q", "hotsauce-hello")
    assert queried.returncode == 0, queried.stdout + queried.stderr
    assert (roles_run.root / "usr/share/hotsauce-hello/hello").read_text() == "hello\n"
    assert not (roles_run.root / "tmp/.hotsauce-rpms").exists()


def test_a_role_that_starts_a_daemon_enables_it_and_starts_nothing(roles_run: RolesRun) -> None:
    assert (roles_run.root / "etc/systemd/system/multi-user.target.wants/cron.service").is_symlink()
    assert processes_in(roles_run.root) == []
