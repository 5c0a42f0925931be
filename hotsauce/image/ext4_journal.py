"""An unmounted ext4 root's journal emptied to holes before the image is converted.

After a clean unmount the journal holds nothing that is ever read again: its
superblock says the log is empty (`Journal start: 0`), and the next mount
starts a new log behind it, as on a filesystem just made. The blocks the build
wrote through it are still there, though: 28 MiB of the reference disk's
470 MiB of data, which every format would otherwise copy or compress. Only
the journal's own superblock (its first block) is kept; the rest reads as
zeroes, which is what mkfs leaves there.

Reads and changes the image file only, never a mounted filesystem.
"""

from __future__ import annotations

import re
from pathlib import Path

from hotsauce.host import proc
from hotsauce.image.disk import Partition

# debugfs's `stat` lists a file's extents as "(FIRST-LAST):START-END" or, for one block, "(N):BLOCK";
# extent tree blocks appear as "(ETB0):BLOCK" and are never matched.
_EXTENT = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")


def empty_journal(image: Path, partition: Partition) -> int:
    """Punch out the journal of the unmounted ext4 filesystem in `partition` of `image`, all but its
    superblock; the bytes punched. Nothing when the journal is not internal or not empty."""
    where = f"{image}?offset={partition.offset}"
    header = proc.output_of(["dumpe2fs", "-h", where])
    block_size, journal_start, journal_inode = (_field(header, name) for name in
                                                ("Block size", "Journal start", "Journal inode"))
    if block_size is None or journal_start != 0 or journal_inode is None:
        return 0  # no internal journal, or one still to be replayed: it is left as it is
    punched = 0
    for first_block, count in log_blocks(proc.output_of(["debugfs", "-R", f"stat <{journal_inode}>", where])):
        offset, length = partition.offset + first_block * block_size, count * block_size
        proc.run(["fallocate", "--punch-hole", "--keep-size", "--offset", str(offset), "--length", str(length),
                  image])
        punched += length
    return punched


def log_blocks(stat_output: str) -> list[tuple[int, int]]:
    """(first physical block, count) of each extent of the journal in debugfs's `stat` output, the
    journal's superblock (its logical block 0) left out."""
    extents = stat_output.partition("EXTENTS:")[2]
    ranges = []
    for match in _EXTENT.finditer(extents):
        logical = int(match.group(1))
        physical = int(match.group(3))
        count = int(match.group(4) or physical) - physical + 1
        if logical == 0:
            physical, count = physical + 1, count - 1
        if count > 0:
            ranges.append((physical, count))
    return ranges


def _field(dumpe2fs_header: str, name: str) -> int | None:
    match = re.search(rf"^{name}:\s+(\d+)\s*$", dumpe2fs_header, re.MULTILINE)
    return int(match.group(1)) if match else None
