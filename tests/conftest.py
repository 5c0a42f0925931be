"""Shared fixtures: one Debian root per test run, and a leak check after every test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leaks import held_resources

pytest_plugins = ["tests.faults.plugin"]

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


@pytest.fixture(scope="session", autouse=True)
def temporary_files_in_the_test_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Builds run by the tests keep their temporary files under this run's folder,
    so the leak check can tell them from anything else on the machine."""
    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir(exist_ok=True)
    saved_env, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    yield folder
    tempfile.tempdir = saved_tempdir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After every test: no loop device backed by, and no mount under, this run's folders."""
    ours = str(tmp_path_factory.getbasetemp())
    before = held_resources(ours)
    yield
    leaked = held_resources(ours) - before
    assert not leaked, f"the test left these attached or mounted: {sorted(leaked)}"
