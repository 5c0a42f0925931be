"""hotsauce's own zlib-compressed qcow2 writer, judged by qemu-img: `check` finds no error, `compare`
finds the guest's bytes identical to the raw disk's, `info` names zlib compression."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hotsauce.errors import Cancelled
from hotsauce.host import cancel
from hotsauce.output.qcow2_zlib import CLUSTER, write_compressed_qcow2

MIB = 1 << 20
TEXT = b"hotsauce builds disk images; " * (CLUSTER // 29 + 1)


def qemu_img_json(*args: str | Path) -> dict[str, Any]:
    done = subprocess.run(["qemu-img", *args, "--output=json"], capture_output=True, text=True)
    assert done.stdout, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def assert_qemu_reads_it_as(raw: Path, image: Path) -> dict[str, Any]:
    check = qemu_img_json("check", "-f", "qcow2", image)
    assert check["check-errors"] == 0 and "leaks" not in check and "corruptions" not in check, check
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, image],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    info = qemu_img_json("info", "-f", "qcow2", image)
    assert info["virtual-size"] == raw.stat().st_size
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert info["format-specific"]["data"]["compression-type"] == "zlib"
    return check


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as disk:
        disk.seek(offset)
        disk.write(data)


@pytest.fixture
def mixed_disk(tmp_path: Path) -> Path:
    """Holes, compressible text, incompressible noise, written zeroes, and a tail short of a cluster."""
    raw = tmp_path / "mixed.raw"
    size = 5 * MIB + 1536
    raw.write_bytes(b"")
    os.truncate(raw, size)
    write_at(raw, MIB, TEXT[:CLUSTER] * 3)
    write_at(raw, MIB + 3 * CLUSTER, os.urandom(CLUSTER))
    write_at(raw, 2 * MIB, bytes(2 * CLUSTER))  # allocated, but zero: left out
    write_at(raw, 2 * MIB + 2 * CLUSTER + 100, b"not aligned to anything")
    write_at(raw, size - 1000, TEXT[:1000])
    return raw


def test_a_mixed_disk_reads_back_identical_with_every_refcount_right(mixed_disk: Path, tmp_path: Path) -> None:
    image = tmp_path / "mixed.qcow2"
    write_compressed_qcow2(mixed_disk, image, workers=2)
    check = assert_qemu_reads_it_as(mixed_disk, image)
    # Three text clusters, the noise, the unaligned words and the tail: the written zeroes are not kept.
    assert check["allocated-clusters"] == 6
    assert check["compressed-clusters"] == 5


def test_a_cluster_that_does_not_shrink_is_stored_as_it_is_on_a_cluster_boundary(
        mixed_disk: Path, tmp_path: Path) -> None:
    image = tmp_path / "mixed.qcow2"
    write_compressed_qcow2(mixed_disk, image)
    with open(mixed_disk, "rb") as disk:
        noise = os.pread(disk.fileno(), CLUSTER, MIB + 3 * CLUSTER)
    where = image.read_bytes().find(noise)
    assert where > 0 and where % CLUSTER == 0


def test_the_same_disk_gives_the_same_file_whatever_the_workers(mixed_disk: Path, tmp_path: Path) -> None:
    one, many = tmp_path / "one.qcow2", tmp_path / "many.qcow2"
    write_compressed_qcow2(mixed_disk, one, workers=1)
    write_compressed_qcow2(mixed_disk, many, workers=4)
    assert one.read_bytes() == many.read_bytes()


def test_a_disk_larger_than_one_l2_table_maps_both_ends(tmp_path: Path) -> None:
    raw = tmp_path / "large.raw"
    size = 1536 * MIB  # three L2 tables' worth: data in the first and the last
    raw.write_bytes(b"")
    os.truncate(raw, size)
    write_at(raw, 0, TEXT[:CLUSTER])
    write_at(raw, size - CLUSTER, os.urandom(CLUSTER // 2) + TEXT[:CLUSTER // 2])
    image = tmp_path / "large.qcow2"
    write_compressed_qcow2(raw, image)
    check = assert_qemu_reads_it_as(raw, image)
    assert check["allocated-clusters"] == 2


def test_a_disk_of_holes_only_is_an_empty_image(tmp_path: Path) -> None:
    raw = tmp_path / "empty.raw"
    raw.write_bytes(b"")
    os.truncate(raw, 64 * MIB)
    image = tmp_path / "empty.qcow2"
    write_compressed_qcow2(raw, image)
    check = assert_qemu_reads_it_as(raw, image)
    assert check.get("allocated-clusters", 0) == 0  # qemu-img leaves the count out when it is none


def test_a_build_asked_to_stop_stops_the_writer(mixed_disk: Path, tmp_path: Path) -> None:
    with cancel.cancellable(lambda: True), pytest.raises(Cancelled):
        write_compressed_qcow2(mixed_disk, tmp_path / "cancelled.qcow2")
