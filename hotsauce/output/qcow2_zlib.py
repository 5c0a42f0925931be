"""A zlib-compressed qcow2 of a raw disk, written by hotsauce on every core.

Why not `qemu-img convert -c`: QEMU deflates every cluster at zlib's level 6
and has no option to choose. Here each cluster is deflated at level 1 by
zlib-ng, on all cores: 494 MiB of the reference disk's data on this machine's
two cores took qemu-img 10.9-13 s, and this writer about 2 s.

Why zlib-ng: its streams are ordinary deflate, which QEMU's zlib inflates,
and it deflates that disk's clusters in 1.3 s at its level 1 (226 MiB) or
2.2 s at its level 2 (191 MiB), where zlib's own level 1 takes 3.6 s
(189 MiB). Level 1 keeps the file well under diskimage-builder's 331 MiB.

The file is an ordinary qcow2 as qemu-img itself writes it (version 3,
64 KiB clusters, 16-bit refcounts, compression type zlib), so every reader
of qcow2 reads it, and `qemu-img check` finds nothing:
- host cluster 0 holds the header; the compressed clusters follow, packed
  back to back; the tables (L2, L1, refcount table and blocks) come last,
  once the data's size is known;
- a cluster is raw deflate with a 4 KiB window, which is how QEMU inflates
  it; one that does not shrink is stored as it is, cluster-aligned;
- an all-zero cluster is left out: with no backing file it reads as zeroes;
- the same disk always gives the same file on one machine (clusters are
  written in order); zlib-ng does not promise the same deflate bytes on
  every CPU, so across machines only the disk inside is sure to be equal.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zlib_ng import zlib_ng

from hotsauce.host import cancel

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
SECTOR = 512
LEVEL = 1
WINDOW_BITS = -12  # raw deflate, 4 KiB window: what QEMU's qcow2 driver inflates
BATCH_CLUSTERS = 64  # 4 MiB read and compressed at a time by one worker
L2_ENTRIES = CLUSTER // 8
REFCOUNT_ORDER = 4  # 16-bit refcounts, qemu-img's default
REFCOUNTS_PER_BLOCK = CLUSTER * 8 // (1 << REFCOUNT_ORDER)
HEADER_LENGTH = 112  # version 3 with the compression type byte (0: zlib), padded to a multiple of 8
COPIED = 1 << 63  # a table or cluster whose refcount is exactly one
COMPRESSED = 1 << 62
# In a compressed cluster's L2 entry, the count of extra 512-byte sectors sits above the host offset.
SECTORS_SHIFT = 62 - (CLUSTER_BITS - 8)
_ZERO_CLUSTER = bytes(CLUSTER)


@dataclass
class _Image:
    """The file as it is being written: where the next byte goes, what each guest cluster maps to,
    and how many L2 entries refer to each host cluster."""

    end: int = CLUSTER  # host cluster 0 is the header
    mapping: dict[int, int] = field(default_factory=dict)  # guest cluster -> L2 entry
    refcounts: list[int] = field(default_factory=lambda: [1])

    def count(self, first_byte: int, last_byte: int) -> None:
        for host_cluster in range(first_byte // CLUSTER, last_byte // CLUSTER + 1):
            while len(self.refcounts) <= host_cluster:
                self.refcounts.append(0)
            self.refcounts[host_cluster] += 1


def write_compressed_qcow2(raw_disk: Path, target: Path, workers: int | None = None) -> None:
    """`target`: `raw_disk` as a zlib-compressed qcow2 of the same virtual size."""
    virtual_size = raw_disk.stat().st_size
    image = _Image()
    with open(raw_disk, "rb") as source, open(target, "wb") as out:
        for guest_cluster, data, compressed in _compressed_clusters(source.fileno(), virtual_size, workers):
            _append(out, image, guest_cluster, data, compressed)
        _write_tables(out, image, virtual_size)


def _append(out: BinaryIO, image: _Image, guest_cluster: int, data: bytes, compressed: bool) -> None:
    if compressed:
        offset = image.end
        extra_sectors = (offset + len(data) - 1) // SECTOR - offset // SECTOR
        image.mapping[guest_cluster] = COMPRESSED | (extra_sectors << SECTORS_SHIFT) | offset
        # QEMU reads, and counts references for, whole sectors up to the end of the last one.
        image.count(offset, (offset // SECTOR + extra_sectors + 1) * SECTOR - 1)
        image.end = offset + len(data)
    else:
        offset = _align(image.end)
        image.mapping[guest_cluster] = COPIED | offset
        image.count(offset, offset + CLUSTER - 1)
        image.end = offset + CLUSTER
    _write_at(out, offset, data)


def _compressed_clusters(fd: int, size: int, workers: int | None) -> Iterator[tuple[int, bytes, bool]]:
    """(guest cluster, its bytes, compressed?) for every cluster that is not all zeroes, in order;
    batches are read here and deflated by a pool, a few batches ahead of the writer."""
    workers = workers or len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[list[tuple[int, bytes, bool]]]] = deque()
        for first, batch in _batches(fd, size):
            cancel.check()  # a build asked to stop stops here, as it would stop qemu-img
            pending.append(pool.submit(_deflate_batch, first, batch))
            if len(pending) > 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _batches(fd: int, size: int) -> Iterator[tuple[int, bytes]]:
    """(first guest cluster, bytes) of the disk's data, cluster-aligned; holes are skipped."""
    next_cluster = 0
    for start, end in _data_ranges(fd, size):
        first = max(start // CLUSTER, next_cluster)
        last = -(-end // CLUSTER)  # exclusive
        for batch_start in range(first, last, BATCH_CLUSTERS):
            count = min(BATCH_CLUSTERS, last - batch_start)
            data = os.pread(fd, count * CLUSTER, batch_start * CLUSTER)
            yield batch_start, data.ljust(count * CLUSTER, b"\0")  # a disk's tail past its last cluster
        next_cluster = max(next_cluster, last)


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Byte ranges of the file that hold data, as the filesystem reports them."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after `position`
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        position = end


def _deflate_batch(first: int, batch: bytes) -> list[tuple[int, bytes, bool]]:
    clusters = []
    for index in range(len(batch) // CLUSTER):
        data = batch[index * CLUSTER:(index + 1) * CLUSTER]
        if data == _ZERO_CLUSTER:
            continue
        deflater = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, WINDOW_BITS)
        packed = deflater.compress(data) + deflater.flush()
        if len(packed) < CLUSTER - SECTOR:
            clusters.append((first + index, packed, True))
        else:
            clusters.append((first + index, data, False))
    return clusters


def _write_tables(out: BinaryIO, image: _Image, virtual_size: int) -> None:
    """L2 tables, the L1 table, the refcount table and blocks after the data; then the header."""
    guest_clusters = -(-virtual_size // CLUSTER)
    l1_size = -(-guest_clusters // L2_ENTRIES)
    l2_indexes = sorted({guest // L2_ENTRIES for guest in image.mapping})
    tables_start = cursor = _align(image.end)
    l2_offsets = {index: cursor + n * CLUSTER for n, index in enumerate(l2_indexes)}
    cursor += len(l2_indexes) * CLUSTER
    l1_offset, l1_clusters = cursor, -(-l1_size * 8 // CLUSTER)
    cursor += l1_clusters * CLUSTER
    table_clusters, block_count = _refcount_space(cursor // CLUSTER)
    table_offset = cursor
    blocks_offset = table_offset + table_clusters * CLUSTER
    image.refcounts.extend([0] * (blocks_offset // CLUSTER + block_count - len(image.refcounts)))
    for host_cluster in range(tables_start // CLUSTER, blocks_offset // CLUSTER + block_count):
        image.refcounts[host_cluster] += 1

    for index, offset in l2_offsets.items():
        entries = [image.mapping.get(index * L2_ENTRIES + slot, 0) for slot in range(L2_ENTRIES)]
        _write_at(out, offset, struct.pack(f">{L2_ENTRIES}Q", *entries))
    l1 = [COPIED | l2_offsets[index] if index in l2_offsets else 0 for index in range(l1_size)]
    _write_at(out, l1_offset, struct.pack(f">{l1_size}Q", *l1).ljust(l1_clusters * CLUSTER, b"\0"))
    blocks = [blocks_offset + n * CLUSTER for n in range(block_count)]
    _write_at(out, table_offset, struct.pack(f">{block_count}Q", *blocks).ljust(table_clusters * CLUSTER, b"\0"))
    counts = image.refcounts + [0] * (block_count * REFCOUNTS_PER_BLOCK - len(image.refcounts))
    _write_at(out, blocks_offset, struct.pack(f">{len(counts)}H", *counts))
    _write_at(out, 0, _header(virtual_size, l1_size, l1_offset, table_offset, table_clusters))


def _refcount_space(clusters_before: int) -> tuple[int, int]:
    """(refcount table clusters, refcount blocks) that cover every host cluster, themselves included."""
    table_clusters, block_count = 1, 1
    while True:
        total = clusters_before + table_clusters + block_count
        needed_blocks = -(-total // REFCOUNTS_PER_BLOCK)
        needed_table = -(-needed_blocks * 8 // CLUSTER)
        if (needed_table, needed_blocks) == (table_clusters, block_count):
            return table_clusters, block_count
        table_clusters, block_count = max(table_clusters, needed_table), max(block_count, needed_blocks)


def _header(virtual_size: int, l1_size: int, l1_offset: int, table_offset: int, table_clusters: int) -> bytes:
    fields = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb", 3,  # magic, version
        0, 0,  # no backing file
        CLUSTER_BITS, virtual_size,
        0,  # no encryption
        l1_size, l1_offset,
        table_offset, table_clusters,
        0, 0,  # no snapshots
        0, 0, 0,  # incompatible, compatible and autoclear features: none
        REFCOUNT_ORDER, HEADER_LENGTH,
    )
    compression_type = bytes(HEADER_LENGTH - len(fields))  # 0: zlib, then padding
    end_of_extensions = bytes(8)
    return fields + compression_type + end_of_extensions


def _write_at(out: BinaryIO, offset: int, data: bytes) -> None:
    out.seek(offset)
    out.write(data)


def _align(offset: int) -> int:
    return -(-offset // CLUSTER) * CLUSTER
