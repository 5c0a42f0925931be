"""What makes two builds of the same inputs give the same bytes.

Two things decide everything that would otherwise come from the clock or
from randomness:

- the epoch (`SOURCE_DATE_EPOCH`): from the environment, or from the base
  (the newest Release date of the mirror suites, or the newest member of a
  downloaded root tarball). No file time in the image or the set is later;
- the seed: a digest of every input (the configuration, the base's identity,
  each module's files, the image's size and filesystem). Filesystem and
  partition UUIDs, the ext4 hash seed, the FAT volume id and the build id
  are derived from it.

A mounted ext4 is not byte-reproducible: the kernel gives every new inode a
random generation number, places blocks through per-CPU preallocations and
stamps mount times and a journal. So, once the root is finished, the ext4
filesystem is made again from the finished tree by `mke2fs -d`, which is
single-threaded, walks folders in name order and takes its own times from
E2FSPROGS_FAKE_TIME; the inodes' change times, which it copies from the
tree, are then set to the epoch with debugfs. XFS has no such tool in this
xfsprogs: its file tree is reproducible, its bytes are not (README).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from hotsauce.errors import ConfigError
from hotsauce.host import proc

EPOCH_ENV = "SOURCE_DATE_EPOCH"
# e2fsprogs takes its "now" from this variable instead of the clock.
E2FSPROGS_TIME_ENV = "E2FSPROGS_FAKE_TIME"
ROOT_INODE = 2


@dataclass(frozen=True)
class Reproducible:
    """The epoch and the seed of one build (see the module's text)."""

    epoch: int
    seed: str  # hex digest of the build's inputs

    def uuid(self, purpose: str) -> str:
        """A UUID (version 4 in form) for `purpose`, the same for the same inputs."""
        digest = hashlib.sha256(f"{self.seed}:{purpose}".encode()).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def fat_volume_id(self) -> str:
        """Eight hex digits, as mkfs.vfat -i takes them."""
        return hashlib.sha256(f"{self.seed}:fat-volume-id".encode()).hexdigest()[:8]

    def mbr_disk_id(self) -> str:
        """An MBR's 32-bit disk signature, as sfdisk's label-id takes it."""
        return "0x" + hashlib.sha256(f"{self.seed}:mbr-disk-id".encode()).hexdigest()[:8]

    def build_id(self) -> str:
        """Time-ordered like before (the epoch's time), named by the inputs rather than chance."""
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.epoch)) + "-" + self.seed[:6]

    def iso_time(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.epoch))

    def env(self) -> dict[str, str]:
        """What tools that honour it read the epoch from."""
        return {EPOCH_ENV: str(self.epoch), E2FSPROGS_TIME_ENV: str(self.epoch)}


# --- the epoch ----------------------------------------------------------------


def epoch_from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH as the caller set it; None when unset. Bad input is a ConfigError."""
    text = (os.environ if environ is None else environ).get(EPOCH_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ConfigError(f"{EPOCH_ENV}: expected a whole number of seconds since 1970, got {text!r}")
    return int(text)


def epoch_of_release_dates(dates: Mapping[str, str]) -> int:
    """The newest of a mirror's Release `Date:` fields (RFC 2822 dates), as seconds."""
    newest = 0
    for where, text in dates.items():
        try:
            newest = max(newest, int(parsedate_to_datetime(text).timestamp()))
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: the Release file's Date {text!r} is not a date") from None
    return newest


# --- the seed -----------------------------------------------------------------


def input_seed(parts: Mapping[str, Any]) -> str:
    """A digest of the inputs, as JSON with sorted keys (anything else by its str())."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# --- ext4 made again from the finished tree ------------------------------------


def ext4_options(repro: Reproducible) -> list[str]:
    """mkfs.ext4's options that would otherwise come from randomness."""
    return ["-U", repro.uuid("root-filesystem"), "-E", f"hash_seed={repro.uuid('ext4-hash-seed')}"]


def xfs_options(repro: Reproducible) -> list[str]:
    return ["-m", f"uuid={repro.uuid('root-filesystem')}"]


def btrfs_options(repro: Reproducible) -> list[str]:
    return ["-U", repro.uuid("root-filesystem")]


@contextmanager
def read_only(mountpoint: Path) -> Iterator[None]:
    """The mounted root read-only while it is read: no access time moves, nothing changes under the reader."""
    proc.run(["mount", "-o", "remount,ro", mountpoint])
    try:
        yield
    finally:
        proc.run(["mount", "-o", "remount,rw", mountpoint])


def make_ext4_from_tree(tree: Path, target: Path, size: int, label: str, repro: Reproducible) -> None:
    """A new ext4 of `size` bytes at `target` (a file) holding `tree`, the same bytes for the same tree."""
    with target.open("xb") as image:
        image.truncate(size)
    env = {**os.environ, **repro.env()}
    root = tree.stat()  # before mke2fs reads the folder, which may move its access time
    proc.run(["mkfs.ext4", "-q", "-F", "-L", label, *ext4_options(repro), "-d", tree, target], env=env)
    set_change_times(target, repro.epoch, env, root)


def set_change_times(filesystem: Path, epoch: int, env: Mapping[str, str], root: os.stat_result) -> None:
    """Every used inode's change time to the epoch: mke2fs -d copies it from the tree, where it is
    the time the file was last touched, which no one can set. debugfs stamps the superblock's
    write time when it closes: from E2FSPROGS_FAKE_TIME in `env`, not the clock.

    mke2fs -d leaves the root folder as it makes it; it takes the tree's mode, owner and times (`root`) here.
    """
    script = "".join([
        f"sif <{ROOT_INODE}> mode 0{root.st_mode:o}\n",
        f"sif <{ROOT_INODE}> uid {root.st_uid}\n",
        f"sif <{ROOT_INODE}> gid {root.st_gid}\n",
        f"sif <{ROOT_INODE}> mtime @{int(root.st_mtime)}\n",
        f"sif <{ROOT_INODE}> atime @{int(root.st_atime)}\n",
        *(f"sif <{inode}> ctime @{epoch}\n" for inode in used_inodes(filesystem)),
    ])
    proc.run(["debugfs", "-w", "-f", "-", filesystem], input_bytes=script.encode(), env=dict(env))


def used_inodes(filesystem: Path) -> list[int]:
    """The inode numbers in use, read from dumpe2fs's per-group free ranges."""
    return inodes_in_use(proc.output_of(["dumpe2fs", filesystem]))


def inodes_in_use(dumpe2fs_output: str) -> list[int]:
    count = re.search(r"^Inode count:\s+(\d+)", dumpe2fs_output, re.MULTILINE)
    if count is None:
        raise ValueError("dumpe2fs printed no inode count")
    free: set[int] = set()
    for ranges in re.findall(r"^\s+Free inodes:[ \t]*(.*)$", dumpe2fs_output, re.MULTILINE):
        for item in filter(None, (part.strip() for part in ranges.split(","))):
            first, _, last = item.partition("-")
            free.update(range(int(first), int(last or first) + 1))
    return [inode for inode in range(1, int(count.group(1)) + 1) if inode not in free]


def write_filesystem_into(disk: Path, offset: int, length: int, filesystem: Path) -> None:
    """Replace the bytes of a partition by a filesystem made apart; what it does not write reads as zeroes."""
    proc.run(["fallocate", "--punch-hole", "--keep-size", "--offset", str(offset), "--length", str(length), disk])
    proc.run(["dd", f"if={filesystem}", f"of={disk}", "bs=4M", f"seek={offset}", "oflag=seek_bytes",
              "conv=notrunc,sparse", "status=none"])
