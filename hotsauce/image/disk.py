"""The raw disk image: allocate, partition, attach, format, mount.

Each resource is a context manager that releases what it took, so the
pipeline's nesting is the order of release. This kernel has no MBR parser
for loop devices (NOTES.md), so the root partition is attached as a loop
device of its own, with --offset and --sizelimit, instead of `losetup -P`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hotsauce.config import FsType
from hotsauce.errors import CommandFailed, ConfigError, StageFailed
from hotsauce.host import ledger, proc, release
from hotsauce.output.imageset import ROOT_LABEL

SECTOR = 512
# The first partition starts at 1 MiB, where every partitioning tool aligns it.
PARTITION_START_SECTOR = 2048
MINIMUM_SIZE = 64 << 20


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


def write_partition_table(image: Path) -> Partition:
    """An MBR with one bootable Linux partition over the whole disk."""
    layout = f"label: dos\nstart={PARTITION_START_SECTOR}, type=83, bootable\n"
    proc.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image], input_bytes=layout.encode())
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
            _detach(device)


def _detach(device: Path) -> None:
    # udev or a just-closed mount can hold the device for a moment.
    for attempt in range(10):
        try:
            proc.run(["losetup", "--detach", device])
            return
        except CommandFailed:
            if attempt == 9:
                raise
            time.sleep(0.2)


_MKFS: dict[FsType, list[str]] = {
    FsType.EXT4: ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL],
    FsType.XFS: ["mkfs.xfs", "-q", "-f", "-L", ROOT_LABEL],
    FsType.BTRFS: ["mkfs.btrfs", "-q", "-f", "-L", ROOT_LABEL],
}


def make_filesystem(device: Path, fs_type: FsType) -> None:
    proc.run([*_MKFS[fs_type], device])


@contextmanager
def mounted(device: Path, mountpoint: Path) -> Iterator[Path]:
    """The filesystem on `device` mounted at `mountpoint`, unmounted on the way out."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    # Recorded before mounting: a build killed during `mount` still leaves a record.
    with ledger.held(ledger.Kind.MOUNT, mountpoint.absolute()):
        proc.run(["mount", device, mountpoint])
        try:
            yield mountpoint
            flush(mountpoint)
        finally:
            _unmount(mountpoint)


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
    for attempt in range(10):
        try:
            proc.run(["umount", mountpoint])
            return
        except CommandFailed:
            if attempt == 9:
                raise
            # What a module left keeping the image busy (a swap file, a process) cannot outlive the build.
            release.free_mount(mountpoint.absolute())
            time.sleep(0.2)


def trim(mountpoint: Path) -> None:
    """Give freed blocks back to the sparse file so the converted image stays small."""
    proc.run(["fstrim", mountpoint], check=False)
