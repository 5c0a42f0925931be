"""Debian bases from the host's mirror: bootstrapped once, then served from the cache.

One cold bootstrap (about a minute or two) is shared by the whole module.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from hotsauce.bases import debian as base_debian
from hotsauce.bases.debian import provide_debian_base
from hotsauce.config import DebianBase
from hotsauce.events import Event
from hotsauce.host.proc import output_of, run
from hotsauce.image.identity import scrub_image, set_identity
from hotsauce.store.cache import Cache, default_cache_dir

pytestmark = pytest.mark.integration

SPEC = DebianBase(suite="bookworm", include=("curl",))


@contextmanager
def mounted_ext4(folder: Path, size: str = "2G") -> Iterator[Path]:
    """A fresh ext4 on a loop device, mounted (it holds lost+found, as the pipeline's does)."""
    image = folder / "disk.raw"
    run(["truncate", "--size", size, image])
    run(["mkfs.ext4", "-q", image])
    loop = output_of(["losetup", "--find", "--show", image])
    try:
        mountpoint = folder / "mnt"
        mountpoint.mkdir()
        run(["mount", loop, mountpoint])
        try:
            yield mountpoint
        finally:
            run(["umount", mountpoint])
    finally:
        run(["losetup", "--detach", loop])


def installed_packages(root: Path) -> set[str]:
    status = (root / "var/lib/dpkg/status").read_text()
    installed = set()
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Status") == "install ok installed":
            installed.add(fields["Package"])
    return installed


@dataclass
class Provided:
    events: list[Event]
    seconds: float
    packages: set[str]
    kernel_modules: list[str]
    debs_in_image: list[str]
    lists_in_image: list[str]


def provide(root: Path, cache: Cache, spec: DebianBase = SPEC) -> Provided:
    events: list[Event] = []
    started = time.monotonic()
    provide_debian_base(spec, root, cache, events.append)
    return Provided(
        events=events,
        seconds=time.monotonic() - started,
        packages=installed_packages(root),
        kernel_modules=sorted(p.name for p in (root / "usr/lib/modules").iterdir()),
        debs_in_image=sorted(p.name for p in (root / "var/cache/apt/archives").glob("*.deb")),
        lists_in_image=sorted(p.name for p in (root / "var/lib/apt/lists").glob("*Packages*")),
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cache]:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOTSAUCE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield Cache(default_cache_dir())


@pytest.fixture(scope="module")
def cold(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> Provided:
    """The first provide: a bootstrap into a mounted ext4."""
    with mounted_ext4(tmp_path_factory.mktemp("disk")) as root:
        return provide(root, cache)


@pytest.fixture(scope="module")
def warm_root(cold: Provided, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("warm") / "root"


@pytest.fixture(scope="module")
def warm(cold: Provided, cache: Cache, warm_root: Path) -> Provided:
    """The second provide of the same spec: into a plain empty folder this time."""
    warm_root.mkdir()
    return provide(warm_root, cache)


def test_a_bootable_base_holds_the_kernels_modules_systemd_sudo_and_the_include_packages(
    cold: Provided,
) -> None:
    assert {"linux-image-cloud-amd64", "systemd-sysv", "udev", "sudo", "python3", "curl"} <= (
        cold.packages
    )
    assert [name for name in cold.kernel_modules if name.endswith("-cloud-amd64")]


def test_the_first_provide_says_why_the_base_was_bootstrapped(cold: Provided) -> None:
    [info] = [e for e in cold.events if e.kind == "info"]
    assert info.data["cached"] is False
    assert "no cached bookworm base" in info.message


def test_downloaded_debs_are_kept_in_the_cache_outside_the_image(
    cold: Provided, cache: Cache
) -> None:
    pool = cache.root / base_debian.DEBS / "amd64"
    assert list(pool.glob("linux-image-*-cloud-amd64*.deb"))
    assert list(pool.glob("curl_*.deb"))
    assert cold.debs_in_image == []


def test_the_base_keeps_its_apt_lists_for_the_modules(cold: Provided) -> None:
    assert cold.lists_in_image


def test_the_same_spec_again_is_served_from_the_cache_several_times_faster(
    cold: Provided, warm: Provided
) -> None:
    [info] = [e for e in warm.events if e.kind == "info"]
    assert info.data["cached"] is True
    assert "served from the cache" in info.message
    assert warm.packages == cold.packages
    assert warm.kernel_modules == cold.kernel_modules
    assert warm.seconds * 3 < cold.seconds, (warm.seconds, cold.seconds)


def test_a_changed_include_misses_the_cache_and_the_reason_names_it(
    cold: Provided, cache: Cache
) -> None:
    changed = DebianBase(suite="bookworm", include=("curl", "vim-tiny"))
    plan = base_debian.plan_bootstrap(changed)
    key = plan.key(base_debian.release_dates(plan.sources))
    assert not (cache.root / base_debian.BASES / base_debian.entry_name(key)).exists()
    assert base_debian.miss_reason(cache, key) == "the key changed (include)"
    same = base_debian.plan_bootstrap(SPEC)
    same_key = same.key(base_debian.release_dates(same.sources))
    assert (cache.root / base_debian.BASES / base_debian.entry_name(same_key)).is_file()


def test_identity_and_scrub_leave_no_trace_of_the_build_host_in_a_real_base(
    warm: Provided, warm_root: Path
) -> None:
    host_name = os.uname().nodename
    set_identity(warm_root, "hotsauce")
    scrub_image(warm_root)
    assert (warm_root / "etc/hostname").read_text() == "hotsauce\n"
    assert host_name not in (warm_root / "etc/hosts").read_text()
    assert not (warm_root / "etc/resolv.conf").exists()
    assert (warm_root / "etc/machine-id").read_text() == ""
    assert not list((warm_root / "etc").glob("ssh/ssh_host_*"))
    assert not list((warm_root / "var/lib/apt/lists").glob("*Packages*"))
    assert not list((warm_root / "var/cache/apt").glob("*.bin"))


def test_the_bootstrap_s_speed_ups_leave_no_trace_in_the_base(warm: Provided, warm_root: Path) -> None:
    """eatmydata's dpkg wrapper and the deferred update-initramfs are gone, the packages' own files back."""
    diversions = output_of(["chroot", warm_root, "dpkg-divert", "--list"])
    assert "hotsauce" not in diversions
    assert not list(warm_root.glob("usr/lib/hotsauce*")) and not list(warm_root.glob("usr/*bin/*.hotsauce-*"))
    assert (warm_root / "usr/bin/dpkg").read_bytes()[:4] == b"\x7fELF"
    changed = output_of(["chroot", warm_root, "dpkg", "--verify", "dpkg", "initramfs-tools"])
    assert changed == "", changed
    assert not (warm_root / "etc/dpkg/dpkg.cfg.d/zz-hotsauce-unsafe-io").exists()


def test_the_initramfs_is_made_for_every_kernel_with_what_the_later_packages_add(
    warm: Provided, warm_root: Path
) -> None:
    """It is made once, after every package: udev's rules and the kernel's drivers are in it."""
    [kernel] = [name for name in warm.kernel_modules if name.endswith("-cloud-amd64")]
    initrd = warm_root / "boot" / f"initrd.img-{kernel}"
    assert initrd.is_file()
    listing = output_of(["chroot", warm_root, "lsinitramfs", f"/boot/initrd.img-{kernel}"]).split()
    assert any(path.endswith("/udev/rules.d/60-persistent-storage.rules") for path in listing)
    assert any(path.endswith("/virtio_blk.ko") for path in listing)
    # Compressed as initramfs-tools compresses by default (COMPRESS=zstd): the base brings zstd.
    assert main_archive_magic(initrd.read_bytes()) == ZSTD_MAGIC


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def main_archive_magic(initrd: bytes) -> bytes:
    """The first bytes of the compressed archive, past any uncompressed early cpio (microcode)."""
    position = 0
    while initrd.startswith(b"070701", position):
        position = initrd.index(b"TRAILER!!!", position) + len(b"TRAILER!!!")
        while initrd[position:position + 1] == b"\0":
            position += 1
    return initrd[position:position + 4]


def test_usr_is_merged_as_debootstrap_merges_it_without_usrmerge_and_perl(warm: Provided, warm_root: Path) -> None:
    assert os.readlink(warm_root / "bin") == "usr/bin"
    assert "usr-is-merged" in warm.packages
    assert not {"usrmerge", "perl", "libperl5.36"} & warm.packages
