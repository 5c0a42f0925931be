"""The raw disk image: allocate, partition, attach, format, mount.

Each resource is a context manager that releases what it took, so the
pipeline's nesting is the order of release. The build hosts' kernels may
not parse partition tables on loop devices (`losetup -P` then makes no
`loop0p1`, and without device-mapper kpartx cannot help), so the root
partition is attached as a loop device of its own, with --offset and
--sizelimit, which needs nothing of the kernel but loop devices.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hotsauce.config import FsType
from hotsauce.errors import CommandFailed, ConfigError, StageFailed
from hotsauce.host import ledger, proc, release
from hotsauce.host.mounts import is_mounted_from, loop_backing
from hotsauce.image.reproducible import Reproducible, btrfs_options, ext4_options, xfs_options
from hotsauce.output.imageset import ROOT_LABEL

SECTOR = 512
# The first partition starts at 1 MiB, where every partitioning tool aligns it.
PARTITION_START_SECTOR = 2048
MINIMUM_SIZE = 64 << 20
# Tries of a detach or an unmount that finds its target busy, and the pause between them.
RELEASE_ATTEMPTS = 10
RELEASE_PAUSE_SECONDS = 0.2
# How long the kernel gets to let go of a loop device once detached (it returns as soon as it has).
DETACH_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class Partition:
    offset: int  # bytes from the start of the disk image
    size: int  # bytes


def allocate(path: Path, size: int) -> None:
    """A sparse file of `size` bytes; it takes no space until written."""
    check_size(size)
    with path.open("xb") as image:
        image.truncate(size)


def check_size(size: int) -> None:
    if size < MINIMUM_SIZE:
        raise ConfigError(f"--size: {size} bytes is too small for a root filesystem (at least 64M)")


def write_partition_table(image: Path, repro: Reproducible | None = None) -> Partition:
    """An MBR with one bootable Linux partition over the whole disk; its disk signature
    derived from the inputs when `repro` is given (sfdisk picks a random one otherwise)."""
    label_id = f"label-id: {repro.mbr_disk_id()}\n" if repro else ""
    layout = f"label: dos\n{label_id}start={PARTITION_START_SECTOR}, type=83, bootable\n"
    proc.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image], input_bytes=layout.encode())
    return read_first_partition(image)


def read_first_partition(image: Path) -> Partition:
    """Where the first partition of the image's MBR lies (the root, as write_partition_table made it)."""
    table = json.loads(proc.output_of(["sfdisk", "--json", image]))["partitiontable"]
    sector_size = table.get("sectorsize", SECTOR)
    first = table["partitions"][0]
    return Partition(offset=first["start"] * sector_size, size=first["size"] * sector_size)


@contextmanager
def attached(image: Path, partition: Partition) -> Iterator[Path]:
    """A loop device over one partition of the image; detached on the way out."""
    device = Path(proc.output_of([
        "losetup", "--find", "--show", "--offset", str(partition.offset),
        "--sizelimit", str(partition.size), image,
    ]))
    with ledger.held(ledger.Kind.LOOP, device, backing=image.absolute()):
        try:
            yield device
        finally:
            detach_loop(device)


def detach_loop(device: Path) -> None:
    _run_until_released(["losetup", "--detach", device])
    # A device something still has open (a FUSE-backed image closing, udev probing it) is only
    # marked to go when it is closed, and losetup returns at once: wait for the kernel, so the
    # ledger sees it gone. On a busy host udev held one past 2 s, and the build left it in its ledger.
    # A mount still on it (one that could not be unmounted) keeps it for good: no use waiting then.
    deadline = time.monotonic() + DETACH_WAIT_SECONDS
    while loop_backing(device) is not None and not is_mounted_from(device) and time.monotonic() < deadline:
        time.sleep(0.05)


def _run_until_released(argv: list[str | Path], before_retry: Callable[[], object] = lambda: None) -> None:
    """Run a release command, again for a moment while it fails.

    udev, or a mount or device just closed, can hold what is released for a
    moment after its last user is gone.
    """
    for attempt in range(RELEASE_ATTEMPTS):
        try:
            proc.run(argv)
            return
        except CommandFailed:
            if attempt == RELEASE_ATTEMPTS - 1:
                raise
            before_retry()
            time.sleep(RELEASE_PAUSE_SECONDS)


_MKFS: dict[FsType, list[str]] = {
    FsType.EXT4: ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL],
    FsType.XFS: ["mkfs.xfs", "-q", "-f", "-L", ROOT_LABEL],
    FsType.BTRFS: ["mkfs.btrfs", "-q", "-f", "-L", ROOT_LABEL],
}


