"""A whole disk in the formats clouds import: qcow2, raw, vmdk, vhdx, vhd.

One file per format, each converted from the raw disk by qemu-img, but for a
zlib-compressed qcow2, which hotsauce writes itself, faster (see qcow2_zlib):
- vmdk is stream-optimized, what Amazon's import and VMware's OVA take;
- vhd is fixed-size with the exact virtual size (`force_size`), which Azure
  wants as a whole number of MiB: the disk is allocated in whole MiB;
- qcow2 may be compressed with zlib or zstd.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hotsauce.errors import ConfigError
from hotsauce.host import proc
from hotsauce.output.imageset import SET_FILE_MODE
from hotsauce.output.qcow2_zlib import write_compressed_qcow2

DISK_BASENAME = "disk"


class DiskFormat(StrEnum):
    QCOW2 = "qcow2"
    RAW = "raw"
    VMDK = "vmdk"
    VHDX = "vhdx"
    VHD = "vhd"


class Qcow2Compression(StrEnum):
    NONE = "none"
    ZLIB = "zlib"
    ZSTD = "zstd"


# qemu-img's driver name and creation options per format, and the subformat `qemu-img info` then reports.
_QEMU_IMG: dict[DiskFormat, tuple[str, list[str], str | None]] = {
    DiskFormat.QCOW2: ("qcow2", [], None),
    DiskFormat.RAW: ("raw", [], None),
    DiskFormat.VMDK: ("vmdk", ["-o", "subformat=streamOptimized"], "streamOptimized"),
    DiskFormat.VHDX: ("vhdx", ["-o", "subformat=dynamic"], "dynamic"),
    DiskFormat.VHD: ("vpc", ["-o", "subformat=fixed,force_size=on"], "fixed"),
}


@dataclass(frozen=True)
class DiskFile:
    """One file of a whole-disk set, as the manifest lists it."""

    name: str
    format: str  # qcow2 | raw | vmdk | vhdx | vhd: what Glance's disk_format and the user call it
    qemu_format: str  # the driver qemu-img names it by (vpc for vhd)
    subformat: str | None
    virtual_size: int  # bytes the guest sees
    compression: str | None = None  # qcow2 only


def parse_formats(text: str, where: str) -> tuple[DiskFormat, ...]:
    """`qcow2,vmdk` -> the formats in order, each once; anything unknown is bad input."""
    names = [name.strip() for name in text.split(",")]
    if not text.strip() or any(not name for name in names):
        raise ConfigError(f"{where}: expected one or more of {_choices(DiskFormat)} separated by commas, "
                          f"got {text!r}")
    formats: list[DiskFormat] = []
    for name in names:
        try:
            disk_format = DiskFormat(name)
        except ValueError:
            raise ConfigError(f"{where}: unknown format {name!r}; choose from {_choices(DiskFormat)}") from None
        if disk_format not in formats:
            formats.append(disk_format)
    return tuple(formats)


def parse_compression(text: str, where: str) -> Qcow2Compression:
    try:
        return Qcow2Compression(text)
    except ValueError:
        raise ConfigError(f"{where}: unknown compression {text!r}; choose from "
                          f"{_choices(Qcow2Compression)}") from None


def _choices(kind: type[StrEnum]) -> str:
    return ", ".join(member.value for member in kind)


def disk_file_name(disk_format: DiskFormat) -> str:
    return f"{DISK_BASENAME}.{disk_format.value}"


def convert_disk(raw_disk: Path, folder: Path, formats: Sequence[DiskFormat],
                 compression: Qcow2Compression = Qcow2Compression.NONE, *, in_order: bool = False
                 ) -> tuple[DiskFile, ...]:
    """One file per format in `folder`, converted from the raw disk; zeroes stay holes. `in_order`:
    written in order, so the same disk gives the same file (reproducible builds), a little slower."""
    return tuple(_convert_one(raw_disk, folder / disk_file_name(disk_format), disk_format, compression, in_order)
                 for disk_format in formats)


def _convert_one(raw_disk: Path, target: Path, disk_format: DiskFormat,
                 compression: Qcow2Compression, in_order: bool) -> DiskFile:
    driver, options, subformat = _QEMU_IMG[disk_format]
    compressed = disk_format is DiskFormat.QCOW2 and compression is not Qcow2Compression.NONE
    if compressed and compression is Qcow2Compression.ZLIB:
        write_compressed_qcow2(raw_disk, target)  # always in order: the same disk, the same file
    else:
        _qemu_img_convert(raw_disk, target, disk_format, [*options, *_compression_options(compressed, compression)],
                          in_order)
    os.chmod(target, SET_FILE_MODE)
    info = image_info(target, driver)
    return DiskFile(name=target.name, format=disk_format.value, qemu_format=driver, subformat=subformat,
                    virtual_size=int(info["virtual-size"]), compression=compression.value if compressed else None)


def _compression_options(compressed: bool, compression: Qcow2Compression) -> list[str]:
    return ["-c", "-o", f"compression_type={compression.value}"] if compressed else []


def _qemu_img_convert(raw_disk: Path, target: Path, disk_format: DiskFormat, options: list[str],
                      in_order: bool) -> None:
    # Out-of-order writes let qemu-img's coroutines compress and write side by side (a 420 MB root:
    # 14.2 s against 17.7 s with zlib on two busy cores); they also place a qcow2's clusters differently
    # each time, so a reproducible build writes in order. A stream-optimized VMDK must be in order.
    out_of_order = [] if disk_format is DiskFormat.VMDK or in_order else ["-W"]
    proc.run(["qemu-img", "convert", "-m", str(os.cpu_count() or 1), "-f", "raw", "-O",
              _QEMU_IMG[disk_format][0], *options, *out_of_order, raw_disk, target])


def image_info(path: Path, qemu_format: str) -> dict[str, Any]:
    """What `qemu-img info` says of the file read as `qemu_format` (a fixed VHD has no header to probe:
    its footer is at the end)."""
    data: dict[str, Any] = json.loads(proc.output_of(["qemu-img", "info", "--output=json", "-f", qemu_format,
                                                      path]))
    return data
