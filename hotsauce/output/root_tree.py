"""The root filesystem of an image set, mounted read-only and walked: `hotsauce diff`'s file list.

The set's own files are never written. A raw root is attached through a
read-only loop device as it is; any other format is first converted to a
temporary raw copy. The filesystem is mounted read-only without replaying its
journal (ext4 `noload`, xfs `norecovery`, btrfs `rescue=nologreplay`): a
read-only mount would otherwise still write the journal's replay to the
device. A partitioned image's root is its largest partition (the only one of
an ec2 disk kept whole, the last and largest of a whole disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from hotsauce.errors import ConfigError
from hotsauce.host import ledger, proc
from hotsauce.host.mounting import mounted
from hotsauce.image.disk import detach_loop
from hotsauce.output.imageset import Manifest
from hotsauce.output.set_diff import FileEntry

# Mount options that keep a read-only mount from writing anything, per filesystem.
READ_ONLY_OPTIONS = {
    "ext4": "ro,noload",
    "xfs": "ro,norecovery,nouuid",  # nouuid: two builds of one build.yaml may share a derived UUID
    "btrfs": "ro,rescue=nologreplay",
}
CHUNK = 1 << 20


@contextmanager
def mounted_set_root(folder: Path, manifest: Manifest, scratch: Path) -> Iterator[Path]:
    """The set's root filesystem, mounted read-only below `scratch`; released on the way out."""
    image = folder / manifest.root
    if not image.is_file():
        raise ConfigError(f"{image}: missing from the image set")
    options = READ_ONLY_OPTIONS.get(manifest.fs_type)
    if options is None:
        raise ConfigError(f"{folder}: cannot read a {manifest.fs_type} root")
    with ExitStack() as held:
        raw = image if _is_raw(image) else held.enter_context(_raw_copy(image, scratch))
        offset, size = _root_partition(raw) if manifest.partitioned else (0, raw.stat().st_size)
        device = held.enter_context(_read_only_loop(raw, offset, size))
        yield held.enter_context(_mounted(device, manifest.fs_type, options, scratch / "root"))


def _is_raw(image: Path) -> bool:
    info = json.loads(proc.output_of(["qemu-img", "info", "--output=json", image]))
    return bool(info.get("format") == "raw")


@contextmanager
def _raw_copy(image: Path, scratch: Path) -> Iterator[Path]:
    raw = scratch / f"{image.name}.raw"
    with ledger.held(ledger.Kind.PATH, raw):
        try:
            proc.run(["qemu-img", "convert", "-O", "raw", image, raw])
            yield raw
        finally:
            raw.unlink(missing_ok=True)


def _root_partition(raw: Path) -> tuple[int, int]:
    table = json.loads(proc.output_of(["sfdisk", "--json", raw]))["partitiontable"]
    sector = table.get("sectorsize", 512)
    largest = max(table["partitions"], key=lambda partition: partition["size"])
    return largest["start"] * sector, largest["size"] * sector


@contextmanager
def _read_only_loop(raw: Path, offset: int, size: int) -> Iterator[Path]:
    device = Path(proc.output_of(["losetup", "--find", "--show", "--read-only", "--offset", str(offset),
                                  "--sizelimit", str(size), raw]))
    with ledger.held(ledger.Kind.LOOP, device, backing=raw.absolute()):
        try:
            yield device
        finally:
            detach_loop(device)


@contextmanager
def _mounted(device: Path, fs_type: str, options: str, mountpoint: Path) -> Iterator[Path]:
    mountpoint.mkdir(parents=True, exist_ok=True)
    with mounted(["-t", fs_type, "-o", options, device], mountpoint):
        yield mountpoint


def walk_root(root: Path) -> dict[str, FileEntry]:
    """Every file, folder, link and device under `root` by its path in the image, never following a
    link nor leaving the filesystem."""
    device = root.stat().st_dev
    entries: dict[str, FileEntry] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        for name in [*dirs, *files]:
            path = here / name
            info = path.lstat()
            entries["/" + str(path.relative_to(root))] = _entry(path, info)
        # a mount inside the root (none in a set's image, but a walk must never leave it)
        dirs[:] = [name for name in dirs if (here / name).lstat().st_dev == device]
    return entries


def _entry(path: Path, info: os.stat_result) -> FileEntry:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        content = "sha256:" + _sha256(path)
    elif stat.S_ISLNK(mode):
        content = "-> " + os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        content = f"device {os.major(info.st_rdev)},{os.minor(info.st_rdev)}"
    else:
        content = "-"
    size = info.st_size if stat.S_ISREG(mode) or stat.S_ISLNK(mode) else 0
    return FileEntry(mode, info.st_uid, info.st_gid, size, content)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def root_files(folder: Path, manifest: Manifest) -> dict[str, FileEntry]:
    """The file list of the set at `folder`."""
    with tempfile.TemporaryDirectory(prefix="hotsauce-diff-") as scratch, \
            mounted_set_root(folder, manifest, Path(scratch)) as root:
        return walk_root(root)
