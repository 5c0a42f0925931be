"""An unmounted ext4 root's journal emptied to holes before conversion, all but its superblock."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hotsauce.host.mounting import mounted
from hotsauce.image.disk import Partition, attached
from hotsauce.image.ext4_journal import empty_journal, log_blocks

MIB = 1 << 20
PARTITION = Partition(offset=MIB, size=64 * MIB)


def test_the_journal_superblock_and_extent_tree_blocks_are_never_in_the_log_blocks() -> None:
    stat = "Inode: 8 ...\nEXTENTS:\n(ETB0):1234, (0-1023):5000-6023, (1024-2047):9000-10023, (2048):11000\n"
    assert log_blocks(stat) == [(5001, 1023), (9000, 1024), (11000, 1)]
    assert log_blocks("EXTENTS:\n(0):700\n") == []  # a journal of one block: its superblock only


def journal_blocks(image: Path) -> list[int]:
    """The journal's blocks in its own order, its superblock first, as debugfs lists them."""
    where = f"{image}?offset={PARTITION.offset}"
    listed = subprocess.run(["debugfs", "-R", "blocks <8>", where], capture_output=True, text=True, check=True)
    return [int(block) for block in listed.stdout.split()]


def written(image: Path, blocks: list[int], block_size: int = 4096) -> list[int]:
    """Those of `blocks` of the partition that are not all zeroes."""
    with image.open("rb") as disk:
        def holds_data(block: int) -> bool:
            disk.seek(PARTITION.offset + block * block_size)
            return disk.read(block_size).count(0) != block_size
        return [block for block in blocks if holds_data(block)]


@pytest.mark.integration
def test_a_journal_the_build_wrote_through_is_emptied_and_the_filesystem_stays_whole(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    subprocess.run(["truncate", "--size", str(PARTITION.offset + PARTITION.size), image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-b", "4096", "-E", f"offset={PARTITION.offset}", image,
                    f"{PARTITION.size // 1024}k"], check=True)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    with attached(image, PARTITION) as device, mounted([device], mountpoint):
        for n in range(2000):  # metadata enough to go through the journal
            (mountpoint / f"file-{n}").write_text(f"content {n}\n")
    blocks = journal_blocks(image)
    assert len(written(image, blocks)) > 10

    assert empty_journal(image, PARTITION) == (len(blocks) - 1) * 4096

    assert written(image, blocks) == blocks[:1]  # the journal's superblock
    subprocess.run(["e2fsck", "-f", "-n", f"{image}?offset={PARTITION.offset}"], check=True, capture_output=True)
    with attached(image, PARTITION) as device, mounted([device], mountpoint):
        assert (mountpoint / "file-1999").read_text() == "content 1999\n"
        (mountpoint / "after").write_text("the journal works again\n")
    subprocess.run(["e2fsck", "-f", "-n", f"{image}?offset={PARTITION.offset}"], check=True, capture_output=True)
