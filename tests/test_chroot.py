"""build_chroot: kernel filesystems, no services, the host's resolver, all released."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotsauce.bases.bootstrap_hooks import DPKG_UNSAFE_IO
from hotsauce.modules.chroot import build_chroot
from tests.image_root import extracted_root, in_root, mounts_under

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root(debian_rootfs_tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with extracted_root(debian_rootfs_tarball, tmp_path_factory.mktemp("chroot")) as root:
        yield root


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mirror_host() -> str:
    """A host name the build host resolves: its own Debian mirror, read from its apt sources."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        if match := re.search(r"^URIs:\s*\w+://([^/:\s]+)", sources.read_text(), re.MULTILINE):
            return match.group(1)
    pytest.skip("no deb822 apt sources on this host")


def test_kernel_filesystems_are_mounted_while_held_and_released_after(root: Path) -> None:
    with build_chroot(root):
        mounted = mounts_under(root)
        for relative in ("proc", "sys", "dev", "dev/pts"):
            assert str(root.resolve() / relative) in mounted
        assert in_root(root, "cat", "/proc/self/comm").stdout.strip() == "cat"
    assert mounts_under(root) == []


def test_services_cannot_start_but_units_are_enabled(root: Path) -> None:
    systemctl = root / "usr/bin/systemctl"
    original = digest(systemctl)
    wants = root / "etc/systemd/system/getty.target.wants/getty@tty5.service"
    with build_chroot(root):
        assert in_root(root, "/usr/sbin/policy-rc.d").returncode == 101
        assert in_root(root, "systemctl", "enable", "getty@tty5.service").returncode == 0
        started = in_root(root, "systemctl", "start", "getty@tty5.service")
        restarted = in_root(root, "systemctl", "restart", "getty@tty5.service")
        assert (started.returncode, restarted.returncode) == (0, 0), started.stderr
        assert in_root(root, "start-stop-daemon", "--start", "--exec", "/bin/sleep").returncode == 0
    assert wants.is_symlink()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert digest(systemctl) == original
    assert not list(root.glob("usr/*bin/*.hotsauce-saved"))


def test_names_resolve_inside_and_the_image_resolver_files_come_back_exactly(root: Path) -> None:
    resolv = root / "etc/resolv.conf"
    resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 image\n")
    kept = {
        name: ((root / name).read_bytes(), (root / name).stat().st_mode)
        for name in ("etc/hostname", "etc/hosts")
    }
    with build_chroot(root):
        assert resolv.read_text() == Path("/etc/resolv.conf").read_text()
        looked_up = in_root(root, "getent", "hosts", mirror_host())
        assert looked_up.returncode == 0, looked_up.stderr
    assert resolv.is_symlink()
    assert str(resolv.readlink()) == "../run/systemd/resolve/stub-resolv.conf"
    assert kept == {
        name: ((root / name).read_bytes(), (root / name).stat().st_mode) for name in kept
    }


def test_a_resolv_conf_written_on_purpose_during_the_build_is_kept(root: Path) -> None:
    resolv = root / "etc/resolv.conf"
    with build_chroot(root):
        resolv.unlink()
        resolv.write_text("nameserver 192.0.2.1\n")
    assert resolv.read_text() == "nameserver 192.0.2.1\n"
    assert not (root / "etc/resolv.conf.hotsauce-saved").exists()


def test_everything_is_released_when_the_block_raises(root: Path) -> None:
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("nameserver 192.0.2.7\n")
    with pytest.raises(RuntimeError, match="module broke"), build_chroot(root):
        raise RuntimeError("module broke")
    assert mounts_under(root) == []
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert resolv.read_text() == "nameserver 192.0.2.7\n"
    assert not list(root.glob("**/*.hotsauce-saved"))


def test_dpkg_skips_its_syncs_while_modules_run_and_the_switch_leaves_with_the_chroot(root: Path) -> None:
    switch = root / DPKG_UNSAFE_IO
    assert not switch.exists(), "the bootstrap left dpkg's unsafe-io switch in the base"
    with build_chroot(root):
        shown = in_root(root, "sh", "-c", "cat /etc/dpkg/dpkg.cfg.d/*")
        assert "force-unsafe-io" in shown.stdout.split()
    assert not switch.exists() and not switch.is_symlink()