_DERIVED_OPTIONS = {FsType.EXT4: ext4_options, FsType.XFS: xfs_options, FsType.BTRFS: btrfs_options}

# A root being built never asks its loop device to flush: each flush is an fsync of the whole image
# file on the host, and the build keeps nothing it would save (a build that dies is thrown away; the
# end unmounts, which writes everything). Measured on the reference layer: the syncfs before
# unmounting took 0.74 s, 0.44 s without flushes. XFS has had no such option since Linux 4.19.
_NO_FLUSH_OPTIONS = {FsType.EXT4: ["-o", "nobarrier"], FsType.BTRFS: ["-o", "nobarrier"]}


def make_filesystem(device: Path, fs_type: FsType, repro: Reproducible | None = None) -> None:
    """The root filesystem; with `repro`, its UUID (and ext4's hash seed and times) from the inputs."""
    if repro is None:
        proc.run([*_MKFS[fs_type], device])
        return
    proc.run([*_MKFS[fs_type], *_DERIVED_OPTIONS[fs_type](repro), device], env={**os.environ, **repro.env()})


@contextmanager
def root_filesystem_mounted(device: Path, mountpoint: Path, *, trim: bool = False,
                            building: FsType | None = None) -> Iterator[Path]:
    """The image's root filesystem on `device` mounted at `mountpoint`, unmounted on the way out.
    With `trim`, a block that ends without error also gives the freed blocks back to the image
    file (fstrim), so that a converted image stays small. `building` names the filesystem of a
    root being built: it is mounted without device flushes where that filesystem allows it."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    options = _NO_FLUSH_OPTIONS.get(building, []) if building else []
    # Recorded before mounting: a build killed during `mount` still leaves a record.
    with ledger.held(ledger.Kind.MOUNT, mountpoint.absolute()):
        proc.run(["mount", *options, device, mountpoint])
        try:
            yield mountpoint
            # Written back first: blocks freed since the journal last committed (the finishing's
            # removals: apt's lists and caches, logs) are not free yet to fstrim, which skips them
            # silently. Measured: fstrim right after removing 160 MiB trimmed nothing, after syncfs all.
            flush(mountpoint)
            if trim:
                proc.run(["fstrim", mountpoint], check=False)
        finally:
            _unmount(mountpoint)


# BLKFLSBUF on the root's device writes the mounted filesystem back (as syncfs does) without
# opening anything inside the root: a process holding a path in it is stopped when a module run ends.
WRITE_BACK_SCRIPT = 'blockdev --flushbufs "$1" && sync --data "$2"'


@contextmanager
def written_back_meanwhile(device: Path, image: Path) -> Iterator[None]:
    """While the block runs, a child writes the data of the root mounted from `device` back to it,
    then the image file to the host's disk. On the whole disk, grub-install writes the disk
    synchronously, and the loop device then has the host write the whole image file: the finish
    waited 0.4 s and 0.35-0.7 s for these with the reference image's base. Where nothing makes the
    host write the image file (the EC2-style set), writing back early cost more than it saved
    (0.6 s more in three runs of four). The child is waited for on the way out, and stopped if
    the block failed."""
    with proc.child_process(["sh", "-c", WRITE_BACK_SCRIPT, "sh", device, image]) as writer:
        yield
        writer.wait()


def flush(mountpoint: Path) -> None:
    """Write everything back to the image, failing if any of it could not be.

    Writes land in the page cache; a full work folder under the image file
    only shows as a write-back error, which syncfs reports and umount does not.
    """
    try:
        proc.run(["sync", "--file-system", mountpoint])
    except CommandFailed as error:
        # Looked at now, while the image file still takes its space.
        stats = os.statvfs(mountpoint.parent)
        full = " (the folder holding the image is full)" if stats.f_bavail * stats.f_frsize < (1 << 20) else ""
        raise StageFailed("finish", f"the image could not be written back{full}: {error}") from None


def _unmount(mountpoint: Path) -> None:
    # Whatever is still mounted below the root by now was left by a tool that died half-way (mmdebstrap
    # on a full disk leaves its /proc, /sys, /dev/pts and /dev/shm): it goes first, deepest first.
    release.unmount_below(mountpoint.absolute(), including_itself=False)
    # What a module left keeping the image busy (a swap file, a process) cannot outlive the build.
    _run_until_released(["umount", mountpoint], before_retry=lambda: release.free_mount(mountpoint.absolute()))
