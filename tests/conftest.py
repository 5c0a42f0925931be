"""Shared fixtures: one Debian root per test run, and a leak check after every test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leaks import held_resources

# The packages a bootable Debian root needs; the test root carries them once per run.
BOOTABLE_PACKAGES = (
    "linux-image-cloud-amd64,systemd-sysv,udev,initramfs-tools,login,passwd,"
    "iproute2,ifupdown,isc-dhcp-client,python3,sudo"
)
TEST_ROOTFS_ENV = "HOTSAUCE_TEST_ROOTFS"  # a developer may point this at a tarball made earlier


def host_apt_sources() -> Path:
    """The host's deb822 sources: mmdebstrap reads the mirror from them as they are."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    if not sources:
        pytest.skip("this host has no deb822 apt sources to bootstrap from")
    return sources[0]


@pytest.fixture(scope="session")
def debian_rootfs_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootable Debian bookworm root as a tar.zst, made once per run from the host's mirror."""
    if given := os.environ.get(TEST_ROOTFS_ENV):
        return Path(given)
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    target = tmp_path_factory.mktemp("rootfs") / "bookworm-bootable.tar.zst"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={BOOTABLE_PACKAGES}",
         "bookworm", str(target), str(host_apt_sources())],
        check=True,
    )
    return target


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path: Path) -> Iterator[None]:
    """After every test: no loop device backed by, and no mount under, this test's folders."""
    before = held_resources()
    yield
    leaked = held_resources() - before
    assert not leaked, f"the test left these attached or mounted: {sorted(leaked)}"
